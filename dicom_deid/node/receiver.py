"""The storage SCP: C-ECHO and C-STORE, each instance spooled durably before success.

Datasets are received in chunks straight to a file under spool/incoming (pynetdicom's
STORE_RECV_CHUNKED_DATASET): the bytes the peer sent, with file meta, never decoded, so a
video of any size costs no memory and is stored exactly as received. An instance is
acknowledged only once it is journalled and its bytes are on disk (node/commit.py says
how, with few fsyncs).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import ssl
import threading
import uuid
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

from pynetdicom.association import Association
from pynetdicom.events import Event

from dicom_deid.config import ListenConfig, NodeConfig
from dicom_deid.header.keys import SiteKey
from dicom_deid.node.audit import AuditLog, study_token
from dicom_deid.node.commit import INLINE_MAX, GroupCommit, Hardener
from dicom_deid.node.journal import Journal, ReceivedInstance
from dicom_deid.node.logs import short_reason
from dicom_deid.node.quick_header import quick_header
from dicom_deid.node.spool import (
    FlushBehind,
    Spool,
    free_bytes,
    fsync_dir,
    fsync_file,
    remove_file,
    start_writeback,
)

LOG = logging.getLogger(__name__)

# C-STORE statuses, PS3.4 B.2.3.
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700  # "Refused: Out of Resources": disk, size; nothing else
STATUS_DOES_NOT_MATCH = 0xA900  # "Error: Data Set does not match SOP Class"
STATUS_CANNOT_UNDERSTAND = 0xC000  # "Error: Cannot understand"

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_TOKENS_KEPT = 1024
_HEADER_TAGS = ("StudyInstanceUID", "SOPInstanceUID", "SOPClassUID", "Modality",
                "StudyDescription")


# Bytes beyond listen.max_instance_size (PDU headers, the command set) tolerated before an
# instance still being received is cut off by aborting its association.
_SIZE_SLACK = 64 * 1024
# A large instance's bytes are flushed to disk behind the writer every this many bytes as
# they arrive (spool.FlushBehind; spool.start_writeback while a flush is still running),
# so its fsync before the acknowledgement has only the tail left. Instances up to
# commit.INLINE_MAX never reach it (their bytes go through the journal).
WRITEBACK_EVERY = 1024 * 1024


@dataclass
class _AssocStats:
    calling_aet: str
    stored: int = 0
    refused: int = 0
    quarantined: int = 0
    pending_bytes: int = 0  # received since the last complete DIMSE message
    aborting: bool = False


@dataclass
class Arrival:
    """A C-STORE whose data set has been received into a file, by pynetdicom (EVT_C_STORE)
    or by the lean path (node/fast_store.py): what Receiver.store decides on."""

    assoc: Association
    affected_sop_class: str  # the command's
    affected_sop_instance: str
    abstract_syntax: str  # the presentation context's
    transfer_syntax: str
    path: Path | None  # None: the C-STORE had no data set
    reception: Reception | None
    data: bytes | None = None  # the file's bytes, where the receiving path kept them
    lean: bool = False  # received by node/fast_store.py, not pynetdicom's DIMSE layer


class Reception:
    """A C-STORE data set being received: pynetdicom writes it through this object
    (in place of its NamedTemporaryFile), so the free-disk watermark is checked before
    every write and ENOSPC refuses the instance (0xA700) instead of aborting."""

    def __init__(self, directory: Path, min_free: int):
        # mkstemp's own: a fresh name, O_EXCL, 0600 (without its random-name machinery,
        # a measurable part of a small instance's cost on the lean path).
        self._dir = os.fspath(directory)
        while True:
            name = os.path.join(self._dir, f"tmp{uuid.uuid4().hex}.dcm")
            try:
                fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o600)
                break
            except FileExistsError:  # pragma: no cover - a 122-bit collision
                continue
        self._fh = open(fd, "wb", buffering=0)  # noqa: SIM115 - closed by pynetdicom
        self.name = name
        self.file = self  # pynetdicom calls .file.flush() after each write
        self.min_free = min_free
        self.failed = ""  # why the data set was not written
        self._written = 0
        self._handed = 0  # bytes handed to the flusher or start_writeback
        self._flusher: FlushBehind | None = None

    def write(self, data: bytes | memoryview) -> int:
        if self.failed:
            return len(data)
        try:
            if free_bytes(self._dir) - len(data) < self.min_free:
                self._fail("writing it would cross listen.min_free_disk")
                return len(data)
            view = memoryview(data)
            while view:
                view = view[self._fh.write(view):]
            self._written += len(data)
            if self._written - self._handed >= WRITEBACK_EVERY:
                self._flush_behind()
        except OSError as exc:
            self._fail("no space left on the device" if exc.errno == errno.ENOSPC
                       else f"write failed ({os.strerror(exc.errno or 0)})")
        return len(data)

    def _flush_behind(self) -> None:
        if self._flusher is None:
            self._flusher = FlushBehind(self._fh.fileno())
        if not self._flusher.request():
            start_writeback(self._fh.fileno(), self._handed, self._written - self._handed)
        self._handed = self._written

    def settle(self) -> None:
        """All writing is done: wait for a flush behind still running, and refuse the
        instance if one failed (its error may not be reported by the final fsync)."""
        flusher, self._flusher = self._flusher, None
        if flusher is None:
            return
        error = flusher.stop()
        if error is not None and not self.failed:
            self._fail(f"write failed ({os.strerror(error.errno or 0)})")

    def _fail(self, reason: str) -> None:
        self.failed = reason
        with contextlib.suppress(OSError):
            self._fh.truncate(0)  # give the space back now; the instance is refused

    def flush(self) -> None:
        pass  # unbuffered

    def close(self) -> None:
        self.settle()
        self._fh.close()


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


def read_header(path: Path | BytesIO, data: bytes | None = None) -> dict[str, str]:
    """The few attributes routing needs, read without touching pixel data.

    data: the file's bytes, where the caller holds them: a plain file is then read by
    node/quick_header.py (the same answer, ~20x cheaper), anything else by pydicom."""
    from pydicom import dcmread

    if data is not None:
        quick = quick_header(data)
        if quick is not None:
            return quick
        path = BytesIO(data)
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

    def __init__(self, config: NodeConfig, key: SiteKey, audit: AuditLog,
                 group: Any = None):
        """group: who commits journal rows (a receive worker's recv_worker.RemoteCommit);
        by default a GroupCommit on this process's own journal connection."""
        self.config = config
        self.listen = config.listen
        self.key = key
        self.audit = audit
        self.spool = Spool(config.state_dir)
        self.journal = Journal(config.journal_path)
        self._group = group if group is not None else GroupCommit(self.journal)
        self.journal.defer_checkpoints()  # the hardener's connection checkpoints
        self._hardener = Hardener(config.state_dir, config.journal_path)
        self._server: Any = None
        self._stats: dict[int, _AssocStats] = {}
        self._lock = threading.Lock()
        self._saved_tempfile: Any = None
        self._tokens: dict[str, str] = {}  # study UID -> study_token (Receiver._token)
        self.served = {"lean": 0, "pynetdicom": 0}  # C-STOREs answered, by receiving path

    # ------------------------------------------------------------------ lifecycle

    def start(self, handover: Any = None, control: Any = None) -> None:
        """Listen on listen.host:port; or, in a receive worker (node/recv_worker.py), take
        connections the node process accepted from `handover`, and association slots from
        it over `control`."""
        from pynetdicom import (
            AE,
            ALL_TRANSFER_SYNTAXES,
            AllStoragePresentationContexts,
            _config,
            dimse_messages,
            evt,
        )
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        from dicom_deid.node import assoc_memo, uid_memo
        from dicom_deid.node.transport import GuardedServer, Limits

        uid_memo.install()  # association set-up: ~7,400 UID validations each, ~15 ms
        assoc_memo.install()  # negotiation remembered per distinct proposal
        # Chunked reception writes each data set to a file as it arrives. pynetdicom opens
        # it with NamedTemporaryFile (module global, no hook): ours writes inside the spool,
        # so the final rename stays on one file system, and checks the disk as it goes.
        _config.STORE_RECV_CHUNKED_DATASET = True
        _config.UNRESTRICTED_STORAGE_SERVICE = self.listen.accept_unknown_sop_classes
        self._saved_tempfile = dimse_messages.NamedTemporaryFile
        incoming, min_free = self.spool.incoming, self.listen.min_free_disk
        dimse_messages.NamedTemporaryFile = lambda **_: Reception(incoming, min_free)  # type: ignore[assignment]

        ae = AE(ae_title=self.listen.ae_title)
        # pynetdicom counts every connection, accepted or not, against this: ours are
        # counted in _on_requested (accepted ones only) and transport.py (the others).
        ae.maximum_associations = (self.listen.max_associations
                                   + self.listen.max_pending_connections + 16)
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
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)  # type: ignore[arg-type]
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
        limits = Limits(
            accept_timeout=self.listen.accept_timeout, pdu_timeout=self.listen.pdu_timeout,
            max_pdu=self.listen.max_pdu, max_pending=self.listen.max_pending_connections,
            max_pending_per_address=self.listen.max_pending_per_address)
        address = (self.listen.host, self.listen.port)
        extra: dict[str, Any] = {}
        server_class: type[GuardedServer] = GuardedServer
        if handover is not None:
            from dicom_deid.node.recv_worker import WorkerServer

            server_class = WorkerServer
            extra = {"handover": handover, "control": control, "on_listen": self._on_listen}
        try:
            server = ae.make_server(address, evt_handlers=handlers,  # type: ignore[arg-type]
                                    ssl_context=server_ssl_context(self.listen),
                                    server_class=server_class, limits=limits, **extra)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen on {self.listen.host}:{self.listen.port}: "
                                     f"{exc.strerror or exc}") from None
        ae._servers.append(server)  # AssociationServer.shutdown() removes it
        if self.listen.fast_store and isinstance(server, GuardedServer):
            server.fast_store = self  # plain C-STOREs take node/fast_store.py's path
        self._hardener.start()
        threading.Thread(target=server.serve_forever, name="node-accept", daemon=True).start()
        self._server = server
        if handover is not None:
            return  # the node process has said where it listens
        LOG.info("listening on %s:%d as %s (%s), %d storage SOP classes, calling AEs: %s",
                 self.listen.host, self.listen.port, self.listen.ae_title,
                 "TLS" if self.listen.tls else "no TLS", len(AllStoragePresentationContexts),
                 ", ".join(self.listen.allowed_calling_aets) or "any")

    def update_allowlists(self, listen: ListenConfig) -> None:
        """Take a reloaded configuration's calling/called AE lists (next association on)."""
        self.listen = self.listen.model_copy(update={
            "allowed_calling_aets": listen.allowed_calling_aets,
            "allowed_called_aets": listen.allowed_called_aets})
        server = self._server
        if server is not None:  # pynetdicom's own check (the backstop) must agree
            server.ae.require_calling_aet = list(listen.allowed_calling_aets)

    def _on_listen(self, message: dict[str, Any]) -> None:
        """Allowlists reloaded by the node process (a receive worker's SIGHUP)."""
        self.update_allowlists(self.listen.model_copy(update={
            "allowed_calling_aets": tuple(message["allowed_calling_aets"]),
            "allowed_called_aets": tuple(message["allowed_called_aets"])}))

    def sweep_incoming(self) -> int:
        """Remove receptions abandoned by an aborted association (pynetdicom keeps them).

        A file nobody has written to for longer than the network and DIMSE timeouts cannot
        belong to a live association; none of them was acknowledged.
        """
        removed = self.spool.sweep_incoming(
            2 * max(self.listen.network_timeout, self.listen.dimse_timeout))
        if removed:
            LOG.info("removed %d abandoned partial receptions", removed)
        return removed

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._saved_tempfile is not None:
            from pynetdicom import dimse_messages

            dimse_messages.NamedTemporaryFile = self._saved_tempfile
            self._saved_tempfile = None
        self._hardener.stop()
        self.journal.close()
        served = self.served["lean"] + self.served["pynetdicom"]
        if served:
            LOG.info("%d C-STOREs answered, %d journal commits (group commit)", served,
                     self._group.commits)

    # ------------------------------------------------------------------ association

    def _on_requested(self, event: Event) -> None:
        assoc = event.assoc
        primitive = assoc.requestor.primitive
        # Escaped by the log filter; repr() keeps them unambiguous here.
        calling = str(primitive.calling_ae_title or "").strip()  # type: ignore[union-attr]
        called = str(primitive.called_ae_title or "").strip()  # type: ignore[union-attr]
        address = str(assoc.requestor.address)
        peer = f"{address}:{assoc.requestor.port}"
        allowed = self.listen.allowed_calling_aets
        if allowed and calling not in allowed:
            LOG.warning("rejected association from %s: calling AE %r is not in "
                        "listen.allowed_calling_aets", peer, calling)
            self._reject(assoc, 0x01, 0x01, 0x03)  # permanent: calling AE not recognised
            return
        called_allowed = self.listen.allowed_called_aets or (self.listen.ae_title,)
        if called not in called_allowed:
            LOG.warning("rejected association from %s (AE %r): called AE %r is not %s",
                        peer, calling, called, "listen.allowed_called_aets"
                        if self.listen.allowed_called_aets else "this node's ae_title")
            self._reject(assoc, 0x01, 0x01, 0x07)  # permanent: called AE not recognised
            return
        from dicom_deid.node.recv_worker import WorkerServer
        from dicom_deid.node.transport import GuardedServer

        server = getattr(assoc, "_server", None)
        conn = getattr(assoc.dul, "conn", None)
        if isinstance(server, WorkerServer) and conn is not None:
            # Slots are shared by every receive worker: the node process counts them.
            granted, why, count = server.admit(conn)
            if not granted:
                LOG.warning("rejected association from %s (AE %r): %d associations already "
                            "open%s", peer, calling, count,
                            " from that address (listen.max_associations_per_address)"
                            if why == "address" else " (listen.max_associations)")
                self._reject(assoc, 0x02, 0x03, 0x02)  # transient: local limit exceeded
                return
            established = []
        elif isinstance(server, GuardedServer):
            # Only accepted associations count: connections still negotiating have a pool
            # of their own (transport.py), so they cannot take these slots.
            established = [c for c in server.connections() if c.established and not c.closed]
        else:
            established = [a for a in assoc.ae.active_associations  # type: ignore[misc]
                           if a.is_acceptor and a.is_established]
        if len(established) >= self.listen.max_associations:
            LOG.warning("rejected association from %s (AE %r): %d associations already open "
                        "(listen.max_associations)", peer, calling, len(established))
            self._reject(assoc, 0x02, 0x03, 0x02)  # transient: local limit exceeded
            return
        from_peer = sum(1 for c in established if getattr(c, "address", None) == address)
        if from_peer >= self.listen.max_associations_per_address:
            LOG.warning("rejected association from %s (AE %r): %d associations already open "
                        "from that address (listen.max_associations_per_address)", peer,
                        calling, from_peer)
            self._reject(assoc, 0x02, 0x03, 0x02)
            return
        problem = self.disk_problem()
        if problem:
            LOG.error("rejected association from %s (AE %r): %s", peer, calling, problem)
            self._reject(assoc, 0x02, 0x03, 0x01)  # transient: temporary congestion
            return

    def disk_problem(self) -> str:
        """Why the node cannot take data now (free disk under the watermark), or ''."""
        paths = [("state folder", self.config.state_dir)]
        if self.config.log.file is not None:
            paths.append(("log", self.config.log.file.parent))
        for what, path in paths:
            try:
                free = free_bytes(path)
            except OSError:
                continue
            if free < self.listen.min_free_disk:
                return (f"free disk {free // 2**20} MiB for the {what} ({path}) is below "
                        f"listen.min_free_disk ({self.listen.min_free_disk // 2**20} MiB)")
        return ""

    @staticmethod
    def _reject(assoc: Association, result: int, source: int, diagnostic: int) -> None:
        assoc.acse.send_reject(result, source, diagnostic)
        from pynetdicom import evt

        evt.trigger(assoc, evt.EVT_REJECTED, {})
        assoc.kill()

    def _on_accepted(self, event: Event) -> None:
        self._stats_of(event.assoc)

    def _stats_of(self, assoc: Association) -> _AssocStats:
        # The lean path (fast_store.py) may store the first instance before the
        # association's own thread has run EVT_ACCEPTED: whichever comes first creates it.
        with self._lock:
            stats = self._stats.get(id(assoc))
            if stats is None:
                calling = str(assoc.requestor.ae_title or "").strip()
                stats = self._stats[id(assoc)] = _AssocStats(calling)
            return stats

    def _on_closed(self, event: Event) -> None:
        with self._lock:
            stats = self._stats.pop(id(event.assoc), None)
        if stats and (stats.stored or stats.refused or stats.quarantined):
            LOG.info("association from %s %s: %d instances stored, %d quarantined on "
                     "arrival, %d refused", stats.calling_aet,
                     "released" if event.event.name == "EVT_RELEASED" else "aborted",
                     stats.stored, stats.quarantined, stats.refused)

    def _on_data(self, event: Event) -> None:
        """Cut off an instance that grows past listen.max_instance_size while it arrives,
        rather than spool it whole and refuse it afterwards."""
        with self._lock:
            stats = self._stats.get(id(event.assoc))
            if stats is None or stats.aborting:
                return
            stats.pending_bytes += len(event.data)
            if stats.pending_bytes <= self.cutoff_size:
                return
        self.oversized(event.assoc)
        # Not from this (the association's reader) thread: abort waits for it to stop.
        threading.Thread(target=event.assoc.abort, name="abort-oversized", daemon=True).start()

    @property
    def cutoff_size(self) -> int:
        return self.listen.max_instance_size + _SIZE_SLACK

    def oversized(self, assoc: Association) -> None:
        """Count and log an instance cut off while it arrives (its association is being
        aborted by the caller)."""
        stats = self._stats_of(assoc)
        with self._lock:
            if stats.aborting:
                return
            stats.aborting = True
            stats.refused += 1
        LOG.warning("aborted the association from %s: an instance exceeds "
                    "listen.max_instance_size (%s) while being received",
                    stats.calling_aet, _size(self.listen.max_instance_size))

    def _on_message(self, event: Event) -> None:
        with self._lock:
            stats = self._stats.get(id(event.assoc))
            if stats is not None:
                stats.pending_bytes = 0

    def _count(self, assoc: Association, field: str) -> None:
        with self._lock:
            stats = self._stats.get(id(assoc))
            if stats:
                setattr(stats, field, getattr(stats, field) + 1)

    # ------------------------------------------------------------------ services

    @staticmethod
    def _on_echo(event: Event) -> int:
        return STATUS_SUCCESS

    def open_reception(self) -> Reception:
        """A file for a data set about to arrive (the lean path's NamedTemporaryFile)."""
        return Reception(self.spool.incoming, self.listen.min_free_disk)

    def _on_store(self, event: Event) -> int:
        request = event.request
        reception = getattr(request, "_dataset_file", None)
        path = getattr(request, "_dataset_path", None)
        return self.store(Arrival(
            assoc=event.assoc, affected_sop_class=str(request.AffectedSOPClassUID or ""),
            affected_sop_instance=str(request.AffectedSOPInstanceUID),  # type: ignore[union-attr]
            abstract_syntax=str(event.context.abstract_syntax),
            transfer_syntax=str(event.context.transfer_syntax),
            path=None if path is None else Path(path),
            reception=reception if isinstance(reception, Reception) else None))

    def store(self, arrival: Arrival) -> int:
        """The C-STORE status for an arrived instance; a success only once it is durable."""
        with self._lock:
            self.served["lean" if arrival.lean else "pynetdicom"] += 1
        try:
            return self._store(arrival)
        except Exception as exc:  # never let a handler exception reach pynetdicom's logger
            LOG.error("C-STORE failed, instance refused: %s", short_reason(exc))
            self._count(arrival.assoc, "refused")
            return STATUS_OUT_OF_RESOURCES

    def _token(self, study_uid: str) -> str:
        """study_token, remembered for the studies seen last (a study's instances arrive
        together; the keyed hash is a measurable part of a small instance's cost)."""
        token = self._tokens.get(study_uid)
        if token is None:
            token = study_token(self.key, study_uid)
            with self._lock:
                if len(self._tokens) >= _TOKENS_KEPT:
                    self._tokens.clear()
                self._tokens[study_uid] = token
        return token

    def _store(self, arrival: Arrival) -> int:
        assoc = arrival.assoc
        calling = str(assoc.requestor.ae_title or "").strip()
        called = str(assoc.acceptor.ae_title or "").strip()
        reception = arrival.reception
        if reception is not None:
            reception.settle()  # pynetdicom closes its file only after this handler
        if arrival.path is None:
            LOG.warning("refused a C-STORE from %s: it has no data set", calling)
            self._count(assoc, "refused")
            return STATUS_CANNOT_UNDERSTAND
        if reception is not None and reception.failed:
            LOG.error("refused an instance from %s: %s", calling, reception.failed)
            self._count(assoc, "refused")
            return STATUS_OUT_OF_RESOURCES  # the receiving path deletes the partial file
        sop_class = arrival.affected_sop_class
        if sop_class != arrival.abstract_syntax:
            LOG.warning("refused an instance from %s: its SOP class is not the one of the "
                        "presentation context it was sent on", calling)
            self._count(assoc, "refused")
            return STATUS_DOES_NOT_MATCH
        received = arrival.path
        data = arrival.data
        size = len(data) if data is not None else received.stat().st_size
        if size > self.listen.max_instance_size:
            LOG.warning("refused an instance of %s from %s: larger than "
                        "listen.max_instance_size (%s)", _size(size), calling,
                        _size(self.listen.max_instance_size))
            self._count(assoc, "refused")
            return STATUS_OUT_OF_RESOURCES  # the receiving path deletes the partial file

        if data is None and size <= INLINE_MAX:
            # pynetdicom's path: a small file is read once, here, for both the header
            # (quick_header) and its commit with the journal row below.
            data = received.read_bytes()
        transfer_syntax = arrival.transfer_syntax
        relative = self.spool.new_relative_path()
        try:
            header = read_header(received, data)
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
            self._count(assoc, "quarantined")
            return STATUS_SUCCESS

        if header["SOPClassUID"] and header["SOPClassUID"] != sop_class:
            LOG.warning("refused an instance from %s: the data set's SOP Class UID differs "
                        "from the C-STORE request's", calling)
            self._count(assoc, "refused")
            return STATUS_DOES_NOT_MATCH
        token = self._token(header["StudyInstanceUID"])
        item = ReceivedInstance(
            study_uid=header["StudyInstanceUID"], study_token=token,
            sop_instance_uid=header["SOPInstanceUID"] or arrival.affected_sop_instance,
            sop_class_uid=header["SOPClassUID"] or sop_class, transfer_syntax=transfer_syntax,
            modality=header["Modality"], study_description=header["StudyDescription"],
            calling_aet=calling, called_aet=called, path=relative, size=size)
        # Renamed into the spool, then made durable before it is acknowledged
        # (node/commit.py): a small instance's bytes are committed with its row (one WAL
        # fsync shared with the other associations' instances; its file is fsync'd later in
        # the background); a larger one's file and folder are fsync'd here, in this
        # association's thread, then its row is committed the same grouped way. A crash
        # before the row leaves a spooled file no row names, which recovery deletes.
        final = self.spool.place(received, relative)
        try:
            if size <= INLINE_MAX:
                instance_id, superseded = self._group.record(
                    item, data if data is not None else final.read_bytes())
                self._hardener.added(size)
            else:
                fsync_file(final)
                fsync_dir(final.parent)
                instance_id, superseded = self._group.record(item)
        except Exception:
            remove_file(final)
            raise
        if superseded:
            for path in self.journal.drop_superseded(superseded):
                remove_file(self.config.state_dir / path)
        self.audit.write("received", study=token, instance=f"I{instance_id}",
                         calling_aet=calling, sop_class=item.sop_class_uid, bytes=size)
        self._count(assoc, "stored")
        return STATUS_SUCCESS
