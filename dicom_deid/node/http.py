"""The node's HTTP endpoint for operators and monitoring: health, status and metrics.

    GET /healthz   200 or 503, JSON: the DICOM listener, the worker pool, the main loop, the
                   journal, disk
    GET /status    the JSON of `dicom-deid status --json`
    GET /metrics   Prometheus text format, read from the journal at each scrape

It listens on 127.0.0.1 by default; another address needs a bearer token (http.token_file),
checked on every request. Nothing served names a patient: the status report and the metrics
carry pseudonyms, counts and reasons only. The server runs in a daemon thread of the node
process, each request with its own read-only journal connection.
"""

from __future__ import annotations

import hmac
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from dicom_deid.config import NodeConfig
from dicom_deid.node.journal import Journal

LOG = logging.getLogger(__name__)

Check = Callable[[], tuple[bool, str]]


def read_token(config: NodeConfig) -> str | None:
    if config.http.token_file is None:
        return None
    return config.http.token_file.read_text(encoding="utf-8").strip()


def _journal(config: NodeConfig) -> Journal:
    return Journal(config.journal_path, create=False, readonly=True)


def health(config: NodeConfig, checks: dict[str, Check]) -> tuple[bool, dict[str, Any]]:
    """Run every check; the node is healthy when all pass."""
    results: dict[str, Any] = {}
    for name, check in {**checks, "journal": lambda: _journal_ok(config),
                        "disk": lambda: _disk_ok(config)}.items():
        try:
            ok, detail = check()
        except Exception as exc:  # noqa: BLE001 (a failing check is an unhealthy node)
            ok, detail = False, f"check failed ({type(exc).__name__})"
        results[name] = {"ok": ok, "detail": detail}
    healthy = all(r["ok"] for r in results.values())
    return healthy, {"status": "ok" if healthy else "unhealthy", "checks": results}


def _journal_ok(config: NodeConfig) -> tuple[bool, str]:
    journal = _journal(config)
    try:
        started = time.monotonic()
        journal.running_jobs()
        return True, f"readable in {1000 * (time.monotonic() - started):.0f} ms"
    finally:
        journal.close()


def _disk_ok(config: NodeConfig) -> tuple[bool, str]:
    free = shutil.disk_usage(config.state_dir).free
    need = config.listen.min_free_disk
    ok = free >= need
    text = f"{free / 1024**3:.1f} GiB free in the state folder (minimum {need / 1024**3:.1f} GiB)"
    return ok, text if ok else text + ": new associations are refused"


class JournalCollector:
    """Prometheus metrics computed from the journal at scrape time (a few indexed COUNTs)."""

    def __init__(self, config: NodeConfig):
        self.config = config

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            SummaryMetricFamily,
        )

        journal = _journal(self.config)
        try:
            counts = journal.counts()
        finally:
            journal.close()
        states = counts.instances
        sends = {(dest, state): getattr(c, state) for dest, c in counts.sends.items()
                 for state in ("pending", "sent", "quarantined")}
        jobs = counts.jobs
        oldest = counts.oldest_waiting_at
        waiting = counts.studies_waiting

        received = CounterMetricFamily(
            "dicom_deid_instances_received", "Instances received and journalled")
        received.add_metric([], sum(states.values()))
        processed = CounterMetricFamily(
            "dicom_deid_instances_processed", "Instances de-identified (done or forwarded)")
        processed.add_metric([], states["done"] + states["forwarded"])
        forwarded = CounterMetricFamily(
            "dicom_deid_instances_forwarded", "Instances whose outputs every destination has")
        forwarded.add_metric([], states["forwarded"])
        quarantined = GaugeMetricFamily(
            "dicom_deid_instances_quarantined", "Instances in quarantine now")
        quarantined.add_metric([], states["quarantined"])
        by_state = GaugeMetricFamily(
            "dicom_deid_instances", "Instances by journal state", labels=["state"])
        for state, n in states.items():
            by_state.add_metric([state], n)
        queue = GaugeMetricFamily(
            "dicom_deid_queue_depth", "Work waiting, by queue", labels=["queue"])
        queue.add_metric(["deidentify"], states["received"] + states["processing"])
        queue.add_metric(["forward"], sum(n for (_, s), n in sends.items() if s == "pending"))
        send_gauge = GaugeMetricFamily(
            "dicom_deid_sends", "Output deliveries by destination and state",
            labels=["destination", "state"])
        for (dest, state), n in sorted(sends.items()):
            send_gauge.add_metric([dest, state], n)
        studies = GaugeMetricFamily("dicom_deid_studies_waiting",
                                    "Studies with instances waiting to be de-identified")
        studies.add_metric([], waiting)
        age = GaugeMetricFamily("dicom_deid_oldest_waiting_seconds",
                                "Age of the oldest instance not yet de-identified (0: none)")
        age.add_metric([], time.time() - oldest if oldest else 0.0)
        job_states = CounterMetricFamily("dicom_deid_jobs", "Finished study jobs by outcome",
                                         labels=["state"])
        for state in ("done", "failed", "interrupted"):
            job_states.add_metric([state], jobs.get(state, 0))
        running = GaugeMetricFamily("dicom_deid_jobs_running", "Study jobs running now")
        running.add_metric([], jobs.get("running", 0))
        duration = SummaryMetricFamily("dicom_deid_job_duration_seconds",
                                       "Wall time of finished study jobs")
        duration.add_metric([], count_value=counts.jobs_done, sum_value=counts.jobs_done_seconds)
        yield from (received, processed, forwarded, quarantined, by_state, queue, send_gauge,
                    studies, age, job_states, running, duration)


class FaceCounters:
    """Faces replaced and leak-check hits, counted from job summaries in this process
    (they are in no journal table); they start at 0 with each node start."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.faces = 0
        self.leaks = 0

    def add(self, summary: dict[str, Any]) -> None:
        with self._lock:
            self.faces += int(summary.get("faces_replaced", 0) or 0)
            self.leaks += int(summary.get("leaks", 0) or 0)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        faces = CounterMetricFamily("dicom_deid_faces_replaced",
                                    "Faces replaced in video frames since the node started")
        faces.add_metric([], self.faces)
        leaks = CounterMetricFamily(
            "dicom_deid_leak_check_hits",
            "Faces the tracker missed that the leak check caught and covered, since start")
        leaks.add_metric([], self.leaks)
        yield from (faces, leaks)


class StatusServer:
    """The HTTP endpoint, serving from a daemon thread until stop()."""

    # The node's main loop turns about four times a second; this long without a turn means
    # it is stuck (a scheduler tick blocked), though the listener may still accept.
    LOOP_STALL_S = 60.0

    def __init__(self, config: NodeConfig, checks: dict[str, Check] | None = None):
        from prometheus_client import CollectorRegistry

        self.config = config
        self._last_beat = time.monotonic()
        self.checks = {**(checks or {}), "main_loop": self._loop_ok}
        self.token = read_token(config)
        self.faces = FaceCounters()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(JournalCollector(config))
        self.registry.register(self.faces)
        self._httpd = ThreadingHTTPServer((config.http.host, config.http.port), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="http",
                                        daemon=True)

    def beat(self, now: float | None = None) -> None:
        """Called by the node's main loop on every turn."""
        self._last_beat = time.monotonic() if now is None else now

    def _loop_ok(self) -> tuple[bool, str]:
        idle = time.monotonic() - self._last_beat
        if idle > self.LOOP_STALL_S:
            return False, f"the main loop has not turned for {idle:.0f} s"
        return True, f"last turn {idle:.1f} s ago"

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> StatusServer:
        self._thread.start()
        host, port = self.address
        LOG.info("HTTP endpoint on http://%s:%d (/healthz, /status, /metrics)%s", host, port,
                 ", bearer token required" if self.token else "")
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def authorised(self, header: str | None) -> bool:
        if self.token is None:
            return True
        expected = f"Bearer {self.token}".encode()
        return header is not None and hmac.compare_digest(header.encode(), expected)

    def respond(self, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for a GET of path."""
        if path == "/healthz":
            healthy, body = health(self.config, self.checks)
            return (200 if healthy else 503), "application/json", _json(body)
        if path == "/status":
            from dicom_deid.node.report import build_report

            journal = _journal(self.config)
            try:
                report = build_report(self.config, journal)
            finally:
                journal.close()
            return 200, "application/json", _json(report)
        if path == "/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        return 404, "application/json", _json({"error": "not found",
                                               "paths": ["/healthz", "/status", "/metrics"]})


def _json(data: Any) -> bytes:
    return (json.dumps(data, indent=2) + "\n").encode()


def _handler(server: StatusServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "dicom-deid"
        sys_version = ""

        def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
            if not server.authorised(self.headers.get("Authorization")):
                self._send(401, "application/json", _json({"error": "bearer token required"}),
                           {"WWW-Authenticate": 'Bearer realm="dicom-deid"'})
                return
            try:
                status, ctype, body = server.respond(self.path.split("?", 1)[0])
            except Exception as exc:  # noqa: BLE001 (one bad request must not stop the server)
                LOG.warning("HTTP %s failed: %s", self.path.split("?", 1)[0], type(exc).__name__)
                status, ctype, body = 500, "application/json", _json(
                    {"error": f"internal error ({type(exc).__name__})"})
            self._send(status, ctype, body)

        def _send(self, status: int, ctype: str, body: bytes,
                  headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            LOG.debug("HTTP %s", format % args)

    return Handler


def start_http(config: NodeConfig, receiver: Any, scheduler: Any) -> StatusServer | None:
    """The hook run_node calls: start the endpoint unless http.enabled is false."""
    if not config.http.enabled:
        return None

    def listener() -> tuple[bool, str]:
        up = getattr(receiver, "_server", None) is not None
        listen = config.listen
        return up, (f"{listen.ae_title} on {listen.host}:{listen.port}" if up
                    else "the DICOM listener is not running")

    def workers() -> tuple[bool, str]:
        health = getattr(scheduler, "health", None)
        if health is not None:  # the celery backend: its broker
            return health()
        pool = getattr(scheduler, "_pool", None)
        if pool is None:
            return True, "pool starts with the first job"
        if getattr(pool, "_broken", False):
            return False, "the worker pool is broken; it is replaced with the next job"
        return True, f"{config.processing.workers} worker process(es)"

    try:
        return StatusServer(config, {"listener": listener, "workers": workers}).start()
    except OSError as exc:
        # The DICOM work matters more than its monitoring: run on, and say so loudly.
        LOG.error("HTTP endpoint not started on %s:%d (%s): /healthz, /status and /metrics are "
                  "unavailable; set http.port or http.enabled in the configuration",
                  config.http.host, config.http.port, exc.strerror or exc)
        return None
