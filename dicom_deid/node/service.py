"""`dicom-deid serve`: wire receiver, scheduler, workers and forwarders together."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import IO, Any

from dicom_deid.config import NodeConfig
from dicom_deid.errors import DeidError
from dicom_deid.node.commit import restore_inline
from dicom_deid.node.journal import Journal
from dicom_deid.node.spool import Spool, ensure_private_dir

LOG = logging.getLogger(__name__)

LOCK_NAME = "node.lock"
_RETENTION_EVERY = 5.0


class NodeAlreadyRunning(DeidError, RuntimeError):
    pass


def acquire_state_lock(state_dir: Path) -> IO[str]:
    """One node per state folder: two would both 'recover' each other's work."""
    handle = open(state_dir / LOCK_NAME, "a+")  # noqa: SIM115 - held for the node's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise NodeAlreadyRunning(
            f"another dicom-deid node is running with state folder {state_dir}") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def node_running(state_dir: Path) -> int | None:
    """The pid of the node holding state_dir, or None."""
    path = state_dir / LOCK_NAME
    if not path.exists():
        return None
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = handle.read().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def ensure_node_key(path: Path) -> Any:
    """The node's site key; created (0600) on first start, like the per-user default."""
    from dicom_deid.header.keys import create_key, load_key, same_as_cli_key

    if not path.exists():
        ensure_private_dir(path.parent)
        create_key(path)
        LOG.warning("created a new site key at %s; back it up (dicom-deid key export "
                    "--key-file %s FILE): without it the same patient gets new pseudonyms",
                    path, path)
    key = load_key(path)
    LOG.info("site key %s, fingerprint %s", path, key.fingerprint())
    if same_as_cli_key(key) is False:
        LOG.warning("the CLI's default key is another key: `dicom-deid deidentify` would give "
                    "the same patient other pseudonyms; set DICOM_DEID_KEY=%s for the CLI", path)
    return key


def check_profiles(config: NodeConfig) -> list[str]:
    """Problems with the rules' profiles and options, named by key path."""
    from dicom_deid.header import load_profile

    problems = []
    rules = [(f"rules[{i}]", r) for i, r in enumerate(config.rules)]
    if config.default_rule is not None:
        rules.append(("default_rule", config.default_rule))
    for where, rule in rules:
        try:
            load_profile(rule.profile, options=rule.options)
        except Exception as exc:
            problems.append(f"{where}.profile/options: {exc}")
    return problems


def recover(config: NodeConfig, journal: Journal, spool: Spool) -> None:
    """Resume after any stop, including kill -9 and power loss."""
    partial = spool.clear_incoming()
    partial += _sweep_temporaries(config)
    # Acknowledged small instances whose files a power cut lost come back from the
    # journal before anything looks at the spool.
    restore_inline(config.state_dir, journal)
    counts = journal.recover()
    partial += spool.sweep_orphans(journal.instance_paths())
    # Journalled but never renamed into the spool: the crash came before the
    # acknowledgement, so the sender still holds (and will re-send) these.
    dropped = 0
    for waiting in journal.waiting_files():
        if not (config.state_dir / waiting.path).exists():
            journal.forget_unacknowledged(waiting.id)
            dropped += 1
    if partial or dropped or any(counts.values()):
        LOG.info("recovered: %d partial receptions removed, %d unacknowledged rows dropped, "
                 "%d interrupted jobs, %d instances back in the queue", partial, dropped,
                 counts["interrupted_jobs"], counts["requeued_instances"])


def _sweep_temporaries(config: NodeConfig) -> int:
    """Half-written outputs (`.tmp-*`, written then renamed) left by a kill: never final."""
    removed = 0
    for root in (config.outbox_dir, config.quarantine_dir):
        if root.exists():
            for path in root.rglob(".tmp-*"):
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed += 1
    return removed


def prepare_state(config: NodeConfig) -> None:
    os.umask(0o077)  # spool, outbox, journal, audit: the owner's alone
    ensure_private_dir(config.state_dir)
    for sub in (config.outbox_dir, config.quarantine_dir):
        ensure_private_dir(sub)


def run_node(config: NodeConfig, stop: threading.Event | None = None) -> int:
    """Run until SIGTERM/SIGINT (or `stop` is set); SIGHUP reloads the configuration
    (reload_config). Returns an exit status."""
    from dicom_deid.node.audit import AuditLog
    from dicom_deid.node.forwarder import ForwarderSet
    from dicom_deid.node.http import start_http
    from dicom_deid.node.receiver import Receiver
    from dicom_deid.node.scheduler import STOP_GRACE, Scheduler, sweep_retention

    reload_requested = threading.Event()

    def on_hangup(signum: int, frame: Any) -> None:
        reload_requested.set()  # the main loop reloads: nothing heavy in a signal handler

    if threading.current_thread() is threading.main_thread():
        # Installed first: SIGHUP's default action would end a node still starting.
        signal.signal(signal.SIGHUP, on_hangup)
    from dicom_deid.onnx_device import ModelSettings

    # processing.device cuda where onnxruntime has no CUDA stops the start with its reason,
    # instead of failing (and quarantining) every study later.
    ModelSettings(config.processing.device, config.processing.face_engine,
                  config.processing.keypoint_engine).check()
    prepare_state(config)
    lock = acquire_state_lock(config.state_dir)
    stop = stop or threading.Event()
    key = ensure_node_key(config.key_file)
    audit = AuditLog(config.audit_log)
    journal = Journal(config.journal_path)
    spool = Spool(config.state_dir)
    recover(config, journal, spool)

    forwarders = ForwarderSet(audit)
    http: Any = None

    def job_done(summary: dict[str, Any]) -> None:
        forwarders.wake()
        if http is not None:
            http.faces.add(summary)

    if config.processing.backend == "celery":
        from dicom_deid.node.celery_scheduler import CeleryScheduler

        scheduler: Scheduler = CeleryScheduler(config, audit, on_job_done=job_done)
    else:
        scheduler = Scheduler(config, audit, on_job_done=job_done)
    receiver: Any
    if config.listen.workers > 1:
        from dicom_deid.node.recv_pool import ReceivePool

        receiver = ReceivePool(config, on_failure=stop.set)
    else:
        receiver = Receiver(config, key, audit)

    def on_signal(signum: int, frame: Any) -> None:
        if stop.is_set():
            LOG.warning("second signal: exiting now (the journal resumes on restart)")
            os._exit(1)
        LOG.info("signal %d: stopping (send it again to exit at once)", signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    forwarders.start(config)
    scheduler.warm_up()
    receiver.start()
    http = start_http(config, receiver, scheduler)
    _log_destinations(config)
    LOG.info("state folder %s; studies are processed %g s after their last instance, "
             "by %s", config.state_dir, config.processing.stable_seconds,
             f"{config.processing.workers} worker(s)" if config.processing.backend == "local"
             else "celery workers")
    audit.write("started", ae_title=config.listen.ae_title, port=config.listen.port,
                destinations=[d.name for d in config.destinations])

    last_sweep = 0.0
    try:
        while not stop.is_set():
            if reload_requested.is_set():
                reload_requested.clear()
                config = reload_config(config, audit, forwarders, scheduler, receiver, http)
            started = scheduler.tick()
            now = time.monotonic()
            if http is not None:
                http.beat(now)
            if now - last_sweep > _RETENTION_EVERY:
                last_sweep = now
                sweep_retention(config, journal)
                receiver.sweep_incoming()
                if not scheduler.busy():  # a job may be creating folders right now
                    _prune_empty_dirs(config.outbox_dir)
            stop.wait(0.05 if started else 0.25)
    finally:
        LOG.info("stopping: no new associations; running jobs get %g s to finish",
                 STOP_GRACE)
        receiver.stop()
        if http is not None:
            http.stop()
        forwarders.signal_stop()
        scheduler.shutdown()
        forwarders.join(timeout=30)
        audit.write("stopped")
        audit.close()
        journal.close()
        lock.close()
    failed = getattr(receiver, "failed", "")
    return 1 if failed else 0


def _log_destinations(config: NodeConfig) -> None:
    from dicom_deid.node.senders import describe

    if config.destinations:
        LOG.info("forwarding to %s", ", ".join(
            f"{d.name} ({describe(d)})" for d in config.destinations))
    else:
        LOG.info("no destination configured: de-identified studies are kept in %s",
                 config.outbox_dir)


def reload_config(config: NodeConfig, audit: Any, forwarders: Any, scheduler: Any,
                  receiver: Any, http: Any) -> NodeConfig:
    """Re-read config.source (SIGHUP); returns the configuration the node runs on now."""
    from dicom_deid.config import ConfigError, load_config
    from dicom_deid.node.reload import plan_reload

    if config.source.startswith("<"):
        LOG.warning("reload requested, but the node runs on the embedded default (no "
                    "--config file): nothing to re-read")
        return config
    try:
        new = load_config(config.source)
        problems = check_profiles(new)
    except ConfigError as exc:
        problems = exc.problems
    if problems:
        LOG.error("configuration reload: %s is invalid; the node keeps running with the "
                  "previous configuration:\n  %s", config.source, "\n  ".join(problems))
        audit.write("config-rejected", config=config.source, problems=problems)
        return config
    plan = plan_reload(config, new)
    current = plan.config
    if {"destinations", "forward"} & set(plan.applied):
        forwarders.restart(current)
        _log_destinations(current)
    scheduler.config = current
    receiver.config = current
    receiver.update_allowlists(current.listen)
    if http is not None:
        http.config = current
    LOG.info("configuration reloaded from %s: %s", config.source,
             ", ".join(plan.applied) or "no change that applies")
    if plan.need_restart:
        LOG.warning("configuration reload: %s changed but needs a restart of the node; "
                    "running on with the previous value", ", ".join(plan.need_restart))
    removed = {d.name for d in config.destinations} - {d.name for d in current.destinations}
    if removed:
        LOG.warning("destinations removed: %s; their pending sends stay in the journal and "
                    "go out if the destination is configured again (`dicom-deid status`)",
                    ", ".join(sorted(removed)))
    audit.write("config-reloaded", config=config.source, applied=plan.applied,
                need_restart=plan.need_restart)
    return current


def _prune_empty_dirs(root: Path) -> None:
    """Remove study/series folders of the outbox emptied by retention."""
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        path = Path(dirpath)
        if path != root and not dirnames and not filenames:
            with contextlib.suppress(OSError):  # not empty after all
                path.rmdir()

