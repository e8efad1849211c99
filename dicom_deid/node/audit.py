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


def study_token(key: SiteKey, study_uid: str) -> str:
    """The pseudonym of a study in logs and audit (keyed: not confirmable from the UID)."""
    return "S-" + key.token("audit-study", study_uid.strip(), 16)


class AuditLog:
    """Each line is written with a single O_APPEND write, so processes may share the file."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def write(self, event: str, **fields: Any) -> None:
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "event": event, **fields}
        line = json.dumps(record, sort_keys=False, default=str) + "\n"
        os.write(self._fd, line.encode("utf-8"))

    def close(self) -> None:
        os.close(self._fd)
