#!/usr/bin/env python
"""Node throughput: many studies sent at once with storescu, against DCMTK in the same run.

    .venv/bin/python benchmarks/node_throughput.py [--studies 8] [--instances 20]
        [--size 256] [--workers 2] [--stable 2] [--associations 2] [--repeat 3] [--json PATH]

The corpus is --studies studies of --instances CT-like images (--size x --size, 16 bit,
invented PHI; CT is not an image that may show a face, so the header pipeline runs; faces
are out of scope here, benchmarks/face_renderers_speed.py measures them). Every study is
sent by its own storescu process, all at once, to each receiver in turn:

1. reference: DCMTK storescp --fork (a process per association, files written as received,
   no fsync), the fastest plain DICOM receiver at hand;
2. the node (`dicom-deid serve` as a subprocess, its own config in a temporary folder):
   every instance fsync'd and journalled before it is acknowledged;
3. direct: storescu straight into Orthanc (the archive), the reference for end-to-end time.

Reported: receive throughput (instances/s and MiB/s, from the first storescu start until the
last storescu exits) for the node and storescp and their ratio (goal: close to 1); the time
until Orthanc holds every de-identified instance when the node forwards to it (which
includes processing.stable_seconds, reported separately), against the time storescu takes
to put the original study straight into the same Orthanc. Each receiver is measured --repeat
times and the median is kept. Nothing is timed in the tests; only here.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# The peers the node's network tests use: Orthanc and the node as real subprocesses.
from tests.node.peers import Node, Orthanc, free_port, wait_for  # noqa: E402


def make_corpus(root: Path, studies: int, instances: int, size: int) -> list[list[Path]]:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 4096, (size, size), dtype=np.uint16).tobytes()
    corpus = []
    for s in range(studies):
        study_uid, series_uid = generate_uid(), generate_uid()
        folder = root / f"study{s:03d}"
        folder.mkdir(parents=True)
        files = []
        for n in range(instances):
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = CTImageStorage
            meta.MediaStorageSOPInstanceUID = sop = generate_uid()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = Dataset()
            ds.file_meta = meta
            ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
            ds.Modality, ds.StudyDate, ds.StudyTime = "CT", "20240105", "101500"
            ds.PatientName, ds.PatientID = f"Bench^Patient{s:03d}", f"BENCH{s:05d}"
            ds.PatientBirthDate, ds.AccessionNumber = "19500101", f"ACC{s:06d}"
            ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, n + 1
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.Rows = ds.Columns = size
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
            ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
            ds.PixelData = pixels
            path = folder / f"{n:04d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            files.append(path)
        corpus.append(files)
    return corpus


def send_all(corpus: list[list[Path]], port: int, called: str, calling: str = "PACS") -> float:
    """Every study by its own storescu, all started at once; seconds until the last exits."""
    start = time.perf_counter()
    procs = [subprocess.Popen(["storescu", "-aet", calling, "-aec", called, "127.0.0.1",
                               str(port), *map(str, files)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for files in corpus]
    failed = []
    for proc in procs:
        out = proc.communicate(timeout=600)[0]
        if proc.returncode != 0 or "Store Failed" in out or "E: " in out:
            failed.append(out[-500:])
    elapsed = time.perf_counter() - start
    if failed:
        raise SystemExit(f"storescu failed:\n{failed[0]}")
    return elapsed


def run_storescp(corpus: list[list[Path]], root: Path) -> float:
    out_dir = root / "storescp-out"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    port = free_port()
    proc = subprocess.Popen(["storescp", "--fork", "-aet", "REF", "-od", str(out_dir),
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: subprocess.run(["echoscu", "-aec", "REF", "127.0.0.1", str(port)],
                                        capture_output=True).returncode == 0, 30,
                 what="storescp")
        elapsed = send_all(corpus, port, "REF")
        total = sum(len(f) for f in corpus)
        stored = wait_for(lambda: len(list(out_dir.iterdir())) >= total and total, 30,
                          what="storescp files")
        assert stored
        return elapsed
    finally:
        proc.terminate()
        proc.wait(10)


def orthanc_count(archive: Orthanc) -> int:
    return int(archive.get("/statistics")["CountInstances"])


def clear(archive: Orthanc) -> None:
    archive.clear()
    wait_for(lambda: orthanc_count(archive) == 0, 60, what="Orthanc emptied")


def run_direct(corpus: list[list[Path]], archive: Orthanc) -> float:
    clear(archive)
    total = sum(len(f) for f in corpus)
    start = time.perf_counter()
    send_all(corpus, archive.dicom_port, archive.aet)
    wait_for(lambda: orthanc_count(archive) >= total, 600, interval=0.05, what="direct store")
    return time.perf_counter() - start


def run_node(corpus: list[list[Path]], root: Path, archive: Orthanc, workers: int,
             stable: float, associations: int, index: int) -> tuple[float, float]:
    """(receive seconds, seconds from first send until Orthanc holds everything)."""
    clear(archive)
    total = sum(len(f) for f in corpus)
    node = Node(root / f"node{index}", {
        "listen": {"max_associations": max(10, len(corpus) + 2)},
        "processing": {"stable_seconds": stable, "workers": workers},
        "forward": {"associations": associations},
        "destinations": [{"name": "archive", "ae_title": archive.aet, "host": "127.0.0.1",
                          "port": archive.dicom_port}],
        "log": {"level": "INFO"},
    }).start()
    try:
        # A node waits for PACS long after it started: let its workers finish starting.
        wait_for(lambda: "worker processes ready" in node.log(), 120, what="node workers")
        start = time.perf_counter()
        received = send_all(corpus, node.port, "DICOM-DEID")
        wait_for(lambda: orthanc_count(archive) >= total, 1200, interval=0.1,
                 what="the archive to hold every instance")
        archived = time.perf_counter() - start
        if node.states().get("quarantined"):
            raise SystemExit(f"the node quarantined instances: {node.states()}")
        return received, archived
    finally:
        node.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=8)
    parser.add_argument("--instances", type=int, default=20, help="per study")
    parser.add_argument("--size", type=int, default=256, help="rows = columns (16 bit)")
    parser.add_argument("--workers", type=int, default=2, help="node processing.workers")
    parser.add_argument("--stable", type=float, default=2.0,
                        help="node processing.stable_seconds")
    parser.add_argument("--associations", type=int, default=2,
                        help="node forward.associations (per destination)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    for tool in ("storescu", "storescp", "echoscu"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} (DCMTK) is not installed")

    with tempfile.TemporaryDirectory(prefix="node-bench-") as tmp:
        root = Path(tmp)
        corpus = make_corpus(root / "corpus", args.studies, args.instances, args.size)
        total = sum(len(f) for f in corpus)
        mib = sum(p.stat().st_size for f in corpus for p in f) / 2**20
        archive = Orthanc(root / "orthanc").start()
        ref, direct, received, archived = [], [], [], []
        try:
            for i in range(args.repeat):  # interleaved, so drifting load hits all alike
                ref.append(run_storescp(corpus, root))
                r, a = run_node(corpus, root, archive, args.workers, args.stable,
                                args.associations, i)
                received.append(r)
                archived.append(a)
                direct.append(run_direct(corpus, archive))
                print(f"run {i + 1}: storescp {ref[-1]:.2f} s, node receive {r:.2f} s, "
                      f"node to archive {a:.2f} s, direct to archive {direct[-1]:.2f} s",
                      file=sys.stderr)
        finally:
            archive.stop()

    t_ref, t_node = statistics.median(ref), statistics.median(received)
    t_arch, t_direct = statistics.median(archived), statistics.median(direct)
    result = {
        "corpus": {"studies": args.studies, "instances": total, "MiB": round(mib, 1),
                   "size": args.size, "concurrent_associations": args.studies},
        "node": {"workers": args.workers, "stable_seconds": args.stable,
                 "forward_associations": args.associations},
        "repeat": args.repeat,
        "storescp_receive_s": round(t_ref, 3),
        "node_receive_s": round(t_node, 3),
        "storescp_instances_per_s": round(total / t_ref, 1),
        "node_instances_per_s": round(total / t_node, 1),
        "storescp_MiB_per_s": round(mib / t_ref, 1),
        "node_MiB_per_s": round(mib / t_node, 1),
        "receive_ratio_node_vs_storescp": round(t_ref / t_node, 3),
        "node_until_archive_holds_all_s": round(t_arch, 2),
        "of_which_stable_seconds": args.stable,
        "direct_storescu_to_archive_s": round(t_direct, 2),
        "archive_time_ratio_node_vs_direct": round(t_arch / t_direct, 2),
        "runs": {"storescp": ref, "node_receive": received, "node_archive": archived,
                 "direct": direct},
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
