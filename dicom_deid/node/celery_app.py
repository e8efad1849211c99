"""The Celery side of processing.backend celery: the app, the study-job task, the worker.

The node (celery_scheduler.py) publishes one message per study job on a Redis broker;
`dicom-deid worker --config FILE` runs them. A job carries journal ids, spool paths
(relative to state_dir, random names) and the route: no UID, name or description, so the
broker holds no PHI. The worker reads the spool and writes the outbox and quarantine on
the storage it shares with the node (its own config's state_dir), and returns the PHI-free
result through the result backend (the same Redis); the node alone writes the journal
and the audit log.

Delivery is at-least-once: a message is acknowledged after its job returns (acks_late),
one job at a time per worker process (prefetch 1). A worker host that dies leaves its
message unacknowledged, and Redis hands it to another worker after
processing.celery.visibility_timeout. A job that kills only its worker process (a crash
in a decoder) or passes job_timeout comes back to the node as a failure, which counts an
attempt as with the local backend (max_attempts, then quarantine): were such a message
re-queued by Celery it would crash worker after worker. Keyed UIDs make every run of a
job write the same files, and the journal accepts one result per job.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any

from dicom_deid.config import NodeConfig

LOG = logging.getLogger(__name__)

TASK = "dicom_deid.study_job"
CAPABILITIES = ("cpu", "gpu")

# The worker's own configuration (state_dir and key_file as this host mounts them), set
# by run_worker before the pool forks.
_WORKER_CONFIG: NodeConfig | None = None


def queue_name(config: NodeConfig, capability: str) -> str:
    return f"{config.processing.celery.queue_prefix}.{capability}"


def broker_host(config: NodeConfig) -> str:
    """The broker's address without credentials, for logs."""
    url = config.processing.celery.broker_url
    return url.split("@")[-1] if "@" in url else url.split("://", 1)[-1]


def make_app(config: NodeConfig) -> Any:
    """A Celery app on config's broker; results go to the same Redis."""
    from celery import Celery

    celery = config.processing.celery
    app = Celery("dicom_deid", broker=celery.broker_url, backend=celery.broker_url,
                 set_as_current=False)
    # Sweep for messages past their visibility timeout often enough that a dead host's job
    # waits little more than the timeout itself (kombu's default sweep is every 100 s).
    sweep = max(1, min(10, int(celery.visibility_timeout / 4)))
    # The sweep's lock outlives a worker killed while holding it for this long (kombu's
    # default, 300 s, would hold every redelivery back as long).
    transport = {"visibility_timeout": celery.visibility_timeout,
                 "unacked_restore_interval": sweep, "unacked_restore_throttle": 1,
                 "unacked_mutex_expire": 2 * sweep + 1,
                 # A broker host that vanishes (no RST) must not stall the node's loop for
                 # the TCP timeout: its polls and publications give up after seconds.
                 "socket_connect_timeout": 5, "socket_timeout": 30}
    app.conf.update(
        task_serializer="json", result_serializer="json", accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=False,
        worker_prefetch_multiplier=1,
        task_track_started=True,
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        result_expires=max(86400, int(celery.visibility_timeout * 2)),
        result_extended=False,
        redis_socket_connect_timeout=5,
        redis_socket_timeout=30,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=4.0,
        task_default_queue=queue_name(config, "cpu"),
        task_create_missing_queues=True,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        enable_utc=True,
    )
    app.task(name=TASK, bind=False, acks_late=True)(study_job)
    return app


def study_job(job_id: int, token: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The task: one study job on this worker's view of the shared state_dir."""
    from dicom_deid.node.jobs import run_study_job

    config = _WORKER_CONFIG
    if config is None:
        raise RuntimeError("dicom_deid.study_job runs only in `dicom-deid worker`")
    # The worker host's own config chooses the device: a GPU host says cuda, a CPU host cpu.
    summary = run_study_job(str(config.state_dir), job_id, token, rows,
                            str(config.key_file), None, config.processing.device,
                            config.processing.face_engine,
                            config.processing.keypoint_engine)
    summary["worker"] = socket.gethostname()
    return summary


def check_shared_state(config: NodeConfig) -> list[str]:
    """What keeps a worker from doing its jobs on this host (empty: nothing)."""
    problems = []
    state = config.state_dir
    if not (state / "spool").is_dir():
        problems.append(f"state_dir {state}: no spool folder; mount the storage the node "
                        "uses as its state_dir here (README: Scale out)")
    for sub in ("outbox", "quarantine"):
        folder = state / sub
        if folder.is_dir() and not os.access(folder, os.W_OK):
            problems.append(f"{folder}: not writable by this user")
    if not config.key_file.is_file():
        problems.append(f"key_file {config.key_file}: missing; the workers need the node's "
                        "site key (the same key gives the same UIDs)")
    return problems


def run_worker(config: NodeConfig, queues: list[str], concurrency: int,
               name: str | None = None, loglevel: str = "INFO") -> int:
    """Run a Celery worker until SIGTERM (warm shutdown: running jobs finish first)."""
    global _WORKER_CONFIG

    os.umask(0o077)
    _WORKER_CONFIG = config
    app = make_app(config)
    # The trace logger writes every task's return value at INFO: PHI-free, but one long
    # line per job; the node logs the outcome.
    logging.getLogger("celery.app.trace").setLevel(logging.WARNING)
    argv = ["worker", f"--loglevel={loglevel}", f"--concurrency={concurrency}",
            "--pool=prefork", "--without-gossip", "--without-mingle",
            "-Q", ",".join(queue_name(config, q) for q in queues)]
    if name:
        argv.append(f"--hostname={name}")
    LOG.info("worker: %d process(es) on queue(s) %s of %s; state_dir %s", concurrency,
             ",".join(queues), broker_host(config), Path(config.state_dir))
    app.worker_main(argv=argv)
    return 0
