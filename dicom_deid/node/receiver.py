"""The storage SCP: C-ECHO and C-STORE, each instance spooled durably before success.

Datasets are received in chunks straight to a file under spool/incoming (pynetdicom's
STORE_RECV_CHUNKED_DATASET): the bytes the peer sent, with file meta, never decoded, so a
video of any size costs no memory and is stored exactly as received. An instance is
acknowledged only after it is journalled, fsync'd and renamed into the spool.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dicom_deid.config import ListenConfig, NodeConfig
from dicom_deid.header.keys import SiteKey
from dicom_deid.node.audit import AuditLog, study_token
from dicom_deid.node.journal import Journal, ReceivedInstance
from dicom_deid.node.logs import short_reason
from dicom_deid.node.spool import Spool, free_bytes, remove_file

LOG = logging.getLogger(__name__)

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700  # "Refused: Out of Resources"
STATUS_CANNOT_UNDERSTAND = 0xC000

_HEADER_TAGS = ("StudyInstanceUID", "SOPInstanceUID", "SOPClassUID", "Modality",
                "StudyDescription")


# Bytes beyond listen.max_instance_size (PDU headers, the command set) tolerated before an
# instance still being received is cut off by aborting its association.
_SIZE_SLACK = 64 * 1024


@dataclass
class _AssocStats:
    calling_aet: str
    stored: int = 0
    refused: int = 0
    quarantined: int = 0
    pending_bytes: int = 0  # received since the last complete DIMSE message
    aborting: bool = False


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"


def server_ssl_context(listen: ListenConfig) -> ssl.SSLContext | None:
    if listen.tls is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(listen.tls.cert), str(listen.tls.key))
    if listen.tls.ca is not None:
        ctx.load_verify_locations(cafile=str(listen.tls.ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def read_header(path: Path) -> dict[str, str]:
    """The few attributes routing needs, read without touching pixel data."""
    from pydicom import dcmread

    ds = dcmread(path, stop_before_pixels=True, defer_size=65536,
                 specific_tags=list(_HEADER_TAGS))
    return {kw: str(ds.get(kw, "") or "").strip() for kw in _HEADER_TAGS}


def missing_study_problem(path: Path) -> str:
    """Why a header has no StudyInstanceUID. pydicom stops quietly where a file is cut off, so
    a truncated file must be named as truncated, not blamed on its header."""
    from dicom_deid.header.fileio import InputError, read_instance

    try:
        read_instance(path)
    except InputError as exc:
        return str(exc)  # PHI-free by InputError's contract
    return "no StudyInstanceUID in the header"


class Receiver:
    """Owns the pynetdicom AE and its server thread."""

    def __init__(self, config: NodeConfig, key: SiteKey, audit: AuditLog):
        self.config = config
        self.listen = config.listen
        self.key = key
        self.audit = audit
        self.spool = Spool(config.state_dir)
        self.journal = Journal(config.journal_path)
        self._server: Any = None
        self._stats: dict[int, _AssocStats] = {}
        self._lock = threading.Lock()
        self._saved_tempdir: str | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        from pynetdicom import (
            AE,
            ALL_TRANSFER_SYNTAXES,
            AllStoragePresentationContexts,
            _config,
            evt,
        )
        from pynetdicom.sop_class import Verification

        # Chunked reception writes into the temp dir; ours is inside the spool, so the
        # final rename stays on one file system (and never crosses into /tmp).
        _config.STORE_RECV_CHUNKED_DATASET = True
        _config.UNRESTRICTED_STORAGE_SERVICE = self.listen.accept_unknown_sop_classes
        self._saved_tempdir = tempfile.tempdir
        tempfile.tempdir = str(self.spool.incoming)

        ae = AE(ae_title=self.listen.ae_title)
        ae.maximum_associations = self.listen.max_associations
        ae.maximum_pdu_size = self.listen.max_pdu
        ae.acse_timeout = self.listen.acse_timeout
        ae.dimse_timeout = self.listen.dimse_timeout
        ae.network_timeout = self.listen.network_timeout
        # Also enforced in _on_requested (with a logged reason); this is the backstop.
        ae.require_calling_aet = list(self.listen.allowed_calling_aets)
        ae.add_supported_context(Verification)
        for cx in AllStoragePresentationContexts:
            # Every transfer syntax pydicom knows, video and JPEG family included:
            # instances are stored as received, never transcoded here.
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        handlers = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_RELEASED, self._on_closed),
            (evt.EVT_ABORTED, self._on_closed),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_DATA_RECV, self._on_data),
            (evt.EVT_DIMSE_RECV, self._on_message),
        ]
        self._server = ae.start_server((self.listen.host, self.listen.port), block=False,
                                       evt_handlers=handlers,
                                       ssl_context=server_ssl_context(self.listen))
        LOG.info("listening on %s:%d as %s (%s), %d storage SOP classes, calling AEs: %s",
                 self.listen.host, self.listen.port, self.listen.ae_title,
                 "TLS" if self.listen.tls else "no TLS", len(AllStoragePresentationContexts),
                 ", ".join(self.listen.allowed_calling_aets) or "any")

    def sweep_incoming(self) -> int:
        """Remove receptions abandoned by an aborted association (pynetdicom keeps them).

        A file nobody has written to for longer than the network and DIMSE timeouts cannot
        belong to a live association; none of them was acknowledged.
        """
        horizon = time.time() - 2 * max(self.listen.network_timeout, self.listen.dimse_timeout)
        removed = 0
        for entry in self.spool.incoming.iterdir():
            with contextlib.suppress(OSError):  # renamed into the spool meanwhile
                if entry.is_file() and entry.stat().st_mtime < horizon:
                    entry.unlink()
                    removed += 1
        if removed:
            LOG.info("removed %d abandoned partial receptions", removed)
        return removed

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._saved_tempdir is not None or tempfile.tempdir == str(self.spool.incoming):
            tempfile.tempdir = self._saved_tempdir
        self.journal.close()

    # ------------------------------------------------------------------ association

    def _on_requested(self, event: Any) -> None:
        assoc = event.assoc
        primitive = assoc.requestor.primitive
        calling = str(primitive.calling_ae_title or "").strip()
        peer = f"{assoc.requestor.address}:{assoc.requestor.port}"
        allowed = self.listen.allowed_calling_aets
        if allowed and calling not in allowed:
            LOG.warning("rejected association from %s: calling AE %r is not in "
                        "listen.allowed_calling_aets", peer, calling)
            self._reject(assoc, 0x01, 0x01, 0x03)  # permanent: calling AE not recognised
            return
        active = [a for a in assoc.ae.active_associations if a.is_acceptor]
        if len(active) > self.listen.max_associations:
            LOG.warning("rejected association from %s (AE %r): %d associations already open "
                        "(listen.max_associations)", peer, calling, len(active) - 1)
            self._reject(assoc, 0x02, 0x03, 0x02)  # transient: local limit exceeded
            return
        free = free_bytes(self.config.state_dir)
        if free < self.listen.min_free_disk:
            LOG.error("rejected association from %s (AE %r): free disk %d MiB in %s is below "
                      "listen.min_free_disk (%d MiB)", peer, calling, free // 2**20,
                      self.config.state_dir, self.listen.min_free_disk // 2**20)
            self._reject(assoc, 0x02, 0x03, 0x01)  # transient: temporary congestion
            return

    @staticmethod
    def _reject(assoc: Any, result: int, source: int, diagnostic: int) -> None:
        assoc.acse.send_reject(result, source, diagnostic)
        from pynetdicom import evt

        evt.trigger(assoc, evt.EVT_REJECTED, {})
        assoc.kill()

    def _on_accepted(self, event: Any) -> None:
        calling = str(event.assoc.requestor.ae_title or "").strip()
        with self._lock:
            self._stats[id(event.assoc)] = _AssocStats(calling)

    def _on_closed(self, event: Any) -> None:
        with self._lock:
            stats = self._stats.pop(id(event.assoc), None)
        if stats and (stats.stored or stats.refused or stats.quarantined):
            LOG.info("association from %s %s: %d instances stored, %d quarantined on "
                     "arrival, %d refused", stats.calling_aet,
                     "released" if event.event.name == "EVT_RELEASED" else "aborted",
                     stats.stored, stats.quarantined, stats.refused)

    def _on_data(self, event: Any) -> None:
        """Cut off an instance that grows past listen.max_instance_size while it arrives,
        rather than spool it whole and refuse it afterwards."""
        with self._lock:
            stats = self._stats.get(id(event.assoc))
            if stats is None or stats.aborting:
                return
            stats.pending_bytes += len(event.data)
            if stats.pending_bytes <= self.listen.max_instance_size + _SIZE_SLACK:
                return
            stats.aborting = True
            stats.refused += 1
        LOG.warning("aborted the association from %s: an instance exceeds "
                    "listen.max_instance_size (%s) while being received",
                    stats.calling_aet, _size(self.listen.max_instance_size))
        # Not from this (the association's reader) thread: abort waits for it to stop.
        threading.Thread(target=event.assoc.abort, name="abort-oversized", daemon=True).start()

    def _on_message(self, event: Any) -> None:
        with self._lock:
            stats = self._stats.get(id(event.assoc))
            if stats is not None:
                stats.pending_bytes = 0

    def _count(self, event: Any, field: str) -> None:
        with self._lock:
            stats = self._stats.get(id(event.assoc))
            if stats:
                setattr(stats, field, getattr(stats, field) + 1)

    # ------------------------------------------------------------------ services

    @staticmethod
    def _on_echo(event: Any) -> int:
        return STATUS_SUCCESS

    def _on_store(self, event: Any) -> int:
        try:
            return self._store(event)
        except Exception as exc:  # never let a handler exception reach pynetdicom's logger
            LOG.error("C-STORE failed, instance refused: %s", short_reason(exc))
            self._count(event, "refused")
            return STATUS_OUT_OF_RESOURCES

    def _store(self, event: Any) -> int:
        assoc = event.assoc
        calling = str(assoc.requestor.ae_title or "").strip()
        called = str(assoc.acceptor.ae_title or "").strip()
        received = Path(event.dataset_path)
        size = received.stat().st_size
        if size > self.listen.max_instance_size:
            LOG.warning("refused an instance of %s from %s: larger than "
                        "listen.max_instance_size (%s)", _size(size), calling,
                        _size(self.listen.max_instance_size))
            self._count(event, "refused")
            return STATUS_OUT_OF_RESOURCES  # pynetdicom deletes the partial file

        request = event.request
        transfer_syntax = str(event.context.transfer_syntax)
        sop_class = str(request.AffectedSOPClassUID or "")
        relative = self.spool.new_relative_path()
        try:
            header = read_header(received)
            problem = None if header["StudyInstanceUID"] else missing_study_problem(received)
        except Exception as exc:
            header, problem = {}, f"header cannot be read ({short_reason(exc)})"

        if problem is not None:
            # Not acknowledged as an error: the sender would retry it forever. It is kept,
            # quarantined with the reason, and never processed or forwarded.
            reason = f"malformed instance: {problem}"
            instance_id = self.journal.record_unreadable(
                path=relative, size=size, calling_aet=calling, called_aet=called,
                sop_class_uid=sop_class, transfer_syntax=transfer_syntax, reason=reason)
            self.spool.commit(received, relative)
            self.audit.write("quarantined", instance=f"I{instance_id}", study=None,
                             calling_aet=calling, reason=reason)
            LOG.warning("quarantined instance I%d from %s on arrival: %s", instance_id,
                        calling, reason)
            self._count(event, "quarantined")
            return STATUS_SUCCESS

        token = study_token(self.key, header["StudyInstanceUID"])
        item = ReceivedInstance(
            study_uid=header["StudyInstanceUID"], study_token=token,
            sop_instance_uid=header["SOPInstanceUID"] or str(request.AffectedSOPInstanceUID),
            sop_class_uid=header["SOPClassUID"] or sop_class, transfer_syntax=transfer_syntax,
            modality=header["Modality"], study_description=header["StudyDescription"],
            calling_aet=calling, called_aet=called, path=relative, size=size)
        # Journal first, then the durable rename: a crash in between leaves a row without
        # a file, which recovery drops (that instance was never acknowledged).
        instance_id, superseded = self.journal.record_received(item)
        try:
            self.spool.commit(received, relative)
        except Exception:
            self.journal.forget_unacknowledged(instance_id)
            raise
        if superseded:
            for path in self.journal.drop_superseded(superseded):
                remove_file(self.config.state_dir / path)
        self.audit.write("received", study=token, instance=f"I{instance_id}",
                         calling_aet=calling, sop_class=item.sop_class_uid, bytes=size)
        self._count(event, "stored")
        return STATUS_SUCCESS
