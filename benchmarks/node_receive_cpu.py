#!/usr/bin/env python
"""The node's CPU per received small instance, lean C-STORE path vs pynetdicom's path.

    .venv/bin/python benchmarks/node_receive_cpu.py [--senders 4] [--small 50] [--rounds 2]
        [--associations 0]

A Receiver runs in this process (listen.fast_store on, then off, interleaved --rounds
times); --senders DCMTK storescu processes (TCP_NODELAY) send --small instances each of
node_receive.py's small corpus. Printed per run: this process's user+system CPU per
instance (association set-up included), wall seconds and which path answered. CPU, unlike
wall time, is little moved by the load of other programs on the host.

--associations N: then also the CPU of one association on the lean path, storescu sending
one instance N times (one association each, storescu's default 128 proposed contexts):
set-up, negotiation, one C-STORE and release. The first association is not counted (it
pays one-time imports and memo fills).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.node_receive import make_small  # noqa: E402
from tests.node.test_fast_store import Here  # noqa: E402


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--small", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--associations", type=int, default=0,
                        help="also measure CPU per association over this many")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="node-cpu-") as tmp:
        root = Path(tmp)
        groups = make_small(root / "corpus", args.senders, args.small)
        total = sum(len(g) for g in groups)
        for r in range(args.rounds):
            for lean in (True, False):
                here = Here(root / f"node-{r}-{lean}", lean)
                try:
                    time.sleep(0.5)
                    c0, t0 = cpu_seconds(), time.perf_counter()
                    procs = [subprocess.Popen(
                        ["storescu", "-aet", "PACS", "-aec", "DICOM-DEID", "127.0.0.1",
                         str(here.port), *map(str, g)], env={**os.environ, "TCP_NODELAY": "1"},
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for g in groups]
                    for proc in procs:
                        proc.wait(600)
                    c1, t1 = cpu_seconds(), time.perf_counter()
                    stored = len(here.rows())
                    if stored != total:
                        raise SystemExit(f"stored {stored} of {total}")
                    print(f"round {r + 1} {'lean' if lean else 'pynetdicom'}: "
                          f"CPU {(c1 - c0) / total * 1000:.2f} ms per instance, "
                          f"wall {t1 - t0:.2f} s, answered by {here.receiver.served}",
                          flush=True)
                finally:
                    here.stop()
                    shutil.rmtree(root / f"node-{r}-{lean}", ignore_errors=True)
        if args.associations:
            per_association(root, args.associations)
    return 0


def per_association(root: Path, count: int) -> None:
    instances = make_small(root / "per-association", 1, count + 1)[0]
    here = Here(root / "node-associations", True)
    env = {**os.environ, "TCP_NODELAY": "1"}
    command = ["storescu", "-aet", "PACS", "-aec", "DICOM-DEID", "127.0.0.1", str(here.port)]
    try:
        subprocess.run([*command, str(instances[0])], env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        c0 = cpu_seconds()
        for instance in instances[1:]:
            subprocess.run([*command, str(instance)], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=True)
        c1 = cpu_seconds()
        if len(here.rows()) != count + 1:
            raise SystemExit("the associations did not store their instances")
        print(f"association (lean, 1 instance): CPU {(c1 - c0) / count * 1000:.2f} ms each, "
              f"over {count}, load {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        here.stop()
        shutil.rmtree(root / "node-associations", ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
