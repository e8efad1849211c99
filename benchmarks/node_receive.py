#!/usr/bin/env python
"""Receive speed of the node against DCMTK storescp, TCP_NODELAY on both sides.

    .venv/bin/python benchmarks/node_receive.py [--senders 4] [--small 50] [--videos 4]
        [--video-mib 16] [--repeat 3] [--workers 1,2] [--json PATH] [--count-flushes]

Two corpora, each sent by --senders storescu processes at once (one association each):
many small instances (--small per sender, 64x64 16-bit CT, about 8 KiB each) and video
instances (--videos in all: ultrasound cine loops, multi-frame RGB, --video-mib MiB each,
the pixels random: neither receiver decodes them). Receivers, interleaved --repeat times, median kept:

1. reference: DCMTK `storescp --fork` (a process per association, no fsync), run with
   TCP_NODELAY=1 (DCMTK leaves Nagle on unless told; with it on, each instance waits for
   a delayed ACK, ~40-90 ms);
2. the node (`dicom-deid serve`, a subprocess): every instance on disk before it is
   acknowledged, power cut included (dicom_deid/node/commit.py: a small instance's bytes
   go into the journal's WAL with its row, one fsync per group of concurrent instances; a
   large one's file and folder are fsync'd, then its row); its sockets have TCP_NODELAY.
   Processing is held back (stable_seconds 600) so that only receiving is measured.

--workers: the node's listen.workers (receiving processes, node/recv_pool.py); several
values run one node per value in each round, interleaved, reported under "by_workers"
(the top-level node figures are the first value's).

storescu runs with TCP_NODELAY=1 for both. Reported: seconds from the first storescu start
until the last exits, instances/s, MiB/s, and the ratio node/storescp (goal >= 0.8).
--count-flushes adds the node's flush system calls (fsync, fdatasync, syncfs) per small
instance, counted with strace on one more run (not timed).
"""

from __future__ import annotations

import argparse
import json
import os
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

from tests.node.peers import Node, free_port, wait_for  # noqa: E402

NODELAY = {**os.environ, "TCP_NODELAY": "1"}


def _base(study_uid: str, series_uid: str, sop_class: str, syntax: str, n: int):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.StudyDate, ds.StudyTime = "20240105", "101500"
    ds.PatientName, ds.PatientID = "Bench^Patient", "BENCH00001"
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, n + 1
    ds.SamplesPerPixel = 1
    return ds


def make_small(root: Path, senders: int, per_sender: int) -> list[list[Path]]:
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    pixels = np.random.default_rng(0).integers(0, 4096, (64, 64), dtype=np.uint16).tobytes()
    groups = []
    for s in range(senders):
        study, series = generate_uid(), generate_uid()
        folder = root / f"small{s}"
        folder.mkdir(parents=True)
        files = []
        for n in range(per_sender):
            ds = _base(study, series, CTImageStorage, ExplicitVRLittleEndian, n)
            ds.Modality, ds.PhotometricInterpretation = "CT", "MONOCHROME2"
            ds.Rows = ds.Columns = 64
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
            ds.PixelData = pixels
            path = folder / f"{n:04d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            files.append(path)
        groups.append(files)
    return groups


def make_videos(root: Path, senders: int, videos: int, mib: int) -> list[list[Path]]:
    """Ultrasound cine loops (multi-frame RGB, uncompressed): large instances as a scanner
    sends them. Random pixels; neither receiver decodes them."""
    from pydicom.uid import ExplicitVRLittleEndian, UltrasoundMultiFrameImageStorage, generate_uid

    rng = np.random.default_rng(1)
    frame = 480 * 640 * 3
    frames = max(1, mib * 2**20 // frame)
    groups: list[list[Path]] = [[] for _ in range(senders)]
    folder = root / "video"
    folder.mkdir(parents=True)
    for v in range(videos):
        ds = _base(generate_uid(), generate_uid(), UltrasoundMultiFrameImageStorage,
                   ExplicitVRLittleEndian, v)
        ds.Modality, ds.PhotometricInterpretation = "US", "RGB"
        ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
        ds.Rows, ds.Columns, ds.NumberOfFrames = 480, 640, frames
        ds.FrameTime = 33.3
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = rng.bytes(frames * frame)
        path = folder / f"video{v}.dcm"
        ds.save_as(path, enforce_file_format=True)
        groups[v % senders].append(path)
    return [g for g in groups if g]


def send_all(groups: list[list[Path]], port: int, called: str, video: bool) -> float:
    """Each group by its own storescu, all started at once; seconds until the last exits."""
    start = time.perf_counter()
    procs = [subprocess.Popen(["storescu", "-aet", "PACS", "-aec", called,
                               "127.0.0.1", str(port), *map(str, files)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=NODELAY) for files in groups]
    failed = []
    for proc in procs:
        out = proc.communicate(timeout=600)[0]
        if proc.returncode != 0 or "Store Failed" in out or "E: " in out:
            failed.append(out[-800:])
    elapsed = time.perf_counter() - start
    if failed:
        raise SystemExit(f"storescu failed:\n{failed[0]}")
    return elapsed


def run_storescp(groups: list[list[Path]], root: Path, video: bool) -> float:
    out = root / "storescp-out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    port = free_port()
    proc = subprocess.Popen(["storescp", "--fork", "-aet", "REF", "-od", str(out),
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=NODELAY)
    try:
        wait_for(lambda: subprocess.run(["echoscu", "-aec", "REF", "127.0.0.1", str(port)],
                                        capture_output=True).returncode == 0, 30,
                 what="storescp")
        elapsed = send_all(groups, port, "REF", video)
        total = sum(len(g) for g in groups)
        wait_for(lambda: len(list(out.iterdir())) >= total, 30, what="storescp's files")
        return elapsed
    finally:
        proc.terminate()
        proc.wait(10)


def run_node(groups: list[list[Path]], root: Path, index: int, video: bool,
             workers: int | None = None) -> float:
    listen: dict = {"max_associations": 16, "min_free_disk": "256M"}
    if workers is not None:
        listen["workers"] = workers
    node = Node(root / f"node{index}", {
        "listen": listen,
        "processing": {"stable_seconds": 600, "workers": 1},
        "log": {"level": "INFO"},
    }).start()
    try:
        wait_for(lambda: "worker processes ready" in node.log(), 120, what="node workers")
        elapsed = send_all(groups, node.port, "DICOM-DEID", video)
        total = sum(len(g) for g in groups)
        stored = node.journal("SELECT COUNT(*) FROM instances")[0][0]
        if stored != total:
            raise SystemExit(f"the node journalled {stored} of {total} instances")
        return elapsed
    finally:
        node.stop()
        shutil.rmtree(root / f"node{index}", ignore_errors=True)


_FLUSH_CALLS = ("fsync", "fdatasync", "syncfs", "sync_file_range")


def count_flushes(groups: list[list[Path]], root: Path) -> dict:
    """System calls that flush to disk, made by the node (strace -f) while it receives the
    corpus and for 3 s after (its background flushes included)."""
    import re

    node = Node(root / "node-strace", {
        "listen": {"max_associations": 16, "min_free_disk": "256M"},
        "processing": {"stable_seconds": 600, "workers": 1},
        "log": {"level": "INFO"},
    }).start()
    trace = root / "node.strace"
    try:
        wait_for(lambda: "worker processes ready" in node.log(), 120, what="node workers")
        assert node.proc is not None
        tracer = subprocess.Popen(["strace", "-f", "-p", str(node.proc.pid), "-o", str(trace),
                                   "-e", "trace=" + ",".join(_FLUSH_CALLS)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # attached to every thread
        send_all(groups, node.port, "DICOM-DEID", False)
        time.sleep(3.0)
        tracer.terminate()
        tracer.wait(10)
    finally:
        node.stop()
        shutil.rmtree(root / "node-strace", ignore_errors=True)
    pattern = re.compile(r"\b(" + "|".join(_FLUSH_CALLS) + r")\(")
    calls: dict[str, int] = {}
    for line in trace.read_text().splitlines():
        m = pattern.search(line)
        if m:
            calls[m.group(1)] = calls.get(m.group(1), 0) + 1
    count = sum(len(g) for g in groups)
    return {"instances": count, "calls": calls,
            "per_instance": round(sum(calls.values()) / count, 2)}


def measure(name: str, groups: list[list[Path]], root: Path, repeat: int, video: bool,
            workers: list[int | None]) -> dict:
    ref: list[float] = []
    nodes: dict[int | None, list[float]] = {w: [] for w in workers}
    for i in range(repeat):  # interleaved: drifting load on a shared machine hits both
        ref.append(run_storescp(groups, root, video))
        order = workers if i % 2 == 0 else workers[::-1]
        for w in order:
            nodes[w].append(run_node(groups, root, i, video, w))
        print(f"{name} run {i + 1}: storescp {ref[-1]:.2f} s, node "
              + ", ".join(f"{nodes[w][-1]:.2f} s" + (f" ({w} workers)" if w else "")
                          for w in workers) + f", load {os.getloadavg()[0]:.1f}",
              file=sys.stderr)
    count = sum(len(g) for g in groups)
    mib = sum(p.stat().st_size for g in groups for p in g) / 2**20
    t_ref = statistics.median(ref)
    node = nodes[workers[0]]
    t_node = statistics.median(node)
    result = {"instances": count, "MiB": round(mib, 1), "senders": len(groups),
            "storescp_s": round(t_ref, 3), "node_s": round(t_node, 3),
            "storescp_instances_per_s": round(count / t_ref, 1),
            "node_instances_per_s": round(count / t_node, 1),
            "storescp_MiB_per_s": round(mib / t_ref, 1), "node_MiB_per_s": round(mib / t_node, 1),
            "ratio_node_vs_storescp": round(t_ref / t_node, 3),
            "runs": {"storescp": [round(t, 3) for t in ref], "node": [round(t, 3) for t in node]}}
    if workers != [None]:
        result["by_workers"] = {
            str(w): {"node_s": round(statistics.median(nodes[w]), 3),
                     "ratio_node_vs_storescp": round(t_ref / statistics.median(nodes[w]), 3),
                     "runs": [round(t, 3) for t in nodes[w]]} for w in workers}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--small", type=int, default=50, help="small instances per sender")
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--video-mib", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", default="",
                        help="listen.workers values, comma-separated (default: the node's)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--count-flushes", action="store_true",
                        help="also count the node's fsync/fdatasync/syncfs calls on the small "
                             "corpus (one more node run, under strace)")
    args = parser.parse_args()
    if args.count_flushes and not shutil.which("strace"):
        raise SystemExit("--count-flushes needs strace")
    for tool in ("storescu", "storescp", "echoscu"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} (DCMTK) is not installed")
    workers: list[int | None] = [int(w) for w in args.workers.split(",") if w] or [None]
    with tempfile.TemporaryDirectory(prefix="node-receive-") as tmp:
        root = Path(tmp)
        result: dict = {"tcp_nodelay": "both sides", "cpus": os.cpu_count(),
                        "load_at_start": round(os.getloadavg()[0], 2)}
        if args.small:
            small = make_small(root / "corpus", args.senders, args.small)
            result["small"] = measure("small", small, root, args.repeat, False, workers)
            if args.count_flushes:
                result["small_flushes"] = count_flushes(small, root)
        if args.videos:
            videos = make_videos(root / "corpus", args.senders, args.videos, args.video_mib)
            result["video"] = measure("video", videos, root, args.repeat, True, workers)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
