"""A lean C-STORE path in the association's DUL thread, beside pynetdicom's own.

Why: with every fsync removed the node was only ~10% faster; a small instance costs 5-8 ms
of pynetdicom's Python (the P-DATA PDU and primitive objects, the DIMSE decode of the
command set and encode of the response through pydicom, the file meta written element by
element, the event/handler machinery, and the hop from the DUL thread to the
association's thread and back). For the one message a storage SCP sees all day, a plain
C-STORE-RQ on an accepted presentation context, this does the same work directly:

- the PDVs of a P-DATA-TF are walked here (GuardedDUL hands over the PDU body before
  pynetdicom decodes it); the command set (always implicit VR little endian, PS3.7 6.3.1)
  is read with a small fixed decoder;
- the data set fragments go to the same `Reception` file pynetdicom would write (free-disk
  watermark per write, ENOSPC -> 0xA700), behind the same file meta pynetdicom writes
  (create_file_meta + write_file_meta_info, encoded here; tests compare the bytes);
- `Receiver.store` decides the status, exactly as for pynetdicom's EVT_C_STORE handler,
  with the bytes just written (no read-back);
- the C-STORE-RSP is encoded here and sent from this thread (the only one that sends on
  the association's socket).

Everything else goes to pynetdicom untouched, and from then on the whole association does
(so two paths never answer out of order): C-ECHO and every other DIMSE message, a C-STORE
without a data set, on a context not accepted, whose SOP class is not its context's (the
normal path answers 0xA900), with a command set this decoder does not fully understand
(unknown or repeated elements, UIDs that are not plain valid UIDs: pynetdicom decides,
0xC000 family or abort as before), a peer with a tiny maximum PDU, and any association
whose DUL is not plainly in Sta6. The PDVs held while the command set was incomplete are
handed to pynetdicom as one P-DATA-TF, in order, so nothing is lost by the detour.

Once a message is taken here there is no way back: a command fragment or another context
in the middle of its data set, or a PDV whose length does not fit its PDU, aborts the
association (PS3.8 forbids interleaving; pynetdicom would have stored garbage).

This replaces, for that one message, pynetdicom 3.0.4's DULServiceProvider (P-DATA
indication), DIMSEMessage.decode_msg/encode_msg, Association._serve_request and
StorageServiceClass.SCP. Upstream report: issue 17's closing notes.
"""

from __future__ import annotations

import contextlib
import logging
import re
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pynetdicom.association import Association

    from dicom_deid.node.receiver import Arrival, Reception

LOG = logging.getLogger(__name__)

# Command set elements (group 0000) a C-STORE-RQ taken here may carry.
_GROUP_LENGTH, _AFFECTED_CLASS, _COMMAND_FIELD, _MESSAGE_ID = 0x0000, 0x0002, 0x0100, 0x0110
_PRIORITY, _DATA_SET_TYPE, _AFFECTED_INSTANCE = 0x0700, 0x0800, 0x1000
_ALLOWED = frozenset({_GROUP_LENGTH, _AFFECTED_CLASS, _COMMAND_FIELD, _MESSAGE_ID, _PRIORITY,
                      _DATA_SET_TYPE, _AFFECTED_INSTANCE})
_REQUIRED = _ALLOWED - {_GROUP_LENGTH}
_C_STORE_RQ, _C_STORE_RSP, _NO_DATA_SET = 0x0001, 0x8001, 0x0101
_SUCCESS = 0x0000  # receiver.STATUS_SUCCESS: stored or quarantined, renamed into the spool
# A command set is ~100-200 bytes; held beyond this, it is not a plain C-STORE.
MAX_COMMAND = 64 * 1024
# The peer's maximum PDU must take the response (~200 bytes) in one PDV.
_MIN_PEER_PDU = 1024
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_KEEP_MAX = 1024 * 1024  # bytes kept for the journal (commit.INLINE_MAX)
# Longest the first message waits for pynetdicom to mark its association established.
_ESTABLISH_WAIT = 2.0


class StoreSink(Protocol):
    """What the lean path needs from the receiver (node/receiver.py)."""

    @property
    def cutoff_size(self) -> int: ...  # bytes past which an arriving instance is cut off

    def open_reception(self) -> Reception: ...

    def store(self, arrival: Arrival) -> int: ...

    def oversized(self, assoc: Association) -> None: ...


def plain_uid(raw: bytes) -> str | None:
    """The UID as pydicom decodes it (trailing NULs and spaces dropped), or None if it is
    anything but a plain conformant UID (those go to pynetdicom, which decides)."""
    try:
        text = raw.rstrip(b"\0 ").decode("ascii")
    except UnicodeDecodeError:
        return None
    if not 0 < len(text) <= 64 or not _UID.fullmatch(text):
        return None
    return text


def _ui(uid: str) -> bytes:
    data = uid.encode("ascii")
    return data + b"\0" if len(data) % 2 else data


def _implicit(elements: list[tuple[int, bytes]]) -> bytes:
    body = b"".join(struct.pack("<HHL", 0, tag, len(value)) + value for tag, value in elements)
    return struct.pack("<HHLL", 0, 0, 4, len(body)) + body


def store_response(sop_class: str, message_id: int, status: int, sop_instance: str) -> bytes:
    """A C-STORE-RSP command set as pynetdicom encodes it (implicit VR little endian)."""
    return _implicit([
        (_AFFECTED_CLASS, _ui(sop_class)),
        (_COMMAND_FIELD, struct.pack("<H", _C_STORE_RSP)),
        (0x0120, struct.pack("<H", message_id)),  # Message ID Being Responded To
        (_DATA_SET_TYPE, struct.pack("<H", _NO_DATA_SET)),
        (0x0900, struct.pack("<H", status)),
        (_AFFECTED_INSTANCE, _ui(sop_instance)),
    ])


def _explicit(tag: int, vr: bytes, value: bytes) -> bytes:
    if vr == b"OB":
        return struct.pack("<HH2sHL", 2, tag, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", 2, tag, vr, len(value)) + value


def file_preamble(sop_class: str, sop_instance: str, transfer_syntax: str) -> bytes:
    """128-byte preamble, 'DICM' and the file meta group, byte for byte what pynetdicom
    writes before a chunked C-STORE data set (dsutils.create_file_meta with its own
    implementation UID and version, pydicom's write_file_meta_info)."""
    from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

    version = PYNETDICOM_IMPLEMENTATION_VERSION.encode("ascii")
    if len(version) % 2:
        version += b" "
    body = b"".join([
        _explicit(0x0001, b"OB", b"\x00\x01"),
        _explicit(0x0002, b"UI", _ui(sop_class)),
        _explicit(0x0003, b"UI", _ui(sop_instance)),
        _explicit(0x0010, b"UI", _ui(transfer_syntax)),
        _explicit(0x0012, b"UI", _ui(str(PYNETDICOM_IMPLEMENTATION_UID))),
        _explicit(0x0013, b"SH", version),
    ])
    return b"\0" * 128 + b"DICM" + _explicit(0x0000, b"UL", struct.pack("<L", len(body))) + body


def parse_command(data: bytes) -> dict[int, bytes] | None:
    """Group 0000 elements of an implicit VR LE command set, or None if it is not one this
    decoder takes whole (a tag outside group 0000, repeated, or a length past the end)."""
    fields: dict[int, bytes] = {}
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < 8:
            return None
        group, element, length = struct.unpack_from("<HHL", data, pos)
        pos += 8
        if group != 0 or element in fields or length > end - pos:
            return None
        fields[element] = data[pos:pos + length]
        pos += length
    return fields


@dataclass
class StoreCommand:
    """A C-STORE-RQ this path takes."""

    context_id: int
    message_id: int
    sop_class: str
    sop_instance: str
    transfer_syntax: str


def _us(fields: dict[int, bytes], tag: int) -> int | None:
    value = fields.get(tag)
    return struct.unpack("<H", value)[0] if value is not None and len(value) == 2 else None


def plain_store(fields: dict[int, bytes], context_id: int, assoc: Any) -> StoreCommand | None:
    """The C-STORE-RQ if pynetdicom would serve it with StorageServiceClass.SCP on this
    context, its SOP class that of the context and a data set to follow; else None."""
    from pynetdicom.service_class import StorageServiceClass
    from pynetdicom.sop_class import uid_to_service_class

    if set(fields) - _ALLOWED or not set(fields) >= _REQUIRED:
        return None
    if _us(fields, _COMMAND_FIELD) != _C_STORE_RQ or _us(fields, _PRIORITY) not in (0, 1, 2):
        return None
    data_set_type, message_id = _us(fields, _DATA_SET_TYPE), _us(fields, _MESSAGE_ID)
    if data_set_type is None or data_set_type == _NO_DATA_SET or message_id is None:
        return None
    group_length = fields.get(_GROUP_LENGTH)
    if group_length is not None and len(group_length) != 4:
        return None
    sop_class = plain_uid(fields[_AFFECTED_CLASS])
    sop_instance = plain_uid(fields[_AFFECTED_INSTANCE])
    if sop_class is None or sop_instance is None:
        return None
    context = assoc._accepted_cx.get(context_id)
    if context is None or str(context.abstract_syntax) != sop_class:
        return None  # pynetdicom aborts (unknown context) or the handler answers 0xA900
    if uid_to_service_class(sop_class) is not StorageServiceClass:
        return None
    if sop_class in assoc.acceptor.accepted_common_extended:
        return None
    peer_max = assoc.requestor.maximum_length
    if peer_max and peer_max < _MIN_PEER_PDU:
        return None
    return StoreCommand(context_id, message_id, sop_class, sop_instance,
                        str(context.transfer_syntax[0]))


class _Incoming:
    """The data set of a C-STORE taken here, arriving."""

    def __init__(self, command: StoreCommand, reception: Reception, head: bytes):
        self.command = command
        self.reception = reception
        self.kept: bytearray | None = bytearray(head)  # dropped past _KEEP_MAX
        self.received = 0
        reception.write(head)


class FastStore:
    """Per association: takes plain C-STOREs off the PDU stream (see the module
    docstring). `feed` is called by GuardedDUL, in its thread, with every P-DATA-TF body
    while `enabled`; it returns the PDUs pynetdicom must still process, in order."""

    def __init__(self, dul: Any, sink: StoreSink):
        self.dul = dul
        self.sink = sink
        self.enabled = True
        self.taken = 0  # C-STOREs served here (tests, diagnostics)
        self._held: list[bytes] = []  # PDV items of an incomplete command set
        self._command = bytearray()
        self._context_id = -1
        self._incoming: _Incoming | None = None
        self._dead = False  # aborted here: whatever still arrives is dropped

    # ------------------------------------------------------------------ PDVs

    def feed(self, body: bytes | bytearray) -> list[bytes]:
        if self._dead:
            return []
        view = memoryview(body)
        off, end = 0, len(body)
        while off < end:
            if end - off < 6:
                return self._malformed(body, off)
            length = int.from_bytes(view[off:off + 4], "big")
            item_end = off + 4 + length
            if length < 2 or item_end > end:
                return self._malformed(body, off)
            context_id, control = view[off + 4], view[off + 5]
            incoming = self._incoming
            if incoming is not None:
                if control & 1 or context_id != incoming.command.context_id:
                    self._protocol_error("a PDV of another message or presentation context "
                                         "inside a C-STORE data set")
                    return []
                self._data(incoming, view[off + 6:item_end])
                if self._dead:
                    return []
                if control & 2:
                    self._incoming = None
                    self._complete(incoming)
                off = item_end
                continue
            if not control & 1 or (self._held and context_id != self._context_id):
                return self._fallback(body, off)  # a data set with no command: pynetdicom's
            self._held.append(bytes(view[off:item_end]))
            self._command += view[off + 6:item_end]
            self._context_id = context_id
            if len(self._command) > MAX_COMMAND:
                return self._fallback(body, item_end)
            if control & 2:
                command = self._decide()
                if command is None:
                    return self._fallback(body, item_end)
                try:
                    reception = self.sink.open_reception()
                except OSError:
                    return self._fallback(body, item_end)  # pynetdicom meets the same error
                self._held, self._command = [], bytearray()
                self._incoming = _Incoming(command, reception, file_preamble(
                    command.sop_class, command.sop_instance, command.transfer_syntax))
            off = item_end
        return []

    def _established(self) -> bool:
        """Whether pynetdicom has marked the association established, waiting (bounded)
        for it: it does so only after the A-ASSOCIATE-AC is sent and the EVT_ACCEPTED
        handlers have run (acse._negotiate_as_acceptor), so a quick peer's first P-DATA
        can arrive in between. Its own path would queue that message until then."""
        assoc = self.dul.assoc
        deadline = time.monotonic() + _ESTABLISH_WAIT
        while not assoc.is_established:
            if assoc.is_aborted or assoc.is_released or time.monotonic() > deadline:
                return False
            time.sleep(0.001)
        return True

    def _decide(self) -> StoreCommand | None:
        dul, assoc = self.dul, self.dul.assoc
        if not self._established():
            return None
        # Only while pynetdicom has nothing of its own in flight on this association.
        if (dul.state_machine.current_state != "Sta6" or not assoc.is_established
                or assoc.is_aborted or assoc.is_released or assoc._sent_release
                or not dul.event_queue.empty() or not dul.to_user_queue.empty()):
            return None
        dimse = getattr(assoc, "dimse", None)
        if dimse is None or dimse.message is not None or not dimse.msg_queue.empty():
            return None
        fields = parse_command(bytes(self._command))
        if fields is None:
            return None
        return plain_store(fields, self._context_id, assoc)

    def _fallback(self, body: bytes | bytearray, off: int) -> list[bytes]:
        """pynetdicom takes over the association from here: the held command PDVs and
        the rest of this PDU, as one P-DATA-TF."""
        self.enabled = False
        payload = b"".join(self._held) + bytes(body[off:])
        self._held, self._command = [], bytearray()
        if not payload:
            return []
        return [struct.pack(">BBL", 0x04, 0, len(payload)) + payload]

    def _malformed(self, body: bytes | bytearray, off: int) -> list[bytes]:
        if self._incoming is None:
            return self._fallback(body, off)  # pynetdicom's decoder refuses it: abort
        self._protocol_error("a PDV whose length does not fit its PDU")
        return []

    def _protocol_error(self, what: str) -> None:
        self._drop_incoming()
        self._dead = True
        self.enabled = False
        self.dul._protocol_error(what)

    def close(self) -> None:
        """The association is over: a data set still arriving is removed (it was never
        acknowledged)."""
        self._dead = True
        self.enabled = False
        self._drop_incoming()

    def _drop_incoming(self) -> None:
        incoming, self._incoming = self._incoming, None
        if incoming is not None:
            with contextlib.suppress(OSError):
                incoming.reception.close()
            with contextlib.suppress(OSError):
                Path(incoming.reception.name).unlink()

    # ------------------------------------------------------------------ the data set

    def _data(self, incoming: _Incoming, data: memoryview) -> None:
        incoming.received += len(data)
        if incoming.received > self.sink.cutoff_size:
            # The same cut-off as Receiver._on_data on pynetdicom's path.
            self.sink.oversized(self.dul.assoc)
            self._drop_incoming()
            self._dead = True
            self.enabled = False
            # Not from this thread: abort() waits for the DUL thread to stop.
            threading.Thread(target=self.dul.assoc.abort, name="abort-oversized",
                             daemon=True).start()
            return
        incoming.reception.write(data)
        kept = incoming.kept
        if kept is not None:
            if len(kept) + len(data) > _KEEP_MAX:
                incoming.kept = None
            else:
                kept += data

    def _complete(self, incoming: _Incoming) -> None:
        from dicom_deid.node.receiver import Arrival

        command, reception = incoming.command, incoming.reception
        reception.close()
        assoc = self.dul.assoc
        # Paused while the instance is stored, as it is while pynetdicom's handler runs in
        # it: its network_timeout check must not fire during a long fsync (abort() and
        # kill() still resume it).
        assoc._reactor_checkpoint.clear()
        status = None
        try:
            status = self.sink.store(Arrival(
                assoc=assoc, affected_sop_class=command.sop_class,
                affected_sop_instance=command.sop_instance,
                abstract_syntax=command.sop_class, transfer_syntax=command.transfer_syntax,
                path=Path(reception.name), reception=reception,
                data=bytes(incoming.kept) if incoming.kept is not None else None, lean=True))
        finally:
            assoc._reactor_checkpoint.set()
            if status != _SUCCESS:  # a success was renamed into the spool (no unlink then)
                with contextlib.suppress(OSError):
                    Path(reception.name).unlink()
        self.taken += 1
        if not assoc.is_established:
            return  # aborted meanwhile: pynetdicom sends nothing either
        rsp = store_response(command.sop_class, command.message_id, status,
                             command.sop_instance)
        item = struct.pack(">LBB", len(rsp) + 2, command.context_id, 0x03) + rsp
        self.dul.socket.send(struct.pack(">BBL", 0x04, 0, len(item)) + item)
