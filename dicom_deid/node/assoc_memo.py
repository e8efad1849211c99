"""A-ASSOCIATE-RQ items decoded once per distinct request, not once per association.

Why: a sender proposes the same presentation contexts every time (DCMTK storescu: 128
storage SOP classes x 3 transfer syntaxes, ~9.6 KB). pynetdicom 3.0.4 decodes them item
by item through its generic field decoders (~6.5 ms of CPU and GIL per association here,
with node/uid_memo.py installed), then makes a PresentationContext of each (~1.9 ms),
before the association's first instance; a small instance costs ~2-3 ms in all. With 4
senders of 50 instances each, association set-up was ~20% of the receiver's CPU.

`decode_associate_rq` decodes the PDU's fixed fields (protocol version, AE titles) every
time, as pynetdicom does, and its variable items (application context, presentation
contexts, user information) the first time a given block of item bytes is seen; later
requests with the same bytes get the same decoded item objects. On the acceptor side
pynetdicom only reads those items (A_ASSOCIATE_RQ.to_primitive builds new primitives from
them; negotiation builds new contexts), so sharing them is safe; `RememberedRQ` also makes
each association's presentation contexts as copies of ones made once (a context's only
mutable member is its transfer syntax list, copied; the rest are ints, bools and UID
strings), instead of rebuilding and re-validating every UID.

Nothing changes for a request that is not remembered: pynetdicom decodes it, and its
errors and log lines are its own. A request is remembered only if decoding it raised
nothing and logged nothing (so a later identical one, which would log the same, is decoded
again), and only if its items fit in _MAX_ITEM_BYTES; at most _MAX_KEPT requests are kept
(the oldest forgotten first), so a peer sending endless variants costs a bounded memo
(~_MAX_KEPT x _MAX_ITEM_BYTES) and each of its requests the decode it costs today.

The answer, the A-ASSOCIATE-AC, is encoded by `encode_associate_ac`: its 128 presentation
context items straight to bytes (a transfer syntax sub-item's bytes remembered per
transfer syntax), everything else by pynetdicom; the same bytes as A_ASSOCIATE_AC.encode
(~3.5 ms through its generic field encoders, ~0.3 ms here).

Negotiation (pynetdicom's presentation.negotiate_as_acceptor, ~2.5-3.5 ms for 128
proposed contexts against the node's ~150 supported ones) is a pure function of the
proposed contexts (id, abstract syntax, transfer syntaxes), the supported ones (abstract
syntax, transfer syntaxes, roles) and the requested roles: `install()` has acse call
`negotiate_as_acceptor` here, which remembers the answer per distinct such input (at most
_MAX_KEPT, oldest forgotten first; only allowlisted calling AEs get this far) and gives
each association copies of it.

Used by transport.GuardedDUL for the PDUs it reads and sends, and by acse once installed
(node/receiver.py, in the receiving process).
Upstream: issue 17's closing notes (pynetdicom decodes and validates an A-ASSOCIATE-RQ's
repeated presentation context items from scratch for every association, and encodes the
A-ASSOCIATE-AC field by field).
"""

from __future__ import annotations

import copy
import logging
import struct
import threading
from collections import OrderedDict
from typing import Any

from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_items import (
    PresentationContextItemAC,
    PresentationContextItemRQ,
    TransferSyntaxSubItem,
)

_MAX_KEPT = 32
_MAX_ITEM_BYTES = 32 * 1024
_FIXED = 74  # PDU header and fixed fields; the variable items follow (PS3.8 9.3.2)


class _Emitted(logging.Handler):
    """Counts the records pynetdicom's loggers emit (a decode that logged anything is
    not remembered)."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


class _Remembered:
    __slots__ = ("items", "contexts")

    def __init__(self, items: list[Any]):
        self.items = items
        # The PresentationContext of each presentation context item, made once.
        self.contexts = [
            item.to_primitive() for item in items if isinstance(item, PresentationContextItemRQ)
        ]


class RememberedRQ(A_ASSOCIATE_RQ):
    """An A-ASSOCIATE-RQ whose variable items were decoded for an earlier, identical
    request; to_primitive gives copies of that request's presentation contexts."""

    _remembered: _Remembered

    @property
    def pdu_type(self) -> int:
        return 0x01  # pynetdicom looks the type up by class

    def to_primitive(self) -> Any:
        from pynetdicom.pdu_items import UserInformationItem
        from pynetdicom.pdu_primitives import A_ASSOCIATE

        primitive = A_ASSOCIATE()
        primitive.calling_ae_title = self.calling_ae_title
        primitive.called_ae_title = self.called_ae_title
        primitive.application_context_name = self.application_context_name
        primitive.presentation_context_definition_list.extend(
            context_copies(self._remembered.contexts)
        )
        for item in self.variable_items:
            if isinstance(item, UserInformationItem):
                primitive.user_information = item.to_primitive()
        return primitive


_memo: OrderedDict[bytes, _Remembered] = OrderedDict()
_lock = threading.Lock()
_emitted: _Emitted | None = None


def _watch() -> _Emitted:
    global _emitted
    with _lock:
        if _emitted is None:
            _emitted = _Emitted()
            logging.getLogger("pynetdicom").addHandler(_emitted)
        return _emitted


def decode_associate_rq(data: bytes) -> A_ASSOCIATE_RQ:
    """The A-ASSOCIATE-RQ PDU in data (type, length and all), decoded as pynetdicom's
    A_ASSOCIATE_RQ.decode does."""
    key = data[_FIXED:]
    with _lock:
        remembered = _memo.get(key)
        if remembered is not None:
            _memo.move_to_end(key)
    if remembered is None:
        pdu = A_ASSOCIATE_RQ()
        watch = _watch()
        logged = watch.count
        pdu.decode(data)
        if len(key) <= _MAX_ITEM_BYTES and watch.count == logged:
            try:
                entry = _Remembered(list(pdu.variable_items))
            except Exception:  # to_primitive refuses it: pynetdicom will say so itself
                return pdu
            if watch.count == logged:
                with _lock:
                    _memo[key] = entry
                    while len(_memo) > _MAX_KEPT:
                        _memo.popitem(last=False)
        return pdu
    pdu = RememberedRQ()
    for (offset, length), name, func, args in pdu._decoders:
        if name != "variable_items":
            setattr(pdu, name, func(data[offset : offset + length], *args))
    pdu.variable_items = list(remembered.items)
    pdu._remembered = remembered
    return pdu


def forget() -> None:
    """Drop every remembered request and negotiation (tests)."""
    with _lock:
        _memo.clear()
        _negotiated.clear()


_syntax_items: dict[str, bytes] = {}
_MAX_SYNTAXES = 256


def _syntax_item(sub: TransferSyntaxSubItem) -> bytes:
    name = sub.transfer_syntax_name
    encoded = _syntax_items.get(name) if isinstance(name, str) else None
    if encoded is None:
        encoded = sub.encode()
        if isinstance(name, str) and len(_syntax_items) < _MAX_SYNTAXES:
            _syntax_items[str(name)] = encoded
    return encoded


def _context_item(item: PresentationContextItemAC) -> bytes:
    subs = item.transfer_syntax_sub_item
    if len(subs) != 1 or type(subs[0]) is not TransferSyntaxSubItem:
        return item.encode()
    syntax = _syntax_item(subs[0])
    # PS3.8 9.3.3.2: type 0x21, reserved, length, context id, reserved, result, reserved
    return (
        struct.pack(
            ">BBHBBBB",
            0x21,
            0,
            4 + len(syntax),
            item.presentation_context_id,
            0,
            item.result_reason,
            0,
        )
        + syntax
    )


def encode_associate_ac(pdu: A_ASSOCIATE_AC) -> bytes:
    """The bytes A_ASSOCIATE_AC.encode gives for pdu."""
    items = [
        _context_item(item) if type(item) is PresentationContextItemAC else item.encode()
        for item in pdu.variable_items
    ]
    saved = pdu.variable_items
    pdu.variable_items = []
    try:
        head = pdu.encode()  # header and fixed fields, length counting only those
    finally:
        pdu.variable_items = saved
    variable = b"".join(items)
    return head[:2] + struct.pack(">L", len(head) - 6 + len(variable)) + head[6:] + variable


_negotiated: OrderedDict[tuple, tuple[list[Any], list[Any]]] = OrderedDict()
_installed = False


def context_copies(contexts: list[Any]) -> list[Any]:
    """Copies of presentation contexts: each context and its transfer syntax list, its one
    mutable member (context id, roles and result are ints/bools, UIDs immutable str)."""
    copies = []
    for context in contexts:
        twin = copy.copy(context)
        twin._transfer_syntax = list(context._transfer_syntax)
        copies.append(twin)
    return copies


def negotiate_as_acceptor(
    rq_contexts: list[Any], ac_contexts: list[Any], roles: dict[Any, Any] | None = None
) -> tuple[list[Any], list[Any]]:
    """pynetdicom's presentation.negotiate_as_acceptor, remembered (module docstring)."""
    from pynetdicom import presentation

    key = (
        tuple((cx.context_id, cx.abstract_syntax, tuple(cx.transfer_syntax)) for cx in rq_contexts),
        tuple(
            (cx.abstract_syntax, tuple(cx.transfer_syntax), cx.scu_role, cx.scp_role)
            for cx in ac_contexts
        ),
        tuple(sorted((roles or {}).items())),
    )
    with _lock:
        known = _negotiated.get(key)
        if known is not None:
            _negotiated.move_to_end(key)
    if known is not None:
        return context_copies(known[0]), [copy.copy(role) for role in known[1]]
    result, ac_roles = presentation.negotiate_as_acceptor(rq_contexts, ac_contexts, roles)
    kept = (context_copies(result), [copy.copy(role) for role in ac_roles])
    with _lock:
        _negotiated[key] = kept
        while len(_negotiated) > _MAX_KEPT:
            _negotiated.popitem(last=False)
    return result, ac_roles


def install() -> None:
    """Have pynetdicom's acceptor negotiate through `negotiate_as_acceptor` (idempotent;
    pynetdicom's requestor side is untouched)."""
    global _installed
    from pynetdicom import acse

    with _lock:
        if not _installed:
            acse.negotiate_as_acceptor = negotiate_as_acceptor  # type: ignore[assignment]
            _installed = True


def uninstall() -> None:
    """Back to pynetdicom's own (tests)."""
    global _installed
    from pynetdicom import acse, presentation

    with _lock:
        acse.negotiate_as_acceptor = presentation.negotiate_as_acceptor
        _installed = False
