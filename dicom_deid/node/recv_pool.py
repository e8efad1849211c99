"""`listen.workers` > 1: the node process accepts, receive worker processes receive.

Why: a small instance costs ~1 ms of GIL-held Python in the receiver, so one receiving
process saturates near one core while storescp forks a process per association. Here the
node process owns the listening socket and every guarantee that must hold across
processes; each worker (node/recv_worker.py) runs the single-process Receiver unchanged.

What stays where:
- node process: accept (never blocked by a peer: the TLS handshake and every read happen
  in a worker), TCP_NODELAY, the pool of connections not yet accepted (listen.
  max_pending_connections / max_pending_per_address, oldest gives way, across all
  workers), the association slots (listen.max_associations, max_associations_per_address:
  granted by `admit`, asked by the worker where the single-process node counts its own),
  a backstop deadline on connections a worker has not admitted, worker restarts, SIGTERM
  fan-out. It keeps its own descriptor of each connection it handed over, so it can shut
  any of them down (eviction, deadline, a worker gone) without the worker's help.
- workers: the TLS handshake, PDU deadlines and size limits, AE checks, the watermark,
  journal rows, group commit and fsync before each acknowledgement (SQLite's WAL is
  shared by the processes; each worker groups its own associations' commits), the
  background hardener, audit lines (single O_APPEND writes), quarantine on arrival, the
  same logging filters (log file reopened when the node process rotates it).

A worker that dies (kill -9, a crash) loses nothing acknowledged: acknowledgement follows
the fsync. Its connections are shut down (their senders retry what was not acknowledged)
and it is started again; if workers keep dying (_MAX_RESTARTS within _RESTART_WINDOW s)
the node stops with an error instead of refusing work in a loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dicom_deid.config import ListenConfig, NodeConfig
from dicom_deid.node.journal import Journal, ReceivedInstance
from dicom_deid.node.logs import RateLimiter, short_reason
from dicom_deid.node.recv_worker import receive_message, send_message
from dicom_deid.node.spool import Spool
from dicom_deid.node.transport import oldest_to_evict

LOG = logging.getLogger(__name__)

_READY_TIMEOUT = 60.0
_STOP_WAIT = 6.0  # SIGTERM to SIGKILL for workers; the node must be gone within 10 s
_MAX_RESTARTS = 5
_RESTART_WINDOW = 60.0
# Beyond listen.accept_timeout (the worker's own deadline): a connection its worker has
# not admitted by then is shut down here, whatever state the worker is in.
_BACKSTOP_SLACK = 2.0
_WATCH_EVERY = 0.5


@dataclass
class _Handed:
    sock: socket.socket  # the node process's own descriptor of the connection
    address: str
    worker: _Worker
    accepted_at: float = field(default_factory=time.monotonic)
    admitted: bool = False


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen
    handover: socket.socket  # our end
    control: socket.socket
    commit: socket.socket
    ready: threading.Event = field(default_factory=threading.Event)
    live: int = 0  # connections handed over and not closed


class ReceivePool:
    """The Receiver's stand-in in the node process when listen.workers > 1 (same
    lifecycle: start, update_allowlists, sweep_incoming, stop; `_server` is set while it
    listens, which the HTTP health check reads)."""

    def __init__(self, config: NodeConfig, on_failure: Callable[[], None] | None = None):
        self.config = config
        self.listen = config.listen
        self.spool = Spool(config.state_dir)
        self.on_failure = on_failure
        self.failed = ""
        self._server: socket.socket | None = None
        self._lock = threading.Lock()
        self._handed: dict[int, _Handed] = {}
        self._workers: list[_Worker | None] = [None] * config.listen.workers
        self._next_key = 0
        self._turn = 0
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._exits: deque[float] = deque()
        self._restart: deque[int] = deque()  # worker indexes to start again (by _watch)
        self._done = threading.Event()  # workers stopped: _watch may end
        self._rate = RateLimiter(burst=5, window=60.0)
        self._commits = SharedCommit(config.state_dir, config.journal_path)
        self._acceptor: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        listener = self._listen()
        self._commits.start()
        try:
            for index in range(len(self._workers)):
                self._spawn(index)
            deadline = time.monotonic() + _READY_TIMEOUT
            for worker in list(self._workers):
                assert worker is not None
                while not worker.ready.wait(0.1):
                    if worker.proc.poll() is not None or time.monotonic() > deadline:
                        raise OSError(f"receive worker {worker.index} did not start (see the "
                                      "log above)")
        except BaseException:
            listener.close()
            self._stopping.set()
            self._terminate_workers()
            raise
        # Only now: before it, a sender's connection would wait in the backlog for
        # workers still starting; refused, it retries.
        listener.listen(128)
        self._server = listener
        self._acceptor = threading.Thread(target=self._accept_loop, name="node-accept",
                                          daemon=True)
        self._acceptor.start()
        threading.Thread(target=self._watch, name="node-receive-watch", daemon=True).start()
        LOG.info("listening on %s:%d as %s (%s), %d receive worker processes, calling AEs: %s",
                 self.listen.host, self.listen.port, self.listen.ae_title,
                 "TLS" if self.listen.tls else "no TLS", len(self._workers),
                 ", ".join(self.listen.allowed_calling_aets) or "any")

    def _listen(self) -> socket.socket:
        host, port = self.listen.host, self.listen.port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))  # "address in use" is reported before workers start
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"cannot listen on {host}:{port}: "
                                     f"{exc.strerror or exc}") from None
        sock.setblocking(False)
        return sock

    def _spawn(self, index: int) -> None:
        ours_h, theirs_h = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours_c, theirs_c = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours_j, theirs_j = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ)
        # The worker imports this same package, wherever it was imported from here.
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        proc = subprocess.Popen(
            [sys.executable, "-m", "dicom_deid.node.recv_worker", str(index),
             str(theirs_h.fileno()), str(theirs_c.fileno()), str(theirs_j.fileno()),
             str(os.getpid())],
            stdin=subprocess.PIPE,
            pass_fds=(theirs_h.fileno(), theirs_c.fileno(), theirs_j.fileno()),
            env=env, close_fds=True)
        for theirs in (theirs_h, theirs_c, theirs_j):
            theirs.close()
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(pickle.dumps(self.config))
            proc.stdin.close()
        ours_h.setblocking(False)  # a worker that stops reading never blocks accept
        worker = _Worker(index, proc, ours_h, ours_c, ours_j)
        self._workers[index] = worker
        threading.Thread(target=self._serve_worker, args=(worker,),
                         name=f"node-receive-{index}", daemon=True).start()
        threading.Thread(target=self._commits.serve, args=(ours_j,),
                         name=f"node-journal-{index}", daemon=True).start()

    def update_allowlists(self, listen: ListenConfig) -> None:
        self.listen = self.listen.model_copy(update={
            "allowed_calling_aets": listen.allowed_calling_aets,
            "allowed_called_aets": listen.allowed_called_aets})
        message = {"op": "listen", "allowed_calling_aets": list(listen.allowed_calling_aets),
                   "allowed_called_aets": list(listen.allowed_called_aets)}
        for worker in list(self._workers):
            if worker is not None:
                with contextlib.suppress(OSError):
                    send_message(worker.handover, message)

    def sweep_incoming(self) -> int:
        """Partial receptions abandoned by an aborted association or a dead worker."""
        removed = self.spool.sweep_incoming(
            2 * max(self.listen.network_timeout, self.listen.dimse_timeout))
        if removed:
            LOG.info("removed %d abandoned partial receptions", removed)
        return removed

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"\0")
        if self._server is not None:
            if self._acceptor is not None:
                self._acceptor.join(timeout=2.0)
            self._server.close()
            self._server = None
        self._terminate_workers()
        self._done.set()
        self._commits.stop()
        if self._commits.rows:
            LOG.info("%d journal rows from receive workers in %d commits (group commit)",
                     self._commits.rows, self._commits.commits)
        with self._lock:
            handed, self._handed = list(self._handed.values()), {}
        for conn in handed:
            _shut(conn.sock)

    def _terminate_workers(self) -> None:
        workers = [w for w in self._workers if w is not None]
        for worker in workers:
            with contextlib.suppress(OSError):
                worker.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_WAIT
        for worker in workers:
            try:
                worker.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                LOG.error("receive worker %d did not stop within %g s: killed",
                          worker.index, _STOP_WAIT)
                worker.proc.kill()
                worker.proc.wait()
            for sock in (worker.handover, worker.control, worker.commit):
                sock.close()

    # ------------------------------------------------------------------ accept

    def _accept_loop(self) -> None:
        listener = self._server
        assert listener is not None
        while not self._stopping.is_set():
            try:
                ready, _, _ = select.select([listener.fileno(), self._wake_r], [], [], 1.0)
            except (OSError, ValueError):
                return
            if listener.fileno() not in ready:
                continue
            try:
                client, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:  # EMFILE and the like: say so, and let the queue wait
                self._log_rate("accept", "accept failed: %s", exc.strerror or exc)
                time.sleep(0.1)
                continue
            try:
                self._hand_over(client, str(address[0]), int(address[1]))
            except Exception as exc:  # never let one connection stop the accept loop
                LOG.error("connection from %s:%s not handed to a receive worker (%s)",
                          address[0], address[1], type(exc).__name__)
                _shut(client)

    def _hand_over(self, client: socket.socket, address: str, port: int) -> None:
        with contextlib.suppress(OSError):
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        evicted = self._make_room(address)
        for victim in evicted:
            _shut(victim.sock)
        if evicted:
            self._log_rate(address, "connections from %s not accepted in time were dropped to "
                           "admit new ones (listen.max_pending_connections / "
                           "max_pending_per_address)", address)
        with self._lock:
            workers = [w for w in self._workers if w is not None and w.ready.is_set()]
            if not workers:
                _shut(client)
                self._log_rate("no-worker", "connection from %s refused: no receive worker "
                               "is running", address)
                return
            # The least busy worker; ties in turn, so one sender's associations spread.
            self._turn += 1
            worker = min(workers, key=lambda w: (w.live, (w.index - self._turn) % len(workers)))
            self._next_key += 1
            key = self._next_key
            self._handed[key] = _Handed(client, address, worker)
            worker.live += 1
        try:
            send_message(worker.handover, {"op": "conn", "key": key, "address": address,
                                           "port": port}, client.fileno(), socket.MSG_DONTWAIT)
        except OSError:
            self._closed(key)
            _shut(client)
            self._log_rate("handover", "connection from %s refused: receive worker %d is not "
                           "taking connections", address, worker.index)

    def _make_room(self, address: str) -> list[_Handed]:
        """listen.max_pending_connections / max_pending_per_address over every worker: the
        oldest connection not admitted gives way (transport.GuardedServer.verify_request,
        one level up)."""
        with self._lock:
            pending = [c for c in self._handed.values() if not c.admitted]
            evicted = oldest_to_evict(pending, address, self.listen.max_pending_per_address,
                                      self.listen.max_pending_connections)
            for victim in evicted:
                self._forget(victim)
        return evicted

    def _forget(self, conn: _Handed) -> None:
        """Drop a connection from the counts (lock held); its descriptor stays open until
        the caller shuts it down."""
        for key, other in list(self._handed.items()):
            if other is conn:
                del self._handed[key]
                conn.worker.live -= 1

    def _closed(self, key: int) -> None:
        with self._lock:
            conn = self._handed.pop(key, None)
            if conn is None:
                return
            conn.worker.live -= 1
        conn.sock.close()

    def _admit(self, key: int) -> dict[str, Any]:
        with self._lock:
            conn = self._handed.get(key)
            if conn is None:  # evicted or timed out meanwhile: it is being shut down
                return {"ok": False, "why": "total", "count": 0}
            admitted = [c for c in self._handed.values() if c.admitted]
            if len(admitted) >= self.listen.max_associations:
                return {"ok": False, "why": "total", "count": len(admitted)}
            same = sum(1 for c in admitted if c.address == conn.address)
            if same >= self.listen.max_associations_per_address:
                return {"ok": False, "why": "address", "count": same}
            conn.admitted = True
            return {"ok": True}

    # ------------------------------------------------------------------ workers

    def _serve_worker(self, worker: _Worker) -> None:
        """Answer one worker's control messages until it exits, then clean up after it."""
        while True:
            try:
                message, fd = receive_message(worker.control)
            except OSError:
                message, fd = None, None
            if fd is not None:
                os.close(fd)
            if message is None:
                break
            op = message.get("op")
            if op == "admit":
                with contextlib.suppress(OSError):
                    send_message(worker.control, self._admit(int(message["key"])))
            elif op == "closed":
                self._closed(int(message["key"]))
            elif op == "ready":
                worker.ready.set()
        code = worker.proc.wait()
        self._worker_gone(worker, code)

    def _worker_gone(self, worker: _Worker, code: int) -> None:
        with self._lock:
            lost = [c for c in self._handed.values() if c.worker is worker]
            for conn in lost:
                self._forget(conn)
        for conn in lost:
            _shut(conn.sock)  # the senders see the connection drop and retry
        if self._stopping.is_set():
            return
        why = f"signal {-code}" if code < 0 else f"status {code}"
        LOG.error("receive worker %d (pid %d) exited with %s; %d connections dropped "
                  "(nothing they had acknowledged is lost)", worker.index, worker.proc.pid,
                  why, len(lost))
        now = time.monotonic()
        self._exits.append(now)
        while self._exits and now - self._exits[0] > _RESTART_WINDOW:
            self._exits.popleft()
        for sock in (worker.handover, worker.control, worker.commit):
            with contextlib.suppress(OSError):
                sock.close()
        if len(self._exits) > _MAX_RESTARTS:
            self.failed = (f"receive workers exited {len(self._exits)} times within "
                           f"{_RESTART_WINDOW:g} s")
            LOG.critical("%s: the node stops", self.failed)
            self._workers[worker.index] = None
            if self.on_failure is not None:
                self.on_failure()
            return
        # Started again by _watch: a worker is killed when the thread that started it
        # ends (PR_SET_PDEATHSIG follows the thread), and this one ends now.
        self._restart.append(worker.index)

    def _respawn(self) -> None:
        while self._restart and not self._stopping.is_set():
            index = self._restart.popleft()
            try:
                self._spawn(index)
            except OSError as exc:
                self.failed = f"receive worker {index} cannot be started again ({exc})"
                LOG.critical("%s: the node stops", self.failed)
                self._workers[index] = None
                if self.on_failure is not None:
                    self.on_failure()
                return
            LOG.warning("receive worker %d started again", index)

    def _watch(self) -> None:
        """The backstop deadline: a connection not admitted within listen.accept_timeout
        (plus slack) is shut down here, whatever its worker is doing."""
        limit = self.listen.accept_timeout + _BACKSTOP_SLACK
        while not self._stopping.wait(_WATCH_EVERY):
            self._respawn()
            now = time.monotonic()
            with self._lock:
                late = [c for c in self._handed.values()
                        if not c.admitted and now - c.accepted_at > limit]
                for conn in late:
                    self._forget(conn)
            for conn in late:
                _shut(conn.sock)
                self._log_rate(conn.address, "dropped connection from %s: not accepted "
                               "within listen.accept_timeout (%g s)", conn.address,
                               self.listen.accept_timeout)
        # Workers this thread started die with it: it ends only once they were stopped.
        self._done.wait()

    def _log_rate(self, key: str, template: str, *args: Any) -> None:
        allowed, suppressed = self._rate.allow(key)
        if not allowed:
            return
        if suppressed:
            template += " (%d similar messages suppressed)"
            args = (*args, suppressed)
        LOG.warning(template, *args)


class SharedCommit:
    """Journal rows from every receive worker, committed together (group commit across
    processes): one transaction and one WAL fsync for everything queued while the previous
    commit ran. A worker's association thread waits for its answer before acknowledging,
    so acknowledgement still follows the fsync."""

    def __init__(self, state_dir: Path, journal_path: Path):
        self.state_dir = state_dir
        self.journal_path = journal_path
        self.commits = 0
        self.rows = 0
        self._cond = threading.Condition()
        self._queue: list[tuple[socket.socket, dict[str, Any]]] = []
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._send_lock = threading.Lock()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="node-journal-commit",
                                        daemon=True)
        self._thread.start()

    def serve(self, channel: socket.socket) -> None:
        """Queue one worker's requests until its channel closes."""
        while True:
            try:
                request, fd = receive_message(channel)
            except OSError:
                return
            if fd is not None:
                os.close(fd)
            if request is None:
                return
            with self._cond:
                self._queue.append((channel, request))
                self._cond.notify()

    def _run(self) -> None:
        journal = Journal(self.journal_path)
        journal.defer_checkpoints()  # the workers' hardeners checkpoint
        try:
            while True:
                with self._cond:
                    while not self._queue and not self._stopping:
                        self._cond.wait()
                    if not self._queue:
                        return
                    batch, self._queue = self._queue, []
                self._commit(journal, batch)
        finally:
            journal.close()

    def _commit(self, journal: Journal,
                batch: list[tuple[socket.socket, dict[str, Any]]]) -> None:
        answers: list[dict[str, Any]] = []
        items, blobs, good = [], [], []
        for channel, request in batch:
            try:
                item = ReceivedInstance(**request["item"])
                # The worker wrote and renamed this file before asking: its bytes are in
                # the page cache, and held in the journal until the file is durable.
                blob = ((self.state_dir / item.path).read_bytes()
                        if request.get("inline") else None)
            except (OSError, TypeError, KeyError) as exc:
                answers.append({"id": request.get("id"), "error": type(exc).__name__})
                _reply(channel, answers[-1], self._send_lock)
                continue
            items.append(item)
            blobs.append(blob)
            good.append((channel, request))
        if not items:
            return
        try:
            results = journal.record_received_many(items, data=blobs)
        except Exception as exc:
            LOG.error("journal commit failed, %d instances refused: %s", len(items),
                      short_reason(exc))
            for channel, request in good:
                _reply(channel, {"id": request["id"], "error": type(exc).__name__},
                       self._send_lock)
            return
        self.commits += 1
        self.rows += len(items)
        for (channel, request), (instance, superseded) in zip(good, results, strict=True):
            _reply(channel, {"id": request["id"], "instance": instance,
                             "superseded": superseded}, self._send_lock)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=5.0)


def _reply(channel: socket.socket, answer: dict[str, Any], lock: threading.Lock) -> None:
    with lock, contextlib.suppress(OSError):  # the worker is gone: it acknowledges nothing
        send_message(channel, answer)


def _shut(sock: socket.socket) -> None:
    """Shut the connection down for every process holding it, then drop our descriptor."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
