"""The study trigger: route stable studies and hand them to workers as jobs.

A study is stable when no instance of it has arrived for `processing.stable_seconds`.
Its waiting instances are routed (rules), moved to `processing` under a new job in one
transaction, and the job runs in a worker process. A worker that dies is replaced; its
job's instances go back to waiting, or to quarantine after `processing.max_attempts`.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict
from pathlib import Path
from typing import Any

from dicom_deid.config import NodeConfig
from dicom_deid.node.audit import AuditLog
from dicom_deid.node.jobs import run_study_job, warm_up, worker_init
from dicom_deid.node.journal import Journal, OutputRecord
from dicom_deid.node.logs import short_reason
from dicom_deid.node.routing import InstanceFacts, choose_rule, no_match_reason, route_of

LOG = logging.getLogger(__name__)

# A journalled instance whose file is not in the spool this long after arrival lost its
# reception half-way (the receiver forgets such rows itself; this covers a missed case).
_MISSING_FILE_GRACE = 120.0
# How long a stopping node (SIGTERM) waits for running de-identification jobs before it
# kills their workers: the journal resumes them at the next start, and SIGTERM must end
# the process within seconds (systemd, containers), however long a video job takes.
STOP_GRACE = 3.0


class Scheduler:
    def __init__(self, config: NodeConfig, audit: AuditLog, on_job_done: Any = None):
        self.config = config
        self.audit = audit
        self.journal = Journal(config.journal_path)
        self.on_job_done = on_job_done
        self._pool: ProcessPoolExecutor | None = None
        # future -> (job id, study id, monotonic start time)
        self._running: dict[Any, tuple[int, int, float]] = {}  # Future or celery AsyncResult
        self._warming: list[Future] = []

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: the node process runs network threads.
            self._pool = ProcessPoolExecutor(
                max_workers=self.config.processing.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=worker_init,
                initargs=(self.config.log.level,
                          str(self.config.log.file) if self.config.log.file else None))
        return self._pool

    def warm_up(self) -> None:
        """Start the worker processes now (spawning and imports take seconds)."""
        pool = self._executor()
        self._warming = [pool.submit(warm_up) for _ in range(self.config.processing.workers)]

    def tick(self) -> int:
        """Collect finished jobs and start new ones; returns the number started."""
        if self._warming and all(f.done() for f in self._warming):
            ready = sum(1 for f in self._warming if not f.exception())
            # A failure here shows again, with its reason, in the first job.
            LOG.info("%d of %d worker processes ready", ready, len(self._warming))
            self._warming = []
        self._stop_overdue()
        self._collect()
        free = self._capacity() - len(self._running)
        if free <= 0:
            return 0
        quiet_since = time.time() - self.config.processing.stable_seconds
        started = 0
        for study_id in self._stable(quiet_since, free):
            if self._dispatch(study_id):
                started += 1
        return started

    def _capacity(self) -> int:
        """Jobs that may run at once (the celery scheduler: queued or running)."""
        return self.config.processing.workers

    def _stable(self, quiet_since: float, limit: int) -> list[int]:
        return self.journal.stable_studies(quiet_since, limit=limit)

    def _dispatch(self, study_id: int) -> bool:
        state = self.config.state_dir
        routed: list[tuple[int, dict]] = []
        unrouted: list[tuple[int, str]] = []
        now = time.time()
        for inst in self.journal.received_instances(study_id):
            if not (state / inst.path).exists():
                if now - inst.received_at > _MISSING_FILE_GRACE:
                    unrouted.append((inst.id, "the spooled file is missing"))
                continue  # still being renamed into the spool
            facts = InstanceFacts(inst.calling_aet or "", inst.called_aet or "",
                                  inst.modality or "", inst.sop_class_uid or "",
                                  inst.study_description or "")
            rule = choose_rule(self.config, facts)
            if rule is None:
                unrouted.append((inst.id, no_match_reason(facts)))
            else:
                routed.append((inst.id, route_of(rule)))
        job_id = self.journal.start_job(study_id, routed, unrouted)
        token = self.journal.study_token(study_id)
        for instance_id, reason in unrouted:
            self.audit.write("quarantined", study=token, instance=f"I{instance_id}", reason=reason)
            LOG.warning("study %s: instance I%d quarantined: %s", token, instance_id, reason)
        if job_id is None:
            return False
        future = self._submit(job_id, token)
        if future is None:
            return False
        self._running[future] = (job_id, study_id, time.monotonic())
        LOG.info("study %s: job %d started with %d instances", token, job_id, len(routed))
        return True

    def _submit(self, job_id: int, token: str) -> Future | None:
        # The worker gets the journal's records and returns its result: it never opens
        # the journal (one writer process; a remote worker needs no access to it).
        rows = [asdict(inst) for inst in self.journal.job_instances(job_id)]
        args = (str(self.config.state_dir), job_id, token, rows, str(self.config.key_file),
                str(self.config.audit_log), self.config.processing.device,
                self.config.processing.face_engine,
                self.config.processing.keypoint_engine)
        try:
            return self._executor().submit(run_study_job, *args)
        except BrokenProcessPool:
            self._replace_pool()
            try:
                return self._executor().submit(run_study_job, *args)
            except Exception as exc:
                self._job_failed(job_id, f"cannot start a worker: {short_reason(exc)}")
                return None

    def _collect(self) -> None:
        broken = False
        for future in [f for f in self._running if f.done()]:
            job_id, study_id, _ = self._running.pop(future)
            try:
                summary = future.result()
            except BrokenProcessPool:
                broken = True
                self._job_failed(job_id, "the worker process died while de-identifying")
                continue
            except Exception as exc:
                self._job_failed(job_id, f"job error: {short_reason(exc)}")
                continue
            if self._record(job_id, summary) and self.on_job_done:
                self.on_job_done(summary)
        if broken:
            self._replace_pool()

    def _record(self, job_id: int, summary: dict[str, Any]) -> bool:
        """Journal a finished job's result; False when it is no longer current."""
        result = summary.pop("result")
        token = summary["study"]
        outputs = [OutputRecord(path, sop_class, syntax, tuple(dests))
                   for path, sop_class, syntax, dests in result["outputs"]]
        failed = [(instance_id, reason) for instance_id, reason in result["failed"]]
        if not self.journal.finish_job(job_id, result["done"], failed, outputs):
            LOG.warning("job %d (study %s): result discarded, the instances were handed to "
                        "another job after a restart", job_id, token)
            return False
        for instance_id, reason in failed:
            self.audit.write("quarantined", study=token, instance=f"I{instance_id}", reason=reason)
        LOG.info("job %d (study %s): %d instances de-identified into %d files, %d quarantined",
                 job_id, token, len(result["done"]), len(outputs), len(failed))
        return True

    def _stop_overdue(self) -> None:
        """Stop the workers when a job has run past processing.job_timeout.

        ProcessPoolExecutor cannot cancel a running task, so every worker process is killed
        and the pool replaced; the overdue job uses an attempt, the others wait again
        without using one.
        """
        limit = self.config.processing.job_timeout
        if limit <= 0 or self._pool is None:
            return
        now = time.monotonic()
        overdue = [f for f, (_, _, t) in self._running.items()
                   if not f.done() and now - t > limit]
        if not overdue:
            return
        for process in list(getattr(self._pool, "_processes", {}).values()):
            process.kill()
        for future in list(self._running):
            job_id, _, _ = self._running.pop(future)
            if future in overdue:
                self._job_failed(job_id, f"the job ran longer than job_timeout ({limit:g} s)")
            else:
                self._job_failed(job_id, "stopped with a timed-out job on another worker",
                                 count_attempt=False)
        self._replace_pool()

    def _job_failed(self, job_id: int, reason: str, count_attempt: bool = True) -> None:
        quarantined = self.journal.fail_job(job_id, reason, self.config.processing.max_attempts,
                                            count_attempt=count_attempt)
        LOG.error("job %d failed: %s; %d instances quarantined, the others wait for a retry",
                  job_id, reason, len(quarantined))
        for instance_id in quarantined:
            self.audit.write("quarantined", instance=f"I{instance_id}", reason=reason)

    def _replace_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = None

    def busy(self) -> bool:
        return bool(self._running)

    def shutdown(self, grace: float = STOP_GRACE) -> int:
        """Stop the workers; returns the number of jobs interrupted.

        Running jobs get `grace` seconds to finish; then their worker processes are killed
        and the jobs stay 'running' in the journal, which recover() hands back to the
        scheduler at the next start, exactly as after a kill -9 (outputs are written under
        .tmp- names and renamed, so a killed job leaves nothing half-written behind).
        """
        interrupted = 0
        if self._pool is not None:
            deadline = time.monotonic() + grace
            while (self._running or self._warming) and time.monotonic() < deadline:
                self._collect()
                self._warming = [f for f in self._warming if not f.done()]
                time.sleep(0.05)
            self._collect()
            if self._running or self._warming:
                interrupted = len(self._running)
                LOG.warning("stopping: %d running job(s) interrupted after %g s; they are "
                            "resumed from the journal at the next start", interrupted, grace)
                for process in list(getattr(self._pool, "_processes", {}).values()):
                    process.kill()
                self._running.clear()
                self._warming = []
                self._pool.shutdown(wait=False, cancel_futures=True)
            else:
                self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self.journal.close()
        return interrupted


def sweep_retention(config: NodeConfig, journal: Journal) -> tuple[int, int]:
    """Delete delivered originals and outputs unless the config keeps them."""
    state: Path = config.state_dir
    originals = outputs = 0
    if not config.retention.keep_originals:
        for original in journal.removable_originals():
            (state / original.path).unlink(missing_ok=True)
            journal.mark_original_removed(original.id)
            originals += 1
    if not config.retention.keep_outputs:
        for stored in journal.removable_outputs():
            output = state / stored.path
            output.unlink(missing_ok=True)
            # The pipeline's per-instance report beside it (PHI-free, but it must not pile up).
            output.with_suffix(".json").unlink(missing_ok=True)
            journal.mark_output_removed(stored.id)
            outputs += 1
    return originals, outputs
