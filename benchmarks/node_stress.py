#!/usr/bin/env python
"""Kill the node at random moments while studies arrive; the archive must end exact.

Six studies of 12 small instances are sent with DCMTK's storescu (one association per study,
all at once) to a node that forwards to a real Orthanc. Each round the node is started, killed
with SIGKILL after a random delay (0.2 to 4 s), and what storescu saw acknowledged is noted;
in round 3 the archive is also taken down, and it comes back in round 4. Finally the node is
started once more, whatever storescu never got acknowledged is sent again (as a PACS would),
and the run waits until every instance is forwarded.

Pass: the archive holds exactly the de-identified SOP Instance UIDs of all 72 inputs (keyed
from the node's site key), each once, in six studies.

    .venv/bin/python benchmarks/node_stress.py [--seed N] [--rounds 6] [--work DIR]

Uses the test helpers in tests/node (Orthanc on loopback ports, the node as a subprocess);
needs dcmtk and orthanc installed (scripts/setup.sh). Exit status 0 when exact, 1 otherwise.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dicom_deid.header.keys import load_key  # noqa: E402
from tests.node.factory import write_study  # noqa: E402
from tests.node.peers import Node, Orthanc, wait_for  # noqa: E402
from tests.node.test_node_network import _acknowledged, _sop_uids  # noqa: E402


def storescu(port: int, files: list[Path]) -> subprocess.Popen:
    return subprocess.Popen(
        ["storescu", "-v", "-aet", "PACS", "-aec", "DICOM-DEID", "127.0.0.1", str(port),
         *map(str, sorted(files))],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--work", type=Path, default=None, help="kept after the run if given")
    args = parser.parse_args()
    root = args.work or Path(tempfile.mkdtemp(prefix="node_stress_"))
    shutil.rmtree(root, ignore_errors=True)
    rng = random.Random(args.seed)
    studies = [write_study(root / f"s{i}", 12, size=64) for i in range(6)]
    archive = Orthanc(root / "orthanc").start()
    node = Node(root / "node", {
        "default_rule": {"faces": "none"},
        "processing": {"stable_seconds": 0.5, "workers": 2},
        "destinations": [{"name": "archive", "ae_title": "ARCHIVE", "host": "127.0.0.1",
                          "port": archive.dicom_port}],
        "log": {"level": "INFO"}})
    pending = {f for s in studies for f in s.files}
    try:
        for round_ in range(args.rounds):
            node.start()
            procs = [storescu(node.port, files)
                     for files in ([f for f in s.files if f in pending] for s in studies) if files]
            delay = rng.uniform(0.2, 4.0)
            time.sleep(delay)
            if round_ == 3:
                archive.stop()
            node.kill9()
            for p in procs:
                pending -= set(_acknowledged(p.communicate(timeout=60)[0]))
            if round_ == 4:
                archive.start()
            print(f"round {round_}: killed after {delay:.1f} s, {len(pending)} not yet "
                  f"acknowledged, journal states {node.states()}", flush=True)
        if archive.proc is None:
            archive.start()
        node.start()
        if pending:
            storescu(node.port, sorted(pending)).communicate(timeout=120)
        key = load_key(node.state_dir / "site.key")
        expected = {key.uid(u) for s in studies for u in s.sop_uids}
        wait_for(lambda: set(node.states()) == {"forwarded"}, 300, what="all forwarded")
        got = _sop_uids(archive)
        exact = set(got) == expected and len(got) == len(expected)
        studies_held = len({t["StudyInstanceUID"] for t in archive.all_tags()})
        print(f"archive holds {len(got)} instances in {studies_held} studies; expected "
              f"{len(expected)} in {len(studies)}: {'EXACT' if exact else 'NOT EXACT'}")
        return 0 if exact and studies_held == len(studies) else 1
    finally:
        node.stop()
        archive.stop()
        if args.work is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
