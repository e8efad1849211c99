#!/usr/bin/env python
"""Hostile-network checks of the node's listener: one line per attack (issue 17).

    .venv/bin/python benchmarks/node_attacks.py [--sockets 50] [--workers 1] [--json PATH]

Loopback only (127.0.0.1), bounded: at most --sockets hostile connections at a time, each
attack at most ~30 s. The node runs as a subprocess (`dicom-deid serve`) with its default
limits, on a plain and on a TLS listener (a throw-away CA made with openssl). For each
attack, while it is under way, an allowlisted DCMTK storescu sends 5 small instances
(over TLS on the TLS listener); printed per attack:

    attack  outcome  sender-seconds  RSS growth (MiB, node process)

outcome "held" means the sender completed and the node dropped or refused what the attack
did; "FAILED" names what went wrong. Also printed: SIGTERM-to-exit seconds with 50
unfinished TLS handshakes open. The tests (tests/node/test_hostile.py) assert the same
behaviour without timing it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.node import hostile  # noqa: E402
from tests.node.factory import make_instance, write_study  # noqa: E402
from tests.node.peers import Node, make_certificates, storescu  # noqa: E402

KEEP = {"default_rule": {"profile": "basic", "faces": "none"},
        "processing": {"stable_seconds": 600, "workers": 1}}


SENDER_TIMEOUT = 60.0


def sender_time(node: Node, files: list[Path], extra: tuple[str, ...] = ()) -> float | None:
    """Seconds an allowlisted storescu takes to send `files`; None if it failed or hung."""
    start = time.monotonic()
    try:
        proc = storescu(files, node.port, timeout=SENDER_TIMEOUT, check=False, extra=extra)
    except subprocess.TimeoutExpired:
        return None
    ok = proc.returncode == 0 and "Store Failed" not in proc.stdout
    return time.monotonic() - start if ok else None


def row(name: str, ok: bool, detail: str, seconds: float | None, rss: float) -> dict:
    line = (f"{name:<28} {'held' if ok else 'FAILED':<7} "
            f"sender {'-' if seconds is None else f'{seconds:5.2f} s'}  "
            f"RSS +{rss:6.1f} MiB  {detail}")
    print(line, flush=True)
    return {"attack": name, "held": ok, "detail": detail,
            "sender_s": None if seconds is None else round(seconds, 3), "rss_mib": round(rss, 1)}


def squat(node: Node, files: list[Path], kind: str, count: int, wait: float,
          extra: tuple[str, ...] = ()) -> dict:
    before = hostile.rss(node.proc.pid)
    with hostile.Squatters(node.port, kind, count, interval=1.0) as crowd:
        time.sleep(0.5)
        seconds = sender_time(node, files, extra)
        deadline = time.monotonic() + wait
        while crowd.socks and time.monotonic() < deadline:
            time.sleep(0.5)
        rss = (hostile.rss(node.proc.pid) - before) / 2**20
        left = len(crowd.socks)
    ok = seconds is not None and seconds < 5 and left == 0
    return row(f"{count} x {kind}", ok, f"{crowd.dropped} dropped by the node, {left} still open",
               seconds, rss)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=50)
    parser.add_argument("--sender-timeout", type=float, default=60.0,
                        help="seconds before a blocked sender counts as failed")
    parser.add_argument("--workers", type=int, default=1,
                        help="listen.workers: receive worker processes (node/recv_pool.py)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    global SENDER_TIMEOUT
    SENDER_TIMEOUT = args.sender_timeout
    n = args.sockets
    results = []
    with tempfile.TemporaryDirectory(prefix="node-attacks-") as tmp:
        root = Path(tmp)
        files = write_study(root / "study", 5).files
        log_file = root / "plain" / "node.log"
        node = Node(root / "plain", {**KEEP, "listen": {"workers": args.workers},
                                     "log": {"level": "INFO", "file": str(log_file)}}).start()
        try:
            sender_time(node, files)  # warm-up: the first C-STORE loads pydicom's codecs
            for kind in ("idle", "partial", "slowloris", "random"):
                results.append(squat(node, files, kind, n, wait=20))

            before = hostile.rss(node.proc.pid)
            taken, closed = hostile.oversized_pdu(node.port, pdu_type=0x01)
            rss = (hostile.rss(node.proc.pid) - before) / 2**20
            results.append(row("0xFFFFFFFF A-ASSOCIATE-RQ", closed and taken < 16 * 2**20,
                               f"{taken / 2**20:.1f} MiB taken before the node closed",
                               sender_time(node, files), rss))
            before = hostile.rss(node.proc.pid)
            taken, closed = hostile.oversized_pdu(node.port, established_as="PACS")
            rss = (hostile.rss(node.proc.pid) - before) / 2**20
            results.append(row("0xFFFFFFFF P-DATA (allowed AE)", closed and taken < 16 * 2**20,
                               f"{taken / 2**20:.1f} MiB taken before the node closed",
                               sender_time(node, files), rss))

            size = log_file.stat().st_size
            hostile.unknown_pdu_flood(node.port, 60_000)
            for _ in range(50):
                hostile.unknown_pdu_flood(node.port, 600)
            grown = log_file.stat().st_size - size
            seconds = sender_time(node, files)
            results.append(row("unknown PDU flood (90 KB)", grown < 8192 and seconds is not None,
                               f"log grew {grown} bytes", seconds, 0.0))

            hostile.forged_calling_ae(node.port, b"EVIL\nFAKE ERROR")
            ds = make_instance("1.2.3.4", "1.2.3.5", "1.2.3.6", 1)
            ds.SeriesInstanceUID = "LEAKME^Patient"
            leak = root / "leak.dcm"
            ds.save_as(leak, enforce_file_format=True)
            seconds = sender_time(node, [leak])
            text = log_file.read_text(errors="replace")
            clean = "LEAKME" not in text and "\nFAKE" not in text
            mode = oct(log_file.stat().st_mode & 0o777)
            results.append(row("PHI / forged line in log", clean and mode == "0o600",
                               f"no data set value, no forged line, log mode {mode}"
                               if clean else "value or forged line found", seconds, 0.0))
        finally:
            node.stop()

        certs = make_certificates(root / "pki")
        client = ("+tls", str(certs.key), str(certs.cert), "+cf", str(certs.ca))
        node = Node(root / "tls", {**KEEP, "listen": {
            "workers": args.workers, "tls": {"cert": str(certs.cert), "key": str(certs.key)}}},
            client_args=client).start()
        try:
            sender_time(node, files, client)  # warm-up
            results.append(squat(node, files, "tls-silent", n, wait=20, extra=client))
            before = hostile.rss(node.proc.pid)
            with hostile.Squatters(node.port, "tls-half", n // 2), \
                    hostile.Squatters(node.port, "tls-silent", n - n // 2):
                time.sleep(0.5)
                seconds = sender_time(node, files, client)
                rss = (hostile.rss(node.proc.pid) - before) / 2**20
                started = time.monotonic()
                node.proc.terminate()
                try:
                    rc = node.proc.wait(30)
                except subprocess.TimeoutExpired:
                    rc = None
                    node.proc.kill()
                    node.proc.wait(10)
                took = time.monotonic() - started
                node.proc = None
            results.append(row(f"{n} x tls-half/silent+SIGTERM",
                               seconds is not None and rc == 0 and took < 10,
                               f"exit {rc} {took:.2f} s after SIGTERM", seconds, rss))
        finally:
            if node.proc is not None:
                node.stop()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(r["held"] for r in results) else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
