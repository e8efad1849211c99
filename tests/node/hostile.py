"""Hostile clients for the node's listener: loopback only, bounded in count and time.

Used by tests/node/test_hostile.py and benchmarks/node_attacks.py. Every function here
talks to 127.0.0.1 and nothing else.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

HOST = "127.0.0.1"


def _ae(title: str | bytes) -> bytes:
    raw = title.encode("latin-1") if isinstance(title, str) else title
    return raw[:16].ljust(16, b" ")


def _item(kind: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(payload)) + payload


def associate_rq(calling: str | bytes = "PACS", called: str = "DICOM-DEID",
                 abstract: str = "1.2.840.10008.1.1",
                 syntax: str = "1.2.840.10008.1.2", max_pdu: int = 16384) -> bytes:
    """A minimal, valid A-ASSOCIATE-RQ PDU (one presentation context), built by hand so
    that a test can send it whole, in pieces, or with a forged field."""
    app = _item(0x10, b"1.2.840.10008.3.1.1.1")
    context = _item(0x20, bytes([1, 0, 0, 0]) + _item(0x30, abstract.encode())
                    + _item(0x40, syntax.encode()))
    user = _item(0x50, _item(0x51, struct.pack(">I", max_pdu))
                 + _item(0x52, b"1.2.826.0.1.3680043.9.9999")
                 )
    body = (struct.pack(">HH", 1, 0) + _ae(called) + _ae(calling) + bytes(32)
            + app + context + user)
    return struct.pack(">BBI", 0x01, 0, len(body)) + body


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def client_hello(server_name: str = "localhost") -> bytes:
    """The first flight of a real TLS client (a ClientHello), captured without a network."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def closed_by_peer(sock: socket.socket, within: float) -> bool:
    """Whether the other side closed (or reset) the connection within `within` seconds."""
    deadline = time.monotonic() + within
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            return True
        if not data:
            return True
    return False


class Squatters:
    """`count` connections held open, each doing `kind`, until close():

    idle: connect and send nothing; partial: 3 bytes of a PDU header; slowloris: a valid
    A-ASSOCIATE-RQ, one byte every `interval` s; random: 64 random bytes; tls-silent: no
    ClientHello; tls-half: half a ClientHello.
    """

    KINDS = ("idle", "partial", "slowloris", "random", "tls-silent", "tls-half")

    def __init__(self, port: int, kind: str, count: int, interval: float = 2.0,
                 reconnect: bool = False):
        assert kind in self.KINDS, kind
        self.port, self.kind, self.count = port, kind, count
        self.interval, self.reconnect = interval, reconnect
        self.socks: list[socket.socket] = []
        self.dropped = 0  # connections the node closed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _open_one(self) -> socket.socket | None:
        try:
            sock = connect(self.port)
        except OSError:
            return None
        try:
            if self.kind == "partial":
                sock.sendall(b"\x01\x00\x00")
            elif self.kind == "random":
                sock.sendall(bytes((i * 97 + 13) % 256 for i in range(64)))
            elif self.kind == "tls-half":
                hello = client_hello()
                sock.sendall(hello[: len(hello) // 2])
        except OSError:
            pass
        return sock

    def open(self) -> Squatters:
        for _ in range(self.count):
            sock = self._open_one()
            if sock is not None:
                self.socks.append(sock)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        rq = associate_rq()
        sent = 0
        while not self._stop.wait(self.interval if self.kind == "slowloris" else 0.25):
            for i, sock in enumerate(list(self.socks)):
                alive = True
                if self.kind == "slowloris" and sent < len(rq):
                    try:
                        sock.sendall(rq[sent:sent + 1])
                    except OSError:
                        alive = False
                else:
                    sock.setblocking(False)
                    try:
                        alive = sock.recv(65536) != b""
                    except BlockingIOError:
                        pass
                    except OSError:
                        alive = False
                if not alive:
                    self.dropped += 1
                    sock.close()
                    replacement = self._open_one() if self.reconnect else None
                    if replacement is not None:
                        self.socks[i] = replacement
                    else:
                        self.socks.remove(sock)
            sent += 1

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for sock in self.socks:
            with contextlib.suppress(OSError):
                sock.close()
        self.socks = []

    def __enter__(self) -> Squatters:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


def oversized_pdu(port: int, pdu_type: int = 0x04, stream: int = 64 * 2**20,
                  established_as: str | None = None, within: float = 20.0) -> tuple[int, bool]:
    """Claim a PDU of 0xFFFFFFFF bytes and stream up to `stream` bytes of it.

    With established_as, first associate as that calling AE (a P-DATA that ignores the
    negotiated maximum). Returns (bytes the node took, whether it closed the connection).
    """
    sock = connect(port, timeout=within)
    try:
        if established_as is not None:
            sock.sendall(associate_rq(calling=established_as))
            reply = sock.recv(6)
            assert reply[:1] == b"\x02", f"association not accepted: {reply!r}"
        sock.sendall(struct.pack(">BBI", pdu_type, 0, 0xFFFFFFFF))
        chunk = bytes(65536)
        sent = 0
        deadline = time.monotonic() + within
        sock.settimeout(1.0)
        while sent < stream and time.monotonic() < deadline:
            try:
                sent += sock.send(chunk)
            except TimeoutError:
                continue
            except OSError:
                return sent, True
        return sent, closed_by_peer(sock, 10)
    finally:
        sock.close()


def unknown_pdu_flood(port: int, total: int = 60_000) -> None:
    """Unknown PDU types, 6 bytes each (the log-amplification attack)."""
    with contextlib.suppress(OSError):
        sock = connect(port)
        with sock:
            sock.sendall(b"\x09\x00\x00\x00\x00\x00" * (total // 6))
            closed_by_peer(sock, 5)


def forged_calling_ae(port: int, title: bytes = b"EVIL\nFAKE ERROR") -> bytes:
    """Associate with control characters in the calling AE title; returns the reply."""
    sock = connect(port)
    with sock:
        sock.sendall(associate_rq(calling=title))
        try:
            return sock.recv(64)
        except OSError:
            return b""


def rss(pid: int) -> int:
    """Resident set size of the node process and its receive workers (listen.workers > 1;
    not its study-processing workers, which load models on their own schedule), bytes
    (Linux)."""
    total = 0
    for one in [pid, *_receive_workers(pid)]:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def threads(pid: int) -> int:
    """Threads of the node process and its receive workers (Linux)."""
    total = 0
    for one in [pid, *_receive_workers(pid)]:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("Threads:"):
                    total += int(line.split()[1])
    return total


def _receive_workers(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                for child in (task / "children").read_text().split():
                    with contextlib.suppress(OSError):
                        if b"recv_worker" in Path(f"/proc/{child}/cmdline").read_bytes():
                            found.append(int(child))
    return found


@contextlib.contextmanager
def timed() -> Iterator[list[float]]:
    box: list[float] = []
    start = time.monotonic()
    try:
        yield box
    finally:
        box.append(time.monotonic() - start)
