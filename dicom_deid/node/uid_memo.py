"""pydicom's UID, without re-validating a UID already found valid.

Why: pydicom 3.0 validates a UID with a regular expression every time one is made, also
when it is made from a UID; pynetdicom makes each UID of an A-ASSOCIATE-RQ two or three
times over (set_uid, then validate_ui, then is_valid). For storescu's 128 proposed
contexts x 3 transfer syntaxes that is ~7,400 validations, about half of the 30-40 ms of
CPU (and GIL) an association costs the receiver before its first instance, when a small
instance costs ~2-3 ms.

The same strings come back in every association (SOP classes, transfer syntaxes), so a
string that once passed pydicom's own UI validation (`validate_value("UI", s, RAISE)`,
whatever pydicom's validators are) is remembered, and a UID made from it again skips the
check: validation is a pure function of the string, so the outcome (no error, no warning)
is the one pydicom would reach. Anything not remembered goes through pydicom unchanged,
warnings and errors included. The memo is bounded (cleared when full), so a peer sending
endless new UIDs costs a set of at most _MAX short strings.

Installed by the receiver (node/receiver.py) in its own process; `install()` is
idempotent. Upstream: the report in issue 17's closing notes (stop 28)
(`UID()` skipping re-validation of a UID).
"""

from __future__ import annotations

import threading
from typing import Any

_MAX = 16384
_known: set[str] = set()
_lock = threading.Lock()
_installed = False


def _remember(value: str) -> None:
    from pydicom import config
    from pydicom.valuerep import validate_value

    if not isinstance(value, str) or not value:
        return  # "" passes validation but is not is_valid: never remembered
    try:
        validate_value("UI", value, config.RAISE)
    except ValueError:
        return
    with _lock:
        if len(_known) >= _MAX:
            _known.clear()
        _known.add(str(value))


def known_valid(value: str) -> bool:
    """Whether pydicom's UI validation has passed this exact string before."""
    return value in _known


def install() -> None:
    """Patch pydicom.uid.UID in this process (see the module docstring)."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    from pydicom.uid import UID

    original_new = UID.__new__
    original_is_valid = UID.is_valid

    def __new__(cls: type[UID], val: str, validation_mode: int | None = None) -> UID:
        if isinstance(val, str) and val in _known:
            uid = str.__new__(cls, val.strip())
            if hasattr(val, "_PRIVATE_TS_ENCODING"):
                uid._PRIVATE_TS_ENCODING = val._PRIVATE_TS_ENCODING
            return uid
        uid = original_new(cls, val, validation_mode)
        _remember(val)
        return uid

    def is_valid(self: UID) -> bool:
        if self in _known:  # passed the same length and regular expression before
            return True
        return bool(original_is_valid.fget(self))  # type: ignore[attr-defined]

    UID.__new__ = staticmethod(__new__)  # type: ignore[assignment,method-assign]
    UID.is_valid = property(is_valid)  # type: ignore[assignment,method-assign]
    _originals.update(new=original_new, is_valid=original_is_valid)


_originals: dict[str, Any] = {}


def uninstall() -> None:
    """Put pydicom's UID back (tests)."""
    global _installed
    from pydicom.uid import UID

    with _lock:
        if not _installed:
            return
        UID.__new__ = staticmethod(_originals["new"])  # type: ignore[assignment,method-assign]
        UID.is_valid = _originals["is_valid"]  # type: ignore[method-assign]
        _known.clear()
        _installed = False
