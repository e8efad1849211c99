"""Stopping the scheduler is bounded: a running job is interrupted after the grace time
(the journal resumes it at the next start), a job that ends within it is collected.

The "jobs" are real worker processes of the node's pool running time.sleep: a real
de-identification job of a known long duration cannot be made here reliably."""

from __future__ import annotations

import time

from dicom_deid.config import parse_config
from dicom_deid.node.audit import AuditLog
from dicom_deid.node.journal import Journal, ReceivedInstance
from dicom_deid.node.scheduler import Scheduler


def _scheduler(tmp_path, done: list) -> Scheduler:
    config = parse_config({"state_dir": str(tmp_path / "st"),
                           "processing": {"workers": 1}})
    config.state_dir.mkdir(parents=True, exist_ok=True)
    audit = AuditLog(config.audit_log)
    return Scheduler(config, audit, on_job_done=done.append)


def _start(scheduler: Scheduler, seconds: float, job_id: int):
    future = scheduler._executor().submit(time.sleep, seconds)
    scheduler._running[future] = (job_id, 1, time.monotonic())
    return future


def _wait_running(future, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not future.running():  # the worker (spawned) has taken it
        assert time.monotonic() < deadline, "the worker never started"
        time.sleep(0.05)


def test_a_job_longer_than_the_grace_is_interrupted_and_its_worker_killed(tmp_path):
    scheduler = _scheduler(tmp_path, [])
    future = _start(scheduler, 600, job_id=7)
    _wait_running(future)
    processes = list(scheduler._pool._processes.values())
    start = time.monotonic()
    interrupted = scheduler.shutdown(grace=0.5)
    took = time.monotonic() - start
    assert interrupted == 1
    assert took < 30, f"shutdown took {took:.1f} s with a 600 s job running"
    for process in processes:
        process.join(10)
        assert not process.is_alive()


def test_a_job_that_ends_within_the_grace_is_collected_and_recorded(tmp_path):
    """The worker returns its result; the node process (not the worker) journals it."""
    done: list = []
    scheduler = _scheduler(tmp_path, done)
    journal = scheduler.journal
    [(iid, _)] = journal.record_received_many([ReceivedInstance(
        study_uid="1.2.3", study_token="S-test", sop_instance_uid="1.2.3.1",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.7", transfer_syntax="1.2.840.10008.1.2.1",
        modality="OT", study_description="", calling_aet="PACS", called_aet="DICOM-DEID",
        path="spool/a.dcm", size=1)], now=1.0)
    job = journal.start_job(journal.stable_studies(2.0)[0], [(iid, {"destinations": []})], [])
    output = ["outbox/x/1.dcm", "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.1.2.1", ["a"]]
    # A summary as run_study_job returns it, from a real worker process of the pool.
    future = scheduler._executor().submit(dict, job=job, study="S-test", result={
        "done": [iid], "failed": [], "outputs": [output]})
    scheduler._running[future] = (job, 1, time.monotonic())
    _wait_running_or_done(future)
    assert journal.query("SELECT state FROM instances") == [("processing",)]
    path = journal.path
    assert scheduler.shutdown(grace=60) == 0
    assert done == [{"job": job, "study": "S-test"}]
    check = Journal(path)
    try:
        assert check.query("SELECT state FROM instances") == [("done",)]
        assert check.query("SELECT destination, state FROM sends") == [("a", "pending")]
    finally:
        check.close()


def _wait_running_or_done(future, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not (future.running() or future.done()):
        assert time.monotonic() < deadline, "the worker never started"
        time.sleep(0.05)
