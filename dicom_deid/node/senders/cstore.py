"""C-STORE SCU: one association per batch, files sent as written (no decoding).

Files are sent with pynetdicom's chunked send, so the archive receives exactly the
de-identified outputs. A batch needs at most 128 presentation contexts (one association).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import defaultdict
from pathlib import Path

from pynetdicom.association import Association

from dicom_deid.config import Destination, NodeConfig
from dicom_deid.node.journal import DueSend
from dicom_deid.node.logs import short_reason
from dicom_deid.node.senders import Outcome, client_ssl_context

MAX_CONTEXTS = 128  # presentation contexts one association may propose (PS3.8 9.3.2.2)
_SUCCESS_STATUSES = {0x0000, 0xB000, 0xB006, 0xB007}  # success and the storage warnings


def _uid_name(uid: str) -> str:
    """A standard UID by name (a UID-shaped string would be masked in the log)."""
    from pydicom.uid import UID

    name = UID(str(uid)).name
    return name if name != str(uid) else "a private SOP class or syntax"


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


class CStoreSender:
    """DICOM C-STORE to `ae_title@host:port`, optionally over TLS."""

    def __init__(self, config: NodeConfig, destination: Destination, stop: threading.Event):
        self.config = config
        self.dest = destination
        self.stop_event = stop

    def batches(self, sends: list[DueSend]) -> list[list[DueSend]]:
        return context_batches(sends)

    def close(self) -> None:
        pass

    def deliver(self, batch: list[DueSend], outcome: Outcome) -> int:
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
            outcome.failed(batch, f"cannot connect: {short_reason(exc)}")
            return 0
        if not assoc.is_established:
            outcome.failed(batch, self._why_not_associated(assoc, time.monotonic() - started))
            return 0

        delivered = 0
        try:
            for index, send in enumerate(batch):
                if self.stop_event.is_set() or not assoc.is_established:
                    break  # unreported sends stay due: the forwarder retries them
                error = self._store_one(assoc, self.config.state_dir / send.path, send)
                if error is None:
                    outcome.sent(send)
                    delivered += 1
                    continue
                outcome.failed([send], error)
                if not assoc.is_established:
                    outcome.failed(batch[index + 1:], f"association lost: {error}")
                    break
        finally:
            if assoc.is_established:
                assoc.release()
        return delivered

    def _why_not_associated(self, assoc: Association, elapsed: float) -> str:
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
    def _store_one(assoc: Association, path: Path, send: DueSend | None = None) -> str | None:
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
