"""Append-only audit log: one JSON object per line, pseudonymised identifiers only.

Studies are named by `study_token(key, study_uid)`, instances by their journal id
(`I<n>`). Linking either back to a patient needs the journal, which only its owner reads.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from dicom_deid.header.keys import SiteKey

# One encoder for every line: json.dumps(..., default=str) builds a new JSONEncoder per
# call, a measurable part of a received instance's cost (one "received" line each).
_ENCODER = json.JSONEncoder(default=str)


def study_token(key: SiteKey, study_uid: str) -> str:
    """The pseudonym of a study in logs and audit (keyed: not confirmable from the UID)."""
    return "S-" + key.token("audit-study", study_uid.strip(), 16)


_stamp: tuple[int, str] = (-1, "")


def _now() -> str:
    """Local time to the second, as time.strftime("%Y-%m-%dT%H:%M:%S%z") gives it,
    formatted once per second (a burst of instances shares it)."""
    global _stamp
    second = int(time.time())
    if _stamp[0] != second:
        _stamp = (second, time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(second)))
    return _stamp[1]


class AuditLog:
    """Each line is written with a single O_APPEND write, so processes may share the file."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def write(self, event: str, **fields: Any) -> None:
        record = {"time": _now(), "event": event, **fields}
        line = _ENCODER.encode(record) + "\n"
        os.write(self._fd, line.encode("utf-8"))

    def close(self) -> None:
        os.close(self._fd)
