"""Forwarders: one thread per destination and association, the delivery queue's logic.

Each forwarder takes the due sends of one study at a time and hands them, batch by batch,
to its destination's sender (node/senders/: C-STORE or DICOMweb STOW-RS). What the sender
reports is recorded in the journal: delivered sends in groups, each failed one as an
attempt that waits an exponentially growing, jittered delay and is quarantined after
`forward.max_attempts`. The policy is the same whatever the destination type.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Sequence

from dicom_deid.config import Destination, ForwardConfig, NodeConfig
from dicom_deid.node.audit import AuditLog
from dicom_deid.node.journal import DueSend, Journal
from dicom_deid.node.logs import short_reason
from dicom_deid.node.senders import Sender, make_sender

LOG = logging.getLogger(__name__)

_FLUSH_EVERY = 32  # deliveries recorded per journal transaction


def backoff_delay(attempts: int, cfg: ForwardConfig, rng: random.Random | None = None) -> float:
    """Delay before the next attempt after `attempts` failures: exponential, capped, jittered."""
    base = min(cfg.max_delay, cfg.initial_delay * (2 ** max(0, attempts - 1)))
    factor = 1.0 + (rng or random).uniform(-cfg.jitter, cfg.jitter)
    return max(0.0, base * factor)


class StudyClaims:
    """Studies being delivered to one destination, so that its associations (one thread
    each) work on different studies."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ids: set[int] = set()


class ForwarderSet:
    """Every forwarder of the node; replaced as a whole when a reload changes the
    destinations or the forward policy (each destination's queue stays in the journal)."""

    def __init__(self, audit: AuditLog):
        self.audit = audit
        self.claims: dict[str, StudyClaims] = {}  # kept across reloads: one per destination
        self.threads: list[Forwarder] = []
        self.retiring: list[Forwarder] = []  # replaced by a reload, finishing their file
        self._stop = threading.Event()

    def start(self, config: NodeConfig) -> None:
        self._stop = threading.Event()
        self.threads = []
        for dest in config.destinations:
            claims = self.claims.setdefault(dest.name, StudyClaims())
            self.threads += [Forwarder(config, dest, self.audit, self._stop, claims, i)
                             for i in range(config.forward.associations)]
        for thread in self.threads:
            thread.start()

    def wake(self) -> None:
        for thread in self.threads:
            thread.wake.set()

    def signal_stop(self) -> None:
        """Stop after the file (C-STORE) or request (STOW-RS) each one is sending."""
        self._stop.set()
        self.wake()

    def join(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.retiring + self.threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def restart(self, config: NodeConfig) -> None:
        """New forwarders at once; the old ones end after the file or request in flight.

        The claims are shared, so a study an old one is still sending is not taken by a
        new one meanwhile; the main loop does not wait for them.
        """
        self.signal_stop()
        self.retiring = [t for t in self.retiring + self.threads if t.is_alive()]
        self.start(config)


class _Recorder:
    """The Outcome of one batch: journals what the sender reports, each send once."""

    def __init__(self, forwarder: Forwarder, token: str):
        self.forwarder = forwarder
        self.token = token
        self.pending: list[int] = []
        self.reported: set[int] = set()
        self.delivered = 0

    def sent(self, send: DueSend) -> None:
        if send.send_id in self.reported:
            return
        self.reported.add(send.send_id)
        self.pending.append(send.send_id)
        self.delivered += 1
        if len(self.pending) >= _FLUSH_EVERY:
            self.flush()

    def failed(self, sends: Sequence[DueSend], error: str) -> None:
        fresh = [s for s in sends if s.send_id not in self.reported]
        self.reported.update(s.send_id for s in fresh)
        self.forwarder.failed(fresh, error, self.token)

    def flush(self) -> None:
        if self.pending:
            self.forwarder.journal_or_fail().mark_sent(self.pending)
            self.pending = []


class Forwarder(threading.Thread):
    """One connection at a time to one destination; `forward.associations` of them run
    side by side per destination, sharing a StudyClaims."""

    def __init__(self, config: NodeConfig, destination: Destination, audit: AuditLog,
                 stop: threading.Event, claims: StudyClaims | None = None, index: int = 0):
        super().__init__(name=f"forward-{destination.name}-{index}", daemon=True)
        self.config = config
        self.dest = destination
        self.audit = audit
        self.stop_event = stop
        self.claims = claims or StudyClaims()
        self.wake = threading.Event()
        self.journal: Journal | None = None
        self.sender: Sender = make_sender(config, destination, stop)
        self._rng = random.Random()

    def journal_or_fail(self) -> Journal:
        if self.journal is None:
            raise RuntimeError("the forwarder's journal is open only while it runs")
        return self.journal

    def run(self) -> None:
        self.journal = Journal(self.config.journal_path)
        try:
            while not self.stop_event.is_set():
                try:
                    delivered = self.deliver_due()
                except Exception as exc:  # keep forwarding whatever one batch did
                    LOG.error("forwarder %s: %s", self.dest.name, short_reason(exc))
                    delivered = 0
                if delivered:
                    continue
                with self.claims.lock:
                    busy = tuple(self.claims.ids)
                next_due = self.journal.next_due_time(self.dest.name, exclude=busy)
                wait = 1.0 if next_due is None else min(1.0, max(0.02, next_due - time.time()))
                self.wake.wait(wait)
                self.wake.clear()
        finally:
            self.sender.close()
            self.journal.close()

    def deliver_due(self) -> int:
        """Deliver the due sends of one study; returns how many were attempted."""
        journal = self.journal_or_fail()
        with self.claims.lock:
            sends = journal.due_sends(self.dest.name, time.time(), exclude=tuple(self.claims.ids))
            if not sends:
                return 0
            study_id = sends[0].study_id
            self.claims.ids.add(study_id)
        try:
            token = journal.study_token(study_id)
            sent = 0
            for batch in self.sender.batches(sends):
                if self.stop_event.is_set():
                    break
                sent += self._deliver(batch, token)
        finally:
            with self.claims.lock:
                self.claims.ids.discard(study_id)
        if sent:
            self.audit.write("forwarded", study=token, destination=self.dest.name,
                             instances=sent)
            LOG.info("study %s: %d files delivered to %s", token, sent, self.dest.name)
        return len(sends)

    def _deliver(self, batch: list[DueSend], token: str) -> int:
        recorder = _Recorder(self, token)
        try:
            self.sender.deliver(batch, recorder)
        except Exception as exc:
            # A sender bug must not leave sends due at once forever: count an attempt.
            recorder.flush()
            recorder.failed(batch, f"sending failed: {short_reason(exc)}")
            return recorder.delivered
        finally:
            recorder.flush()
        if not self.stop_event.is_set():  # stopping: unreported sends stay due for the restart
            unreported = [s for s in batch if s.send_id not in recorder.reported]
            recorder.failed(unreported, "not sent: the connection closed before it")
        return recorder.delivered

    def failed(self, batch: Sequence[DueSend], error: str, token: str) -> None:
        """One failed attempt for each send; they retry together, as one batch."""
        if not batch:
            return
        attempts = max(s.attempts for s in batch) + 1
        delay = backoff_delay(attempts, self.config.forward, self._rng)
        quarantined = self.journal_or_fail().mark_send_failed(
            [s.send_id for s in batch], error, time.time() + delay,
            self.config.forward.max_attempts)
        retried = len(batch) - len(quarantined)
        if retried:
            LOG.warning("study %s: %d files not delivered to %s (attempt %d), retry in %.1f s: %s",
                        token, retried, self.dest.name, attempts, delay, error)
        if quarantined:
            ids = ", ".join(f"S{i}" for i in quarantined[:20])
            more = f" and {len(quarantined) - 20} more" if len(quarantined) > 20 else ""
            self.audit.write("quarantined", study=token, sends=[f"S{i}" for i in quarantined],
                             destination=self.dest.name, reason=error)
            LOG.error("study %s: %d sends to %s quarantined (%s%s): %s", token,
                      len(quarantined), self.dest.name, ids, more, error)
