"""One study job: de-identify the instances a job was given, return the result.

A job reads and writes only the state folder (spool, outbox, quarantine) and the audit
log; it never opens the journal. It takes primitive arguments (the instances as the
journal's records, as dicts) and returns a primitive result, so any engine that can call
an importable function (the local process pool here, Celery later) can run it; the node
process records the result (Scheduler._collect -> Journal.finish_job). Running a job twice
is harmless: keyed UIDs give the same outputs, and the journal accepts a result only from
the job that currently owns the instances.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from dicom_deid.node.logs import redact, setup_logging, short_reason

LOG = logging.getLogger(__name__)


def worker_init(log_level: str, log_file: str | None) -> None:
    """Initializer of a local worker process: PHI-safe logging, die with the node."""
    os.umask(0o077)
    setup_logging(log_level, Path(log_file) if log_file else None)
    parent = os.getppid()
    try:  # Linux: the kernel kills us when the node dies (kill -9 included)
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass

    def watch() -> None:  # elsewhere, or if the parent died before prctl took effect
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(1.0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def warm_up() -> int:
    """Import the pipeline in a fresh worker, so that the first study does not wait for it."""
    import dicom_deid.pipeline  # noqa: F401

    return os.getpid()


def _deidentifier(route: dict[str, Any], key: Any, device: str = "auto",
                  face_engine: str | None = None, keypoint_engine: str | None = None) -> Any:
    """The library's Deidentifier for the instances of one study under one route."""
    from dicom_deid.deidentifier import Deidentifier

    return Deidentifier(route["profile"], key=key, options=tuple(route["options"]),
                        faces=route["faces"], device=device, face_engine=face_engine,
                        keypoint_engine=keypoint_engine)


def _identifying_values(path: Path) -> list[str]:
    """Values to mask in a failure reason for this instance (read only on failure)."""
    try:
        from pydicom import dcmread

        ds = dcmread(path, stop_before_pixels=True, defer_size=4096, specific_tags=[
            "PatientName", "PatientID", "PatientBirthDate", "AccessionNumber",
            "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "OtherPatientIDs"])
        return [str(ds.get(kw, "") or "") for kw in (
            "PatientName", "PatientID", "PatientBirthDate", "AccessionNumber",
            "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "OtherPatientIDs")]
    except Exception:
        return []


def _output_facts(path: Path) -> tuple[str, str]:
    from pydicom.filereader import read_file_meta_info

    meta = read_file_meta_info(path)
    return str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)


def _failure_items(result: Any) -> list[tuple[Path, str]]:
    """(input path, reason) for each failed input of a StudyResult."""
    items: list[tuple[Path, str]] = []
    failures = result.failures
    if isinstance(failures, dict):
        failures = list(failures.items())
    for failure in failures:
        if isinstance(failure, tuple | list):
            path, reason = failure[0], failure[1]
        else:
            path = getattr(failure, "path", None) or getattr(failure, "input", None)
            reason = getattr(failure, "reason", None) or str(failure)
        items.append((Path(path), str(reason)))
    return items


class _HeldEvents:
    """Audit events held for the node to write: a remote worker shares no audit log (lines
    appended from several hosts to one file on a network file system may interleave)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def write(self, event: str, **fields: Any) -> None:
        self.events.append({"event": event, **fields})

    def close(self) -> None:
        pass


def run_study_job(state_dir: str, job_id: int, token: str, rows: list[dict[str, Any]],
                  key_file: str, audit_log: str | None, device: str = "auto",
                  face_engine: str | None = None,
                  keypoint_engine: str | None = None) -> dict[str, Any]:
    """Process `rows` (the journal's records of the instances job `job_id` owns; a remote
    job gets only their id, path and route).

    Returns a PHI-free summary, with under "result" what the node records in the journal:
    done instance ids, (id, reason) of failed ones, and the outputs with their destinations.
    audit_log None: the audit events come back under "audit" for the node to write.
    """
    from dicom_deid.header.keys import load_key
    from dicom_deid.node.audit import AuditLog
    from dicom_deid.pipeline import process_study

    state = Path(state_dir)
    audit: Any = AuditLog(Path(audit_log)) if audit_log is not None else _HeldEvents()
    try:
        key = load_key(key_file)
        groups: dict[str, list[Any]] = defaultdict(list)
        for row in rows:
            groups[row["route"]].append(row)

        done: list[int] = []
        failed: list[tuple[int, str]] = []
        faces_replaced = leaks = 0
        outputs: dict[str, tuple[str, str, str, list[str]]] = {}
        outbox = state / "outbox"
        quarantine = state / "quarantine" / token
        for route_json, members in groups.items():
            route = json.loads(route_json)
            by_path = {(state / r["path"]).resolve(): r for r in members}
            secrets = [r.get("sop_instance_uid") or "" for r in members]
            started = time.monotonic()
            try:
                result = process_study(sorted(by_path), outbox,
                                       _deidentifier(route, key, device, face_engine,
                                                     keypoint_engine),
                                       None, quarantine)
            except Exception as exc:
                reason = "de-identification failed: " + short_reason(exc, secrets)
                LOG.error("job %d (study %s): %s", job_id, token, reason)
                failed.extend((r["id"], reason) for r in members)
                continue
            failed_ids: set[int] = set()
            for path, reason in _failure_items(result):
                row = by_path.get(path.resolve())  # type: ignore[assignment]
                if row is None:
                    continue
                clean = redact(reason, _identifying_values(path) + secrets)
                failed.append((row["id"], clean))
                failed_ids.add(row["id"])
            done.extend(r["id"] for r in members if r["id"] not in failed_ids)
            for out in result.outputs:
                out_path = Path(out).resolve()
                relative = str(out_path.relative_to(state.resolve()))
                # Known from the de-identification; read back only for an earlier run's output.
                sop_class, syntax = result.facts.get(Path(out)) or _output_facts(out_path)
                outputs[relative] = (relative, sop_class, syntax, list(route["destinations"]))
            audit.write("deidentified", study=token, job=job_id, rule=route["rule"],
                        profile=route["profile"], options=route["options"],
                        faces=route["faces"] or "profile default",
                        instances=len(members) - len(failed_ids), outputs=len(result.outputs),
                        failed=len(failed_ids), seconds=round(time.monotonic() - started, 2))

            faces_replaced += result.faces_replaced
            leaks += result.leaks

        summary = {"job": job_id, "study": token, "done": len(done), "failed": len(failed),
                   "outputs": len(outputs), "stale": False, "faces_replaced": faces_replaced,
                   "leaks": leaks,
                   "result": {"done": done, "failed": failed, "outputs": list(outputs.values())}}
        if isinstance(audit, _HeldEvents):
            summary["audit"] = audit.events
        return summary
    finally:
        audit.close()
