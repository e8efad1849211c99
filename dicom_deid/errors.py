"""The root of every exception dicom-deid raises on purpose.

    try:
        outcome = deidentifier.deidentify(path)
    except DeidError as exc:
        reason = str(exc)        # safe to log, to print and to store beside a quarantined file

Contract: the message of a DeidError (and of every subclass) carries no PHI: no value read
from a DICOM header or from pixels (names, IDs, UIDs, dates, free text), and no message of
a third-party exception that might quote one (those are reduced to their type name). It may
name a file or folder the caller gave (the caller's own path), an attribute by keyword or
tag, counts, byte offsets, and setting names. That is what lets the pipeline put the message
of any DeidError into a quarantine reason, the node's journal and its logs, while any other
exception is reported by its type alone.

Subclasses keep a second, standard base where callers catch that (ProfileError is also a
ValueError, JournalError a RuntimeError ...), so `except ValueError` keeps working.
"""

from __future__ import annotations


class DeidError(Exception):
    """Something dicom-deid cannot do, said without PHI (see the module's contract)."""


__all__ = ["DeidError"]
