"""A receiving process of `listen.workers` (node/recv_pool.py starts and watches it).

Why a process of its own: a small instance costs the receiver ~1 ms of Python that holds
the GIL, so one process tops out near one core. The node process accepts every
connection and hands the socket over (SCM_RIGHTS); the worker runs the same Receiver as
the single-process node (journal, group commit, fsync before each acknowledgement,
audit, quarantine, logging filters), on a GuardedServer that takes its connections from
that hand-over instead of a listening socket. The slots that must be counted across
processes (listen.max_associations and max_associations_per_address) are granted by the
node process (`admit`), the same check in the same place of the association set-up.

Journal rows are committed by the node process for every worker together (RemoteCommit
here, recv_pool.SharedCommit there): one WAL fsync for the instances of all workers that
wait, as GroupCommit does for the associations of one process. Each worker committing on
its own gave almost one fsync per instance (measured: 200 instances, 4 senders, 2
workers: 197 commits; one process: 114-119), and on this disk the fsync is the floor.

Protocol (three SOCK_SEQPACKET socket pairs, JSON messages):
- hand-over, node -> worker: {"op": "conn", "key", "address", "port"} with the socket as
  SCM_RIGHTS; {"op": "listen", ...} (reloaded allowlists);
- control, worker -> node: {"op": "ready"}, {"op": "admit", "key"} (answered
  {"ok": true} or {"ok": false, "why", "count"}), {"op": "closed", "key"};
- commit, worker -> node: {"id", "item": ReceivedInstance fields, "inline": bool} (inline:
  keep the spool file's bytes in the journal with the row; the node process reads them
  from the file the worker has written and renamed), answered {"id", "instance",
  "superseded"} or {"id", "error"} once the row is durable.
"""

from __future__ import annotations

import array
import contextlib
import dataclasses
import itertools
import json
import logging
import os
import pickle
import signal
import socket
import sys
import threading
from typing import Any

from dicom_deid.node.journal import ReceivedInstance
from dicom_deid.node.transport import Connection, GuardedServer

LOG = logging.getLogger(__name__)

_MAX_MESSAGE = 64 * 1024


def send_message(sock: socket.socket, message: dict[str, Any], fd: int | None = None,
                 flags: int = 0) -> None:
    data = json.dumps(message).encode()
    if fd is None:
        sock.sendmsg([data], [], flags)
    else:
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                               array.array("i", [fd]))], flags)


def receive_message(sock: socket.socket) -> tuple[dict[str, Any] | None, int | None]:
    """The next message and the descriptor it carried; (None, None) at end of stream."""
    fds = array.array("i")
    data, ancillary, _, _ = sock.recvmsg(_MAX_MESSAGE, socket.CMSG_SPACE(fds.itemsize * 4))
    received: list[int] = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % fds.itemsize
            fds.frombytes(payload[:usable])
            received += list(fds)
    if not data:
        for fd in received:
            os.close(fd)
        return None, None
    for extra in received[1:]:  # never more than one is sent
        os.close(extra)
    return json.loads(data), (received[0] if received else None)


class RemoteCommit:
    """GroupCommit's stand-in in a receive worker: the row goes to the node process's
    SharedCommit, and record() returns once it is committed there."""

    def __init__(self, channel: socket.socket):
        self._channel = channel
        self._send_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._waiting: dict[int, list[Any]] = {}  # id -> [Event, answer]
        self._lock = threading.Lock()
        self._gone = False
        self.commits = 0  # rows committed for this worker (diagnostics)
        threading.Thread(target=self._read, name="journal-replies", daemon=True).start()

    def record(self, item: ReceivedInstance, data: bytes | None = None) -> tuple[int, list[int]]:
        request = next(self._ids)
        slot: list[Any] = [threading.Event(), None]
        with self._lock:
            if self._gone:
                raise OSError("the node process's journal writer is gone")
            self._waiting[request] = slot
        try:
            with self._send_lock:
                send_message(self._channel, {"id": request, "item": dataclasses.asdict(item),
                                             "inline": data is not None})
        except OSError:
            with self._lock:
                self._waiting.pop(request, None)
            raise
        slot[0].wait()
        answer = slot[1]
        if answer is None or "error" in answer:
            raise OSError("journal commit failed in the node process: "
                          + (answer or {}).get("error", "the node process is gone"))
        self.commits += 1
        return int(answer["instance"]), [int(i) for i in answer["superseded"]]

    def _read(self) -> None:
        while True:
            try:
                answer, fd = receive_message(self._channel)
            except OSError:
                answer, fd = None, None
            if fd is not None:
                os.close(fd)
            if answer is None:
                break
            with self._lock:
                slot = self._waiting.pop(int(answer["id"]), None)
            if slot is not None:
                slot[1] = answer
                slot[0].set()
        with self._lock:  # every waiter fails: nothing is acknowledged without its row
            self._gone = True
            waiting, self._waiting = list(self._waiting.values()), {}
        for slot in waiting:
            slot[0].set()


class WorkerServer(GuardedServer):
    """A GuardedServer whose 'listening socket' is the hand-over channel from the node
    process: get_request() receives an accepted connection instead of accepting one."""

    def __init__(self, *args: Any, handover: socket.socket, control: socket.socket,
                 on_listen: Any = None, **kwargs: Any):
        self._handover = handover
        self._control = control
        self._control_lock = threading.Lock()
        self._keys: dict[int, int] = {}  # id(socket) -> the node process's key
        self._on_listen = on_listen
        self.parent_gone = threading.Event()
        super().__init__(*args, **kwargs)

    def server_bind(self) -> None:
        pass  # nothing to bind: connections arrive through the hand-over channel

    def server_activate(self) -> None:
        # The TCP socket socketserver made is never used; the channel stands in for it
        # (serve_forever selects on self.socket, get_request reads it).
        with contextlib.suppress(OSError):
            self.socket.close()  # type: ignore[union-attr]
        self.socket = self._handover

    def get_request(self) -> tuple[socket.socket, Any]:
        message, fd = receive_message(self._handover)
        if message is None:
            # The node process is gone (its end of the channel closed): stop taking work.
            self.parent_gone.set()
            raise OSError("the node process closed the hand-over channel")
        if message.get("op") == "listen":
            if self._on_listen is not None:
                self._on_listen(message)
            raise OSError("not a connection")  # socketserver: nothing to handle
        if fd is None:
            raise OSError("a hand-over without a socket")
        client = socket.socket(fileno=fd)
        self._keys[id(client)] = int(message["key"])
        return client, (str(message["address"]), int(message["port"]))

    def key_of(self, conn: Connection) -> int | None:
        return self._keys.get(id(conn.raw))

    def admit(self, conn: Connection) -> tuple[bool, str, int]:
        """Ask the node process for one of the association slots shared by all workers:
        (granted, why not: 'total' or 'address', associations counted)."""
        key = self.key_of(conn)
        if key is None:
            return False, "total", 0
        with self._control_lock:
            try:
                send_message(self._control, {"op": "admit", "key": key})
                answer, _ = receive_message(self._control)
            except OSError:
                answer = None
        if answer is None:
            return False, "total", 0
        return bool(answer["ok"]), str(answer.get("why", "")), int(answer.get("count", 0))

    def forget(self, conn: Connection) -> None:
        super().forget(conn)
        key = self._keys.pop(id(conn.raw), None)
        if key is not None:  # the first forget of this connection: its slot is free
            with contextlib.suppress(OSError):
                send_message(self._control, {"op": "closed", "key": key})

    def ready(self) -> None:
        with self._control_lock:
            send_message(self._control, {"op": "ready", "pid": os.getpid()})


def die_with_parent(parent: int) -> None:
    """SIGKILL this process the moment the node process dies (Linux: PR_SET_PDEATHSIG).

    Why not a graceful stop: a node restarted after a kill -9 sweeps incoming/ and every
    spooled file no journal row names; a worker still receiving then could have a file it
    is about to acknowledge swept away. Killed at once, it acknowledges nothing more."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: main() polls getppid()
        pass
    if os.getppid() != parent:  # the node died before the request above
        os._exit(1)


def main() -> int:
    """`python -m dicom_deid.node.recv_worker INDEX HANDOVER_FD CONTROL_FD COMMIT_FD PARENT_PID`,
    the node's configuration pickled on stdin (written by node/recv_pool.py only)."""
    import multiprocessing

    from dicom_deid.header.keys import load_key
    from dicom_deid.node.audit import AuditLog
    from dicom_deid.node.logs import setup_logging
    from dicom_deid.node.receiver import Receiver

    index, handover_fd, control_fd, commit_fd, parent = (int(a) for a in sys.argv[1:6])
    die_with_parent(parent)
    config = pickle.loads(sys.stdin.buffer.read())  # noqa: S301 - from our own parent
    multiprocessing.current_process().name = f"receive-{index}"
    os.umask(0o077)
    setup_logging(config.log.level, config.log.file, min_free=config.listen.min_free_disk)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the node process decides (SIGTERM)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # reloads come through the channel
    handover = socket.socket(fileno=handover_fd)
    control = socket.socket(fileno=control_fd)
    audit = AuditLog(config.audit_log)
    receiver = Receiver(config, load_key(config.key_file), audit,
                        group=RemoteCommit(socket.socket(fileno=commit_fd)))
    receiver.start(handover=handover, control=control)
    server = receiver._server
    assert isinstance(server, WorkerServer)
    server.ready()
    while not stop.wait(0.25):
        if server.parent_gone.is_set() or os.getppid() != parent:
            LOG.error("the node process is gone: receive worker %d stops", index)
            break
    receiver.stop()
    audit.close()
    return 0


def _run() -> int:
    try:
        return main()
    except Exception as exc:  # a traceback could quote peer data: its type only
        LOG.critical("receive worker failed: %s (details withheld)", type(exc).__name__)
        return 1


if __name__ == "__main__":
    # Through the package's module, not __main__'s copy of it (isinstance checks).
    from dicom_deid.node import recv_worker

    sys.exit(recv_worker._run())
