"""The listener's transport, hardened for a hostile network.

This wraps pynetdicom 3.0's transport (subclasses of ThreadedAssociationServer,
RequestHandler and DULServiceProvider) because, as shipped, one client can stop it:

- AssociationServer.get_request() runs the TLS handshake inside the accept loop with no
  deadline, so a socket that never sends a ClientHello blocks every other client, and the
  server's shutdown (SIGTERM).
- DULServiceProvider._read_pdu_data() reads a PDU with blocking reads that have no overall
  deadline (3 bytes of a header, or a byte every 2 s, hold a thread and an association slot
  forever), and buffers as many bytes as the PDU's length field says before looking at
  them (0xFFFFFFFF: 4 GiB), whatever maximum PDU length was negotiated.
- Connections that have not been accepted yet count against max_associations, so
  unauthenticated sockets lock out the senders the node is for.
- RequestHandler._create_association() deep-copies the server's supported contexts for
  every connection: with every storage class x every transfer syntax that is ~6,000 UIDs,
  each re-validated by pydicom's regex, 0.3-1.5 s of CPU (and the GIL) per connection
  before its first byte is read; _SupportedContexts makes the copy a cheap one.
- Both threads of an association poll: the DUL sleeps 1 ms whenever it finds nothing to do
  and the association's reactor sleeps 1 ms per loop, so each open association wakes its
  process 2,000 times a second (measured: 4 idle associations cost 0.29 CPU-s per s, on a
  receive that needs ~2 CPU-s for 200 small instances). GuardedDUL waits on its socket
  and a wake-up pipe instead, and ReactorGate makes the association's reactor wait for a
  DIMSE message; both still look at their timers at least every 20 ms.

Here the handshake runs in the connection's own thread; one watchdog thread shuts down
any connection past its deadline (accept to A-ASSOCIATE-AC, first to last byte of a PDU);
a PDU longer than allowed in its state is refused from its header, before anything is
buffered; connections not yet accepted have their own pool, per source address too,
where the oldest gives way to a new one. Upstream report: issue 17's closing notes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import socket
import ssl
import struct
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dul import _PDU_TYPES, DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ, A_ASSOCIATE_AC
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from dicom_deid.node.assoc_memo import context_copies, decode_associate_rq, encode_associate_ac
from dicom_deid.node.fast_store import FastStore, StoreSink
from dicom_deid.node.logs import RateLimiter

LOG = logging.getLogger(__name__)

# An A-ASSOCIATE-RQ with the 128 presentation contexts allowed, each proposing ten
# transfer syntaxes, is about 100 KiB; nothing else a requestor sends before it is
# accepted needs more than a few bytes.
MAX_ASSOCIATE_RQ = 256 * 1024
MAX_CONTROL_PDU = 1024
# A DIMSE command set, or a data set that is not a C-STORE's (those go to a file), is
# held in memory until complete.
MAX_MESSAGE_MEMORY = 1024 * 1024
# Complete DIMSE messages waiting for the association thread: beyond this the connection
# is not read (TCP pushes back) rather than queue open temporary files without bound.
MAX_QUEUED_MESSAGES = 8
_WATCHDOG_EVERY = 0.2
# Longest a reactor thread blocks without new work: its timers (ARTIM, idle) and the
# association's release/abort checks are seen at least this often.
_IDLE_WAIT = 0.02


@dataclass(frozen=True)
class Limits:
    accept_timeout: float = 10.0
    pdu_timeout: float = 30.0
    max_pdu: int = 262144
    max_pending: int = 64
    max_pending_per_address: int = 8


class Connection:
    """One TCP connection, from accept to close."""

    def __init__(self, sock: socket.socket, address: str, port: int):
        self.sock = sock
        self.raw = sock  # keeps id(raw), the server's key for this connection, from reuse
        self.address = address
        self.port = port
        self.accepted_at = time.monotonic()
        self.established = False  # an A-ASSOCIATE-AC was sent
        self.reading_since: float | None = None  # a PDU is partly read
        self.closed = False
        self.killed_because = ""

    @property
    def peer(self) -> str:
        return f"{self.address}:{self.port}"

    def kill(self, because: str) -> None:
        """Unblock whatever thread reads, writes or handshakes on this connection."""
        if not self.killed_because:
            self.killed_because = because
        with contextlib.suppress(OSError):
            # socket.socket's own shutdown: SSLSocket.shutdown would drop its SSL object
            # under the feet of a thread still reading through it.
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)


class _UserQueue(queue.Queue):
    """The DUL's to_user_queue (primitives for the association's thread: A-RELEASE-RQ,
    A-ABORT, ...). A put also wakes the association's reactor, which ReactorGate parks on
    the DIMSE message queue: an A-RELEASE-RQ was otherwise answered only when that wait
    ran out (up to _IDLE_WAIT, 20 ms, on every association's release; the sender waits
    for the A-RELEASE-RP before it exits)."""

    def __init__(self, assoc: Association):
        super().__init__()
        self._assoc = assoc

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        dimse = getattr(self._assoc, "dimse", None)
        if dimse is not None:
            messages = dimse.msg_queue
            with messages.not_empty:
                messages.not_empty.notify_all()


class GuardedDUL(DULServiceProvider):
    """pynetdicom's DUL with reads bounded in size and time (see the module docstring)."""

    def __init__(self, assoc: Association, conn: Connection, server: GuardedServer):
        super().__init__(assoc)
        self.to_user_queue = _UserQueue(assoc)
        self.conn = conn
        self.server = server
        self._poisoned = False
        sink = server.fast_store
        # Plain C-STOREs are served in this thread (fast_store.py); all else by pynetdicom.
        self.fast: FastStore | None = FastStore(self, sink) if sink is not None else None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)

    def run_reactor(self) -> None:
        try:
            self._reactor()
        finally:
            if self.fast is not None:
                self.fast.close()
            self.server.forget(self.conn)
            if not self.conn.established:
                # pynetdicom's acceptor thread waits listen.acse_timeout for an A-ASSOCIATE
                # that a dropped connection never sends (None reads as that timeout, so it
                # ends now). Until then it counts against AE.maximum_associations: a few
                # bursts of hostile sockets locked real senders out ("Local Limit Exceeded").
                self.to_user_queue.put(None)  # type: ignore[arg-type]
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _reactor(self) -> None:
        """pynetdicom 3.0.4's DULServiceProvider.run_reactor, with its 1 ms sleep between
        idle loops replaced by `_wait_for_work` (and its traceback log by one PHI-free
        line)."""
        self._idle_timer.start()
        idle = False
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
            if idle:
                self._wait_for_work()
            if self._kill_thread:
                break
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                if self._process_recv_primitive():  # something to send
                    pass
                elif self._is_transport_event():  # something received
                    self._idle_timer.restart()
            except Exception as exc:
                LOG.error("association from %s aborted: %s in the DUL reactor",
                          self.conn.peer, type(exc).__name__)
                abort = A_ABORT_RQ()
                abort.source, abort.reason_diagnostic = 0x02, 0x00
                with contextlib.suppress(Exception):
                    self.socket.send(abort.encode())  # type: ignore[union-attr]
                self.assoc.is_aborted = True
                self.assoc.is_established = False
                self.assoc._kill = True
                self._kill_thread = True
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                idle = True
                continue
            self.state_machine.do_action(event)
            idle = False

    def _wait_for_work(self) -> None:
        """Until the peer sends something, the association hands us a primitive to send
        (send_pdu writes the wake-up pipe), or _IDLE_WAIT passes."""
        sock = getattr(self.socket, "socket", None)
        if sock is None or sock.fileno() < 0:
            time.sleep(0.001)  # closed: pynetdicom's own pace until the events settle
            return
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return  # decrypted bytes already buffered: select would not see them
        watched = [self._wake_r]
        dimse = getattr(self.assoc, "dimse", None)
        if dimse is None or dimse.msg_queue.qsize() < MAX_QUEUED_MESSAGES:
            watched.append(sock)  # else back-pressure: the socket is not read for now
        try:
            ready, _, _ = select.select(watched, [], [], _IDLE_WAIT)
        except (OSError, ValueError):
            time.sleep(0.001)
            return
        if self._wake_r in ready:
            with contextlib.suppress(OSError):
                os.read(self._wake_r, 4096)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full (already awake) or closed
            os.write(self._wake_w, b"\0")

    def send_pdu(self, primitive: Any) -> None:
        super().send_pdu(primitive)
        self._wake()

    def kill_dul(self) -> None:
        super().kill_dul()
        self._wake()

    def _send(self, pdu: Any) -> None:
        if isinstance(pdu, A_ASSOCIATE_AC):
            self.conn.established = True
            if self.socket is not None:
                # pynetdicom's _send, with the AC encoded by node/assoc_memo.py.
                self.socket.send(encode_associate_ac(pdu))
                evt.trigger(self.assoc, evt.EVT_PDU_SENT, {"pdu": pdu})
                return
        super()._send(pdu)

    def _is_transport_event(self) -> bool:
        dimse = getattr(self.assoc, "dimse", None)
        if dimse is not None and dimse.msg_queue.qsize() >= MAX_QUEUED_MESSAGES:
            return False  # back-pressure: the peer waits while the handler catches up
        return super()._is_transport_event()

    def _limit(self, pdu_type: int) -> int:
        if pdu_type == 0x01:
            return 0 if self.conn.established else MAX_ASSOCIATE_RQ
        if pdu_type == 0x04:
            return self.server.limits.max_pdu if self.conn.established else MAX_CONTROL_PDU
        return MAX_CONTROL_PDU

    def _protocol_error(self, what: str) -> None:
        self.server.log_peer_problem(self.conn, what)
        self._poisoned = True
        self.event_queue.put("Evt19")  # unrecognised or invalid PDU: A-ABORT, then close

    def _read_pdu_data(self) -> None:
        sock = self.socket
        if sock is None:
            return
        if self._poisoned:
            # After a protocol error nothing more is read, decoded or logged.
            sock.close()
            return
        self.conn.reading_since = time.monotonic()
        try:
            header = sock.recv(6)
            if len(header) < 6:
                self.event_queue.put("Evt17")
                return
            pdu_type, _, length = struct.unpack(">BBL", header)
            if bytes([pdu_type]) not in _PDU_TYPES:
                self._protocol_error(f"unknown PDU type 0x{pdu_type:02X}")
                return
            limit = self._limit(pdu_type)
            if length > limit:
                self._protocol_error(
                    f"PDU type 0x{pdu_type:02X} of {length} bytes, more than the "
                    f"{limit} allowed {'here' if self.conn.established else 'before accept'}")
                return
            if pdu_type == 0x04 and self._message_memory() + length > MAX_MESSAGE_MEMORY:
                self._protocol_error("a DIMSE message held in memory exceeds "
                                     f"{MAX_MESSAGE_MEMORY} bytes")
                return
            body = self._recv_exactly(sock, length)
        except (OSError, ValueError):
            # Timed out, reset, or shut down by the watchdog: the transport is gone.
            self.event_queue.put("Evt17")
            return
        finally:
            self.conn.reading_since = None
        if len(body) != length:
            self.event_queue.put("Evt17")
            return
        fast = self.fast
        if pdu_type == 0x04 and fast is not None and fast.enabled and self.conn.established:
            for pdu_bytes in fast.feed(body):  # what the lean path leaves to pynetdicom
                self._hand_over(pdu_type, bytearray(pdu_bytes))
            return
        self._hand_over(pdu_type, bytearray(header) + body)

    def _decode_pdu(self, bytestream: bytearray) -> tuple[Any, str]:
        """pynetdicom's, with an A-ASSOCIATE-RQ's items decoded once per distinct
        request (node/assoc_memo.py)."""
        if bytestream[:1] != b"\x01":
            return super()._decode_pdu(bytestream)
        data = bytes(bytestream)
        evt.trigger(self.assoc, evt.EVT_DATA_RECV, {"data": data})
        pdu = decode_associate_rq(data)
        evt.trigger(self.assoc, evt.EVT_PDU_RECV, {"pdu": pdu})
        return pdu, _PDU_TYPES[b"\x01"][1]

    def _hand_over(self, pdu_type: int, data: bytearray) -> None:
        """A whole PDU to pynetdicom's state machine."""
        try:
            pdu, event = self._decode_pdu(data)
        except Exception as exc:
            self._protocol_error(f"PDU type 0x{pdu_type:02X} cannot be decoded "
                                 f"({type(exc).__name__})")
            return
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)

    @staticmethod
    def _recv_exactly(sock: Any, length: int) -> bytearray:
        """Up to `length` bytes (fewer if the peer closed) into one buffer, in large reads:
        pynetdicom's AssociationSocket.recv reads 4 KiB at a time and extends a bytearray."""
        buffer = bytearray(length)
        view = memoryview(buffer)
        raw = sock.socket
        if raw is None:
            raise OSError("the connection is closed")
        got = 0
        while got < length:
            n = raw.recv_into(view[got:], min(length - got, 1 << 20))
            if not n:
                break
            got += n
        view.release()
        if got < length:
            del buffer[got:]
        return buffer

    def _message_memory(self) -> int:
        message = getattr(getattr(self.assoc, "dimse", None), "message", None)
        if message is None:
            return 0
        held = message.encoded_command_set.tell()
        if getattr(message, "_data_set_file", None) is None:
            held += message.data_set.tell()
        return held


class ReactorGate:
    """Stands in for Association._reactor_checkpoint (a threading.Event). The acceptor's
    reactor sleeps 1 ms, then waits on the checkpoint (set unless a user call has paused
    the reactor), then polls for a DIMSE message, release, abort: here wait() also blocks
    until a DIMSE message is queued, or _IDLE_WAIT passes (release, abort and the idle
    timer are still seen within it). The checkpoint's own wait comes last, as before."""

    def __init__(self, assoc: Association):
        self._assoc = assoc
        self._event = threading.Event()
        self._event.set()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        dimse = getattr(self._assoc, "dimse", None)
        if dimse is not None and self._event.is_set():
            messages = dimse.msg_queue
            with messages.not_empty:  # notified by every put
                if not messages._qsize() and not self._assoc.dul.to_user_queue.qsize():
                    messages.not_empty.wait(_IDLE_WAIT)
        return self._event.wait(timeout)


class GuardedRequestHandler(RequestHandler):
    server: GuardedServer

    conn: Connection

    def handle(self) -> None:
        conn = self.conn = self.server.connection_of(self.request)
        if self.server.ssl_context is not None:
            raw = self.request
            raw.settimeout(self.server.limits.accept_timeout)
            try:
                # Wrapped first, handshake after: wrapping detaches `raw`, so the watchdog
                # must hold the TLS socket to be able to shut it down mid-handshake.
                tls = self.server.ssl_context.wrap_socket(raw, server_side=True,
                                                          do_handshake_on_connect=False)
                conn.sock = tls
                if conn.killed_because:
                    raise TimeoutError(conn.killed_because)
                tls.do_handshake()
            except (OSError, ValueError) as exc:
                if not conn.killed_because:  # else the watchdog has said why
                    self.server.log_peer_problem(
                        conn, f"TLS handshake failed ({_tls_reason(exc)})")
                self.server.forget(conn)  # closes conn.sock, raw or wrapped
                with contextlib.suppress(OSError):
                    raw.close()
                return
            self.request = tls
            if conn.killed_because:  # the watchdog fired as the handshake completed
                conn.kill(conn.killed_because)
        # A backstop under the watchdog: no single read or write blocks past a PDU's time.
        self.request.settimeout(self.server.limits.pdu_timeout)
        try:
            super().handle()
        except Exception:
            self.server.forget(conn)
            raise

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        _drop_standard_log_handlers(assoc)
        old = assoc.dul
        assoc.dul = GuardedDUL(assoc, self.conn, self.server)
        assoc.dul.socket = old.socket
        assoc._reactor_checkpoint = ReactorGate(assoc)  # type: ignore[assignment]
        while not old.event_queue.empty():  # Evt5, queued when the socket was wrapped
            assoc.dul.event_queue.put(old.event_queue.get())
        # The timers live on the DUL: apply the association's settings to the new one.
        assoc.acse_timeout = assoc.acse_timeout
        assoc.network_timeout = assoc.network_timeout
        return assoc


def oldest_to_evict(pending: list[Any], address: str, per_address: int,
                    total: int) -> list[Any]:
    """Which connections not yet accepted (``pending``, oldest first, each with an
    ``address``) give way to a new one from ``address``: the oldest from that address while
    ``per_address`` are waiting, then the oldest of all while ``total`` are. A sender
    completes its handshake in milliseconds; a squatter is the one that has been waiting."""
    pending = list(pending)
    same = [c for c in pending if c.address == address]
    evicted = []
    while len(same) >= per_address:
        victim = same.pop(0)
        pending.remove(victim)
        evicted.append(victim)
    while len(pending) >= total:
        evicted.append(pending.pop(0))
    return evicted


def _drop_standard_log_handlers(target: Any) -> None:
    """Unbind pynetdicom's standard PDU/DIMSE log handlers (bound per server and per
    association while _config.LOG_HANDLER_LEVEL is "standard"). They build a description
    of every PDU and DIMSE message on the receiving thread, and the node drops it all:
    pynetdicom is held at WARNING (logs.setup_logging: below it, it logs identifiers).
    Here, not through LOG_HANDLER_LEVEL, which is process-wide (the forwarder's SCU)."""
    from pynetdicom import _handlers, evt

    for event, handler in ((evt.EVT_DIMSE_RECV, _handlers.standard_dimse_recv_handler),
                           (evt.EVT_DIMSE_SENT, _handlers.standard_dimse_sent_handler),
                           (evt.EVT_PDU_RECV, _handlers.standard_pdu_recv_handler),
                           (evt.EVT_PDU_SENT, _handlers.standard_pdu_sent_handler)):
        with contextlib.suppress(ValueError, KeyError):
            target.unbind(event, handler)


def _tls_reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, ssl.SSLError):
        return exc.reason or type(exc).__name__
    return type(exc).__name__


class _SupportedContexts(list):
    """The server's supported presentation contexts; deepcopy() of it (done by pynetdicom
    for every accepted connection, so that negotiation cannot change the server's list)
    copies each context and its transfer syntax list, the one mutable member a context has
    (context id, roles and result are ints/bools, UIDs are immutable str), instead of
    rebuilding, and re-validating, every UID."""

    def __deepcopy__(self, memo: dict) -> list:
        return context_copies(self)


class GuardedServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with the handshake off the accept loop, deadlines, and
    a separate, per-address pool for connections not accepted yet."""

    daemon_threads = True  # a stuck handler never holds the process at exit

    def __init__(self, *args: Any, limits: Limits, **kwargs: Any):
        self.limits = limits
        self._conns: OrderedDict[int, Connection] = OrderedDict()  # by id() of the raw socket
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._rate = RateLimiter(burst=5, window=60.0)
        # Set by the receiver before serving: plain C-STOREs skip pynetdicom's DIMSE layer.
        self.fast_store: StoreSink | None = None
        kwargs.setdefault("request_handler", GuardedRequestHandler)
        super().__init__(*args, **kwargs)
        self.contexts = _SupportedContexts(self.contexts)
        _drop_standard_log_handlers(self)
        self._watchdog = threading.Thread(target=self._watch, name="node-deadlines",
                                          daemon=True)
        self._watchdog.start()

    # ------------------------------------------------------------------ accept

    def get_request(self) -> tuple[socket.socket, Any]:
        # No TLS here: the handshake runs in the connection's thread (GuardedRequestHandler).
        client, address = self.socket.accept()  # type: ignore[union-attr]
        with contextlib.suppress(OSError):
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client, address

    def verify_request(self, request: Any, client_address: Any) -> bool:
        conn = Connection(request, str(client_address[0]), int(client_address[1]))
        with self._lock:
            if self._stopping.is_set():
                return False
            pending = [c for c in self._conns.values() if not c.established and not c.closed]
            evicted: list[Connection] = oldest_to_evict(
                pending, conn.address, self.limits.max_pending_per_address,
                self.limits.max_pending)
            self._conns[id(request)] = conn
        for victim in evicted:
            victim.closed = True
            victim.kill("evicted: too many connections not yet accepted")
        if evicted:
            self._log_rate(conn.address, "connections from %s not accepted in time were "
                           "dropped to admit new ones (listen.max_pending_connections / "
                           "max_pending_per_address)", conn.address)
        return True

    def connection_of(self, request: Any) -> Connection:
        with self._lock:
            return self._conns[id(request)]

    def forget(self, conn: Connection) -> None:
        conn.closed = True
        with self._lock:
            for key in [k for k, c in self._conns.items() if c is conn]:
                del self._conns[key]
        with contextlib.suppress(OSError):
            conn.sock.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver would print a traceback to stderr (it may quote peer data).
        LOG.error("connection from %s:%s failed in the server", *client_address[:2])

    def connections(self) -> list[Connection]:
        with self._lock:
            return list(self._conns.values())

    def established_from(self, address: str) -> int:
        return sum(1 for c in self.connections()
                   if c.address == address and c.established and not c.closed)

    # ------------------------------------------------------------------ deadlines

    def _watch(self) -> None:
        while not self._stopping.wait(_WATCHDOG_EVERY):
            now = time.monotonic()
            for conn in self.connections():
                if conn.closed:
                    continue
                if not conn.established and now - conn.accepted_at > self.limits.accept_timeout:
                    conn.kill(f"not accepted within listen.accept_timeout "
                              f"({self.limits.accept_timeout:g} s)")
                    self.log_peer_problem(conn, conn.killed_because)
                    conn.closed = True
                    continue
                since = conn.reading_since
                if since is not None and now - since > self.limits.pdu_timeout:
                    conn.kill(f"a PDU took longer than listen.pdu_timeout "
                              f"({self.limits.pdu_timeout:g} s)")
                    self.log_peer_problem(conn, conn.killed_because)
                    conn.closed = True

    # ------------------------------------------------------------------ logging

    def log_peer_problem(self, conn: Connection, what: str) -> None:
        self._log_rate(conn.address, "dropped connection from %s: %s", conn.peer, what)

    def _log_rate(self, key: str, template: str, *args: Any) -> None:
        allowed, suppressed = self._rate.allow(key)
        if not allowed:
            return
        if suppressed:
            template += " (%d similar messages about this address suppressed)"
            args = (*args, suppressed)
        LOG.warning(template, *args)

    # ------------------------------------------------------------------ shutdown

    def shutdown(self, wait: float = 5.0) -> None:
        """Stop accepting, drop every connection, and wait (bounded) for their threads."""
        self._stopping.set()
        super().shutdown()
        for conn in self.connections():
            conn.kill("the node is stopping")
        deadline = time.monotonic() + wait
        while self.connections() and time.monotonic() < deadline:
            time.sleep(0.05)
