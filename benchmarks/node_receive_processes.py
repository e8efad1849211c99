#!/usr/bin/env python
"""Receiving CPU per process: node process and receive workers, trees and listen.workers alternating.

    .venv/bin/python benchmarks/node_receive_processes.py ROUNDS TREE:W [TREE:W ...]

W is listen.workers (0: the key is not written, for trees older than the setting). Each
round starts a node (`dicom-deid serve` from TREE) per TREE:W, in alternating order, and
sends node_receive.py's small corpus (4 storescu x 50, TCP_NODELAY). Printed per run: wall
seconds, CPU seconds of the node process and its receive workers together ("cpu"), of
the busiest one ("max_proc": the part one GIL serialises) and of the node process
("parent"), from /proc; then medians. CPU, unlike wall time, is little moved by the load
of other programs; "max_proc" bounds how fast one process can go on free cores.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import tests.node.peers as peers  # noqa: E402
from benchmarks.node_receive import make_small, send_all  # noqa: E402

_CLOCK = os.sysconf("SC_CLK_TCK")


def cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK  # utime + stime


def receive_workers(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            if b"recv_worker" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(int(child))
    return found


def run(root: Path, tree: Path, workers: int, groups: list[list[Path]]) -> dict:
    peers.REPO = tree  # Node runs `python -m dicom_deid.cli serve` with cwd=REPO
    listen: dict = {"max_associations": 16, "min_free_disk": "256M"}
    if workers:
        listen["workers"] = workers
    folder = root / f"node-{tree.name}-{workers}"
    node = peers.Node(folder, {"listen": listen, "log": {"level": "INFO"},
                               "processing": {"stable_seconds": 600, "workers": 1}}).start()
    try:
        peers.wait_for(lambda: "worker processes ready" in node.log(), 120)
        assert node.proc is not None
        pids = [node.proc.pid, *receive_workers(node.proc.pid)]
        before = {p: cpu(p) for p in pids}
        wall = send_all(groups, node.port, "DICOM-DEID", False)
        used = {p: cpu(p) - before[p] for p in pids}
        rows = node.journal("SELECT COUNT(*) FROM instances")[0][0]
    finally:
        node.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return {"wall": round(wall, 3), "cpu": round(sum(used.values()), 3),
            "max_proc": round(max(used.values()), 3), "parent": round(used[pids[0]], 3),
            "rows": rows, "load": round(os.getloadavg()[0], 1)}


def main() -> int:
    rounds = int(sys.argv[1])
    configs = [(Path(a.split(":")[0]).resolve(), int(a.split(":")[1])) for a in sys.argv[2:]]
    results: dict[str, list[dict]] = {f"{t.name}:{w}": [] for t, w in configs}
    with tempfile.TemporaryDirectory(prefix="node-processes-") as tmp:
        root = Path(tmp)
        groups = make_small(root / "corpus", 4, 50)
        for r in range(rounds):
            for tree, workers in configs if r % 2 == 0 else configs[::-1]:
                key = f"{tree.name}:{workers}"
                results[key].append(run(root, tree, workers, groups))
                print(key, results[key][-1], flush=True)
    summary = {k: {m: round(statistics.median(x[m] for x in v), 3)
                   for m in ("wall", "cpu", "max_proc", "parent")} for k, v in results.items()}
    print(json.dumps({"summary": summary, "runs": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
