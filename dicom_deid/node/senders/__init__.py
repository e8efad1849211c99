"""Senders: how a forwarder delivers de-identified files to one kind of archive.

The forwarder (node/forwarder.py) owns the queue: which sends are due, retries with
backoff, the journal and the audit. A sender only moves the files of one batch and says,
for each send, whether the archive took it (`Outcome.sent`) or why not (`Outcome.failed`).
Adding a destination type is one module here plus its entry in `make_sender`.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Sequence
from typing import Protocol

from dicom_deid.config import Destination, NodeConfig
from dicom_deid.node.journal import DueSend


class Outcome(Protocol):
    """Where a sender reports each send of a batch, exactly once."""

    def sent(self, send: DueSend) -> None: ...

    def failed(self, sends: Sequence[DueSend], error: str) -> None: ...


class Sender(Protocol):
    """Delivers batches of one study to one destination; one object per forwarder thread."""

    def batches(self, sends: list[DueSend]) -> list[list[DueSend]]:
        """Split a study's due sends into what one connection/request carries."""
        ...

    def deliver(self, batch: list[DueSend], outcome: Outcome) -> int:
        """Send one batch; report every send to `outcome`; return how many were delivered."""
        ...

    def close(self) -> None: ...


def make_sender(config: NodeConfig, destination: Destination, stop: threading.Event) -> Sender:
    """The sender for the destination's `type`."""
    if destination.type == "dicomweb":
        from dicom_deid.node.senders.stowrs import StowRsSender

        return StowRsSender(config, destination, stop)
    from dicom_deid.node.senders.cstore import CStoreSender

    return CStoreSender(config, destination, stop)


def describe(destination: Destination) -> str:
    """Where a destination is, for logs (never with credentials: the URL holds none)."""
    if destination.type == "dicomweb":
        return f"STOW-RS {destination.url}"
    return f"{destination.ae_title}@{destination.host}:{destination.port}"


def client_ssl_context(dest: Destination) -> ssl.SSLContext | None:
    """The client TLS context of a destination (C-STORE over TLS, or https)."""
    if dest.tls is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                     cafile=str(dest.tls.ca) if dest.tls.ca else None)
    ctx.check_hostname = dest.tls.verify_hostname
    if dest.tls.cert is not None:
        ctx.load_cert_chain(str(dest.tls.cert), str(dest.tls.key))
    return ctx
