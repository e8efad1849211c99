"""The node's scheduler with processing.backend celery: study jobs go to a Redis broker.

Routing, the journal's job lifecycle and the meaning of job_timeout, max_attempts and
quarantine are the local scheduler's (scheduler.py); what differs is where a job runs:
it is published on the queue of its capability (cpu or gpu, from its rules) and its result
is polled from the result backend. A failed attempt (the worker process died, the job
passed job_timeout, the broker was unreachable) puts the study back with a growing delay
before its next job. A node that stops leaves queued and running jobs to the workers;
after its restart the journal gives their instances to new jobs and the earlier jobs'
results are discarded (the same files, written twice).
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections import Counter
from typing import Any

from dicom_deid.config import NodeConfig
from dicom_deid.node.audit import AuditLog
from dicom_deid.node.celery_app import TASK, broker_host, make_app, queue_name
from dicom_deid.node.logs import short_reason
from dicom_deid.node.scheduler import Scheduler

LOG = logging.getLogger(__name__)

_POLL_EVERY = 0.5  # seconds between two looks at the running jobs' results
_RETRY_FIRST, _RETRY_MAX = 2.0, 300.0  # delay before a failed study's next job, doubling
# A job still not finished this long after job_timeout has lost its worker without a
# failure reaching us (the host died): the node fails it itself.
_TIMEOUT_GRACE = 60.0
_REASONS = {
    "WorkerLostError": "the worker process died while de-identifying",
    "TimeLimitExceeded": "the job ran longer than job_timeout ({limit:g} s)",
}


class CeleryScheduler(Scheduler):
    def __init__(self, config: NodeConfig, audit: AuditLog, on_job_done: Any = None):
        super().__init__(config, audit, on_job_done)
        self._app: Any = None
        self._started: dict[str, float] = {}  # task id -> monotonic time first seen started
        self._not_before: dict[int, float] = {}  # study id -> monotonic time of next job
        self._failures: Counter[int] = Counter()  # study id -> failed jobs in a row
        self._faces: dict[tuple[str, tuple[str, ...]], str] = {}
        self._last_poll = 0.0
        self._broker_ok = True

    # ------------------------------------------------------------------ engine

    def app(self) -> Any:
        if self._app is None:
            self._app = make_app(self.config)
        return self._app

    def warm_up(self) -> None:
        """Nothing to start here: the workers are other processes (`dicom-deid worker`)."""
        try:
            with self.app().connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=4)
            LOG.info("celery backend: broker %s reachable; jobs go to %s.{cpu,gpu}",
                     broker_host(self.config), self.config.processing.celery.queue_prefix)
        except Exception as exc:
            self._broker_ok = False
            LOG.error("celery backend: broker %s unreachable (%s); jobs wait until it is up",
                      broker_host(self.config), short_reason(exc))

    def health(self) -> tuple[bool, str]:
        """For /healthz: the broker as the last poll saw it (no network call here)."""
        if not self._broker_ok:
            return False, f"celery broker {broker_host(self.config)} unreachable"
        return True, f"celery broker {broker_host(self.config)}, {len(self._running)} job(s) in flight"

    def _capacity(self) -> int:
        return self.config.processing.celery.max_in_flight

    def _stable(self, quiet_since: float, limit: int) -> list[int]:
        now = time.monotonic()
        self._not_before = {s: t for s, t in self._not_before.items() if t > now}
        found = self.journal.stable_studies(quiet_since, limit=limit + len(self._not_before))
        return [s for s in found if s not in self._not_before][:limit]

    # ------------------------------------------------------------------ dispatch

    def _queue_of(self, routes: list[dict[str, Any]]) -> str:
        """gpu when any route replaces faces (or its rule says gpu), else cpu."""
        rules = {r.name: r for r in self.config.rules}
        if self.config.default_rule is not None:
            rules.setdefault(self.config.default_rule.name, self.config.default_rule)
        chosen = "cpu"
        for route in routes:
            rule = rules.get(route["rule"])
            if rule is not None and rule.queue:
                capability = rule.queue
            else:
                capability = "cpu" if self._faces_of(route) == "none" else "gpu"
            if capability != "cpu":
                chosen = capability
        return queue_name(self.config, chosen)

    def _faces_of(self, route: dict[str, Any]) -> str:
        if route.get("faces"):
            return str(route["faces"])
        key = (route["profile"], tuple(route["options"]))
        if key not in self._faces:
            from dicom_deid.header import load_profile

            try:
                self._faces[key] = load_profile(key[0], key[1]).pixels.faces or "none"
            except Exception:  # the job itself reports a bad profile; route it anywhere
                self._faces[key] = "none"
        return self._faces[key]

    def _submit(self, job_id: int, token: str) -> Any:
        import json

        # Journal ids, spool paths and the route: nothing identifying goes to the broker.
        records = self.journal.job_instances(job_id)
        rows = [{"id": r.id, "path": r.path, "route": r.route} for r in records]
        queue = self._queue_of([json.loads(r.route or "{}") for r in records])
        limit = self.config.processing.job_timeout
        try:
            handle = self.app().send_task(
                TASK, args=[job_id, token, rows], queue=queue,
                task_id=f"job-{job_id}-{uuid.uuid4().hex[:12]}",
                time_limit=limit if limit > 0 else None,
                retry=True, retry_policy={"max_retries": 2, "interval_start": 0.2,
                                          "interval_step": 0.5, "interval_max": 1.0})
        except Exception as exc:
            self._broker_ok = False
            study_id = self._study_of(job_id)
            self._job_failed(job_id, f"the celery broker is unreachable ({short_reason(exc)})",
                             count_attempt=False)
            if study_id is not None:
                self._back_off(study_id)
            return None
        self._broker_ok = True
        LOG.debug("job %d published on %s", job_id, queue)
        return handle

    def _study_of(self, job_id: int) -> int | None:
        rows = self.journal.job_instances(job_id)
        return rows[0].study_id if rows else None

    def _back_off(self, study_id: int) -> None:
        self._failures[study_id] += 1
        delay = min(_RETRY_MAX, _RETRY_FIRST * 2 ** (self._failures[study_id] - 1))
        self._not_before[study_id] = time.monotonic() + delay

    # ------------------------------------------------------------------ results

    def _collect(self) -> None:
        now = time.monotonic()
        if now - self._last_poll < _POLL_EVERY:
            return
        self._last_poll = now
        for handle in list(self._running):
            job_id, study_id, _ = self._running[handle]
            try:
                state = handle.state
                if state == "SUCCESS":
                    summary = handle.result
                    handle.forget()
            except Exception as exc:
                if self._broker_ok:
                    LOG.error("celery backend: results unreadable from %s (%s); retrying",
                              broker_host(self.config), short_reason(exc))
                self._broker_ok = False
                return
            self._broker_ok = True
            if state == "STARTED":
                self._started.setdefault(handle.id, now)
            elif state == "SUCCESS":
                self._finished(handle)
                for event in summary.pop("audit", []):
                    self.audit.write(event.pop("event"), **event)
                summary.pop("worker", None)
                self._failures.pop(study_id, None)
                if self._record(job_id, summary) and self.on_job_done:
                    self.on_job_done(summary)
            elif state in ("FAILURE", "REVOKED"):
                self._finished(handle)
                self._failed(job_id, study_id, self._reason(handle, state))
                with contextlib.suppress(Exception):  # else it expires (result_expires)
                    handle.forget()

    def _reason(self, handle: Any, state: str) -> str:
        if state == "REVOKED":
            return "the job was revoked on its worker"
        try:
            exc = handle.result
        except Exception as error:  # an exception type this process cannot rebuild
            exc = error
        name = type(exc).__name__
        template = _REASONS.get(name)
        if template:
            return template.format(limit=self.config.processing.job_timeout)
        return f"job error: {short_reason(exc) if isinstance(exc, BaseException) else name}"

    def _finished(self, handle: Any) -> None:
        self._running.pop(handle, None)
        self._started.pop(handle.id, None)

    def _failed(self, job_id: int, study_id: int, reason: str, count_attempt: bool = True) -> None:
        self._job_failed(job_id, reason, count_attempt=count_attempt)
        self._back_off(study_id)

    def _stop_overdue(self) -> None:
        """A backstop: the worker's own time limit normally ends a job at job_timeout."""
        limit = self.config.processing.job_timeout
        if limit <= 0:
            return
        now = time.monotonic()
        for handle, (job_id, study_id, _) in list(self._running.items()):
            started = self._started.get(handle.id)
            if started is None or now - started <= limit + _TIMEOUT_GRACE:
                continue
            try:
                handle.revoke(terminate=True, signal="SIGKILL")
            except Exception as exc:  # the broker is down: the journal still moves on
                LOG.warning("job %d: revoke failed (%s)", job_id, short_reason(exc))
            self._finished(handle)
            self._failed(job_id, study_id,
                         f"the job ran longer than job_timeout ({limit:g} s) and its worker "
                         "did not report")

    def busy(self) -> bool:
        return bool(self._running)

    def shutdown(self, grace: float = 0.0) -> int:
        """Stop polling. Jobs on the workers run on; the journal resumes their studies at
        the next start (recover), and their results are then discarded."""
        left = len(self._running)
        if left:
            LOG.info("stopping: %d job(s) left on the celery workers; their studies are "
                     "processed again after the restart", left)
        self._running.clear()
        if self._app is not None:
            self._app.close()
        self.journal.close()
        return left
