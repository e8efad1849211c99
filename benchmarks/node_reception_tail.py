#!/usr/bin/env python
"""The durability tail of large instances: from the last byte written to the instance
being on disk, as the receiver does it before acknowledging.

    .venv/bin/python benchmarks/node_reception_tail.py [--trees A,B] [--rounds 5]
        [--files 4] [--mib 16] [--pace-ms 2]

--files threads at once each write one --mib MiB instance through the receiver's
`Reception` (128 KiB writes, a PDU's worth, --pace-ms apart: data arriving from the
network), then do what `Receiver._store` does before its acknowledgement for a large
instance: close the reception (waiting for a flush still running), fsync the file and its
folder. Reported per tree (each tree's `dicom_deid` imported in a subprocess of its own;
trees alternate round by round): the median over rounds of the slowest file's tail in ms,
and the arrival time. No network, no journal: only the disk part of a video's
acknowledgement. Files go to a temporary folder (TMPDIR: put it on the file system of the
node's state folder).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

_CHILD = r"""
import json, os, sys, threading, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from dicom_deid.node import receiver
from dicom_deid.node.receiver import Reception
if os.environ.get("WRITEBACK_EVERY_MIB"):  # a what-if for the step (tuning only)
    receiver.WRITEBACK_EVERY = int(float(os.environ["WRITEBACK_EVERY_MIB"]) * 2**20)
from dicom_deid.node.spool import fsync_dir, fsync_file
folder, files, mib, pace = Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
chunk = os.urandom(128 * 1024)
results = []
start = threading.Barrier(files)

def one(i):
    sub = folder / f"f{i}"
    sub.mkdir()
    start.wait()
    t0 = time.perf_counter()
    reception = Reception(sub, 0)
    for _ in range(mib * 8):
        reception.write(chunk)
        if pace:
            time.sleep(pace)
    t1 = time.perf_counter()
    reception.close()
    fsync_file(Path(reception.name))
    fsync_dir(sub)
    t2 = time.perf_counter()
    results.append((t1 - t0, t2 - t1))

threads = [threading.Thread(target=one, args=(i,)) for i in range(files)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({"arrival_s": max(r[0] for r in results), "tail_ms": max(r[1] for r in results) * 1000}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trees", default=str(REPO),
                        help="comma-separated repository roots to compare (default: this one)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--mib", type=int, default=16)
    parser.add_argument("--pace-ms", type=float, default=2.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    trees = [str(Path(t).resolve()) for t in args.trees.split(",")]
    runs: dict[str, list[dict]] = {t: [] for t in trees}
    for r in range(args.rounds):
        order = trees if r % 2 == 0 else trees[::-1]
        for tree in order:
            with tempfile.TemporaryDirectory(prefix="reception-tail-") as tmp:
                out = subprocess.run(
                    [sys.executable, "-c", _CHILD, tree, tmp, str(args.files), str(args.mib),
                     str(args.pace_ms / 1000)], capture_output=True, text=True, check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            result["load"] = round(os.getloadavg()[0], 1)
            runs[tree].append(result)
            print(f"round {r + 1} {tree}: tail {result['tail_ms']:.1f} ms, arrival "
                  f"{result['arrival_s']:.3f} s, load {result['load']}", file=sys.stderr)
    summary = {tree: {"tail_ms_median": round(statistics.median(x["tail_ms"] for x in rs), 1),
                      "arrival_s_median": round(statistics.median(x["arrival_s"] for x in rs), 3),
                      "runs": rs} for tree, rs in runs.items()}
    result_all = {"files": args.files, "mib": args.mib, "pace_ms": args.pace_ms,
                  "trees": summary}
    text = json.dumps(result_all, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
