"""Forwarders: one thread per destination, C-STORE SCU with retries.

Each forwarder takes the due sends of one study at a time and delivers them over one
association (more only when the study needs over 128 presentation contexts). Files are
sent as written by the pipeline, without decoding (pynetdicom's chunked send), so the
archive receives exactly the de-identified outputs. A failed send waits an exponentially
growing, jittered delay and is quarantined after `forward.max_attempts`.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import ssl
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from dicom_deid.config import Destination, ForwardConfig, NodeConfig
from dicom_deid.node.audit import AuditLog
from dicom_deid.node.journal import DueSend, Journal
from dicom_deid.node.logs import short_reason

LOG = logging.getLogger(__name__)

MAX_CONTEXTS = 128  # presentation contexts one association may propose (PS3.8 9.3.2.2)
_SUCCESS_STATUSES = {0x0000, 0xB000, 0xB006, 0xB007}  # success and the storage warnings
_FLUSH_EVERY = 32  # deliveries recorded per journal transaction


def _uid_name(uid: str) -> str:
    """A standard UID by name (a UID-shaped string would be masked in the log)."""
    from pydicom.uid import UID

    name = UID(str(uid)).name
    return name if name != str(uid) else "a private SOP class or syntax"


def backoff_delay(attempts: int, cfg: ForwardConfig, rng: random.Random | None = None) -> float:
    """Delay before the next attempt after `attempts` failures: exponential, capped, jittered."""
    base = min(cfg.max_delay, cfg.initial_delay * (2 ** max(0, attempts - 1)))
    factor = 1.0 + (rng or random).uniform(-cfg.jitter, cfg.jitter)
    return max(0.0, base * factor)


def client_ssl_context(dest: Destination) -> ssl.SSLContext | None:
    if dest.tls is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                     cafile=str(dest.tls.ca) if dest.tls.ca else None)
    ctx.check_hostname = dest.tls.verify_hostname
    if dest.tls.cert is not None:
        ctx.load_cert_chain(str(dest.tls.cert), str(dest.tls.key))
    return ctx


def context_batches(sends: list[DueSend]) -> list[list[DueSend]]:
    """Split sends so that no batch needs more than MAX_CONTEXTS (SOP class, syntax) pairs."""
    batches: list[list[DueSend]] = []
    contexts: list[set[tuple[str, str]]] = []
    for send in sends:
        pair = (send.sop_class_uid, send.transfer_syntax)
        for batch, used in zip(batches, contexts, strict=True):
            if pair in used or len(used) < MAX_CONTEXTS:
                batch.append(send)
                used.add(pair)
                break
        else:
            batches.append([send])
            contexts.append({pair})
    return batches


class StudyClaims:
    """Studies being delivered to one destination, so that its associations (one thread
    each) work on different studies."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ids: set[int] = set()


class Forwarder(threading.Thread):
    """One association at a time to one destination; `forward.associations` of them run
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
        self._rng = random.Random()

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
            self.journal.close()

    def deliver_due(self) -> int:
        """Deliver the due sends of one study; returns how many were attempted."""
        assert self.journal is not None
        with self.claims.lock:
            sends = self.journal.due_sends(self.dest.name, time.time(),
                                           exclude=tuple(self.claims.ids))
            if not sends:
                return 0
            study_id = sends[0].study_id
            self.claims.ids.add(study_id)
        try:
            token = self.journal.study_token(study_id)
            sent = 0
            for batch in context_batches(sends):
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
        from pynetdicom import AE, _config

        # Send the files' bytes as they are: no decoding, no transcoding on the way out.
        _config.STORE_SEND_CHUNKED_DATASET = True
        cfg = self.config.forward
        ae = AE(ae_title=self.dest.calling_ae_title or self.config.listen.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = cfg.timeout
        ae.maximum_pdu_size = cfg.max_pdu
        syntaxes: dict[str, list[str]] = defaultdict(list)
        for send in batch:
            if send.transfer_syntax not in syntaxes[send.sop_class_uid]:
                syntaxes[send.sop_class_uid].append(send.transfer_syntax)
        for sop_class, tss in syntaxes.items():
            for ts in tss:  # one context per pair: the archive must accept each as stored
                ae.add_requested_context(sop_class, [ts])

        tls = client_ssl_context(self.dest)
        started = time.monotonic()
        try:
            assoc = ae.associate(self.dest.host, self.dest.port, ae_title=self.dest.ae_title,
                                 tls_args=(tls, self.dest.host) if tls else None)
        except Exception as exc:
            self._failed_all(batch, f"cannot connect: {short_reason(exc)}", token)
            return 0
        if not assoc.is_established:
            self._failed_all(batch, self._why_not_associated(assoc, time.monotonic() - started),
                             token)
            return 0

        done: list[int] = []
        delivered = 0
        try:
            for index, send in enumerate(batch):
                if self.stop_event.is_set() or not assoc.is_established:
                    break
                path = self.config.state_dir / send.path
                error = self._store_one(assoc, path, send)
                if error is None:
                    done.append(send.send_id)
                    delivered += 1
                    if len(done) >= _FLUSH_EVERY:
                        self._record_sent(done)
                        done = []
                else:
                    self._failed(send, error, token)
                    if not assoc.is_established:
                        self._failed_all(batch[index + 1:], f"association lost: {error}", token)
                        break
        finally:
            self._record_sent(done)
            if assoc.is_established:
                assoc.release()
        return delivered

    def _why_not_associated(self, assoc: Any, elapsed: float) -> str:
        """The real cause: pynetdicom reports a refused connection, a timeout, a TLS failure
        and an archive that accepts none of our contexts all as an aborted association."""
        dest = self.dest
        where = f"{dest.ae_title}@{dest.host}:{dest.port}"
        if assoc.is_rejected:
            rsp = getattr(assoc.acceptor, "primitive", None)
            detail = ""
            with contextlib.suppress(Exception):
                detail = f" ({rsp.result_str}, {rsp.source_str}: {rsp.reason_str})"  # type: ignore[union-attr]
            return f"association rejected by {where}{detail}"
        rejected = getattr(assoc, "_rejected_cx", [])
        if rejected and not assoc.accepted_contexts:
            names = sorted({f"{_uid_name(cx.abstract_syntax)} in "
                            f"{_uid_name((cx.transfer_syntax or [''])[0])}" for cx in rejected})
            return (f"{where} accepted no presentation context: "
                    f"{'; '.join(names[:5])}{' ...' if len(names) > 5 else ''}")
        timeout = self.config.forward.timeout
        try:
            with socket.create_connection((dest.host, dest.port), timeout=min(timeout, 10)):
                pass
        except ConnectionRefusedError:
            return f"connection refused by {dest.host}:{dest.port}"
        except TimeoutError:
            return f"connection to {dest.host}:{dest.port} timed out"
        except OSError as exc:
            return f"cannot connect to {dest.host}:{dest.port}: {exc.strerror or exc}"
        if elapsed >= 0.9 * timeout:
            return f"no answer from {where} within forward.timeout ({timeout:g} s)"
        if dest.tls is not None:
            return f"association aborted by {where} (TLS handshake or association refused)"
        return f"association aborted by {where}"

    @staticmethod
    def _store_one(assoc: Any, path: Path, send: DueSend | None = None) -> str | None:
        """Send one file; None on success, else why it failed."""
        if not path.is_file():
            return f"de-identified file {path.name} is missing from the outbox"
        try:
            status = assoc.send_c_store(path)
        except ValueError:  # no accepted context for its SOP class / syntax
            what = (f"{_uid_name(send.sop_class_uid)} in {_uid_name(send.transfer_syntax)}"
                    if send is not None else "it")
            return f"the archive accepted no presentation context for {what}"
        except Exception as exc:
            return f"sending failed: {short_reason(exc)}"
        if not status or "Status" not in status:
            return "no response from the archive (association aborted or timed out)"
        code = int(status.Status)
        if code in _SUCCESS_STATUSES:
            return None
        from pynetdicom.status import code_to_category

        return f"archive answered status 0x{code:04X} ({code_to_category(code)})"

    def _record_sent(self, send_ids: list[int]) -> None:
        if not send_ids:
            return
        assert self.journal is not None
        self.journal.mark_sent(send_ids)

    def _failed(self, send: DueSend, error: str, token: str) -> None:
        self._failed_all([send], error, token)

    def _failed_all(self, batch: list[DueSend], error: str, token: str) -> None:
        """One failed attempt for each send; they retry together, as one association."""
        if not batch:
            return
        assert self.journal is not None
        attempts = max(s.attempts for s in batch) + 1
        delay = backoff_delay(attempts, self.config.forward, self._rng)
        quarantined = self.journal.mark_send_failed([s.send_id for s in batch], error,
                                                    time.time() + delay,
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
