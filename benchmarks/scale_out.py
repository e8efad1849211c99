#!/usr/bin/env python
"""Scale-out: N studies through 1 and then 2 Celery worker processes (processing.backend celery).

    .venv/bin/python benchmarks/scale_out.py [--studies 8] [--instances 30] [--size 64]
        [--kind header|video] [--workers 1,2] [--json PATH]

A real Redis (loopback, temporary folder), the node as a subprocess and `dicom-deid worker`
processes (one process each, as two hosts would run them), as in
tests/node/test_celery_backend.py. For each worker count: a fresh node and Redis, the
workers started and warmed (one small study per worker, so that imports are not timed),
then --studies studies sent and every job published while the workers take only their
warm-up queue. Throughput is studies per second from the moment the workers are told to
take the measured queue (Celery's add_consumer) to the last job's result recorded in the
node's journal (jobs.finished_at), so receiving and forwarding are left out (no
destination). The reference is the 1-worker run of the same invocation; the
ratio is throughput(2) / throughput(1), ideally 2 on two idle cores.

--kind header: CT-like images (--size square, 16 bit), header de-identification only
(`faces: none`: the cpu queue). --kind video: the shared test video
C_jpeg_baseline_multiframe_360x288.dcm sent --studies times with new UIDs, faces replaced by
the profile's default method (the gpu queue; on CPU here).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# The node throughput benchmark's synthetic CT studies (invented PHI, 12-bit pixels).
from benchmarks.node_throughput import make_corpus as header_corpus  # noqa: E402
from tests.node.celery_peers import Redis, Worker  # noqa: E402
from tests.node.peers import Node, storescu, wait_for  # noqa: E402


def video_corpus(root: Path, studies: int) -> list[list[Path]]:
    from pydicom import dcmread
    from pydicom.uid import generate_uid

    source = REPO.parent / "shared" / "data" / "dicom" / "video" / \
        "C_jpeg_baseline_multiframe_360x288.dcm"
    if not source.exists():
        sys.exit(f"scale_out.py: {source} is missing (../shared/data)")
    root.mkdir(parents=True)
    corpus = []
    for s in range(studies):
        ds = dcmread(source)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        path = root / f"video{s:03d}.dcm"
        ds.save_as(path)
        corpus.append([path])
    return corpus


def _journal(node: Node, sql: str) -> list[tuple]:
    conn = sqlite3.connect(node.state_dir / "journal.sqlite", timeout=30)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def run(root: Path, workers: int, corpus: list[list[Path]], warm: list[list[Path]],
        kind: str) -> dict:
    from dicom_deid.config import load_config
    from dicom_deid.node.celery_app import make_app, queue_name

    redis = Redis().start()
    faces = {"faces": "none"} if kind == "header" else {}
    capability = "cpu" if kind == "header" else "gpu"
    # Warm-up studies (calling AE PACS2) go to a queue of their own, the one the workers
    # start on; the measured studies wait on theirs until every job is published, and then
    # the workers are told to take it: the receive is not timed.
    node = Node(root / f"node{workers}", {
        "default_rule": {"profile": "basic", **faces}, "log": {"level": "INFO"},
        "rules": [{"name": "warm", "match": {"calling_aet": "PACS2"}, "profile": "basic",
                   "queue": "warm", **faces}],
        "processing": {"backend": "celery", "stable_seconds": 2, "job_timeout": 0,
                       "celery": {"broker_url": redis.url, "visibility_timeout": 3600}}})
    pool: list[Worker] = []
    app = None
    try:
        node.start()
        pool = [Worker(root, node.config_path, f"w{workers}-{i}", queues="warm").start()
                for i in range(workers)]
        storescu([f for files in warm[:workers] for f in files], node.port, calling="PACS2")
        wait_for(lambda: _journal(node, "SELECT COUNT(*) FROM jobs WHERE state = 'done'")
                 == [(workers,)], 900, interval=0.5, what="warm-up studies")
        first_job = _journal(node, "SELECT MAX(id) FROM jobs")[0][0] + 1
        storescu([f for files in corpus for f in files], node.port, timeout=900)
        wait_for(lambda: _journal(node, f"SELECT COUNT(*) FROM jobs WHERE id >= {first_job}")
                 == [(len(corpus),)], 300, interval=0.2, what="every job published")
        config = load_config(node.config_path)
        app = make_app(config)
        start = time.time()
        app.control.add_consumer(queue_name(config, capability),
                                 destination=[f"{w.name}@{platform.node()}" for w in pool],
                                 reply=True, timeout=10)
        wait_for(lambda: _journal(node, f"SELECT COUNT(*) FROM jobs WHERE state = 'done' AND "
                                        f"id >= {first_job}") == [(len(corpus),)],
                 3600, interval=0.2, what="every study processed")
        [(end, failed)] = _journal(node, (
            "SELECT MAX(finished_at), "
            "(SELECT COUNT(*) FROM instances WHERE state = 'quarantined') "
            f"FROM jobs WHERE id >= {first_job}"))
    finally:
        if app is not None:
            app.close()
        for w in pool:
            w.stop()
        node.stop()
        redis.close()
    seconds = end - start
    return {"workers": workers, "studies": len(corpus), "seconds": round(seconds, 2),
            "studies_per_s": round(len(corpus) / seconds, 4), "quarantined": failed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=8)
    parser.add_argument("--instances", type=int, default=30)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--kind", choices=("header", "video"), default="header")
    parser.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if not shutil.which("redis-server") or not shutil.which("storescu"):
        sys.exit("scale_out.py: needs redis-server and storescu (scripts/setup.sh)")
    counts = [int(c) for c in args.workers.split(",")]
    root = Path(tempfile.mkdtemp(prefix="scale-out-"))
    try:
        if args.kind == "header":
            corpus = header_corpus(root / "corpus", args.studies, args.instances, args.size)
            warm = header_corpus(root / "warm", max(counts), 2, args.size)
        else:
            corpus = video_corpus(root / "corpus", args.studies)
            warm = [[f] for f in [p[0] for p in video_corpus(root / "warm", max(counts))]]
        results = [run(root, w, corpus, warm, args.kind) for w in counts]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    base = results[0]["studies_per_s"]
    for r in results:
        r["ratio_to_first"] = round(r["studies_per_s"] / base, 3)
        print(f"{r['workers']} worker process(es): {r['studies']} {args.kind} studies in "
              f"{r['seconds']:.1f} s = {r['studies_per_s']:.3f} studies/s, "
              f"x{r['ratio_to_first']:.2f} of {counts[0]} worker(s), "
              f"quarantined {r['quarantined']}")
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, load average {load[0]:.1f} {load[1]:.1f} "
          f"{load[2]:.1f} at the end (shared with other work: ratios, not absolute times)")
    report = {"kind": args.kind, "instances_per_study": args.instances if args.kind == "header"
              else 1, "size": args.size, "results": results, "cpus": os.cpu_count(),
              "loadavg_end": load, "python": platform.python_version(),
              "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                       capture_output=True, text=True).stdout.strip()}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    started = time.time()
    code = main()
    print(f"total {time.time() - started:.0f} s")
    sys.exit(code)
