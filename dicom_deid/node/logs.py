"""Logging for the node with no PHI at any level.

Our own messages name only pseudonyms, counts, AE titles and files we created. The
libraries we use are less careful: pynetdicom's debug output dumps datasets, and pydicom's
warnings and log records quote element values (`Invalid value for VR UI: 'DOE^JOHN'`). So
pynetdicom never logs below WARNING, warnings are logged by category and origin only, a
library record has every quoted value masked, every record has anything shaped like a UID
masked and its control characters escaped (a peer's AE title cannot forge a log line),
and a library message repeated by a flood of bad input is rate-limited.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import shutil
import sys
import threading
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import IO

_UID_RE = re.compile(r"(?<![\w.])[0-9]+(?:\.[0-9]+){3,}(?![\w.])")
# A quoted value as repr() and f-strings write it: 'x', "x", b'x'. Libraries quote the
# values they complain about; none of those values belongs in a log.
_QUOTED_RE = re.compile(r"""(?<![A-Za-z0-9])(?:b?'(?:[^'\\]|\\.)*'|b?"(?:[^"\\]|\\.)*")""")
# A DICOM person name (PN) as it is written in a header: components joined by '^'
# (DOE^JOHN, Doe^Jane^^Dr). Our own messages never use '^', so anything shaped like one is a
# name that reached a log line by mistake.
_PN_RE = re.compile(r"[^\s^'\"=:/\\()\[\],;<>]+(?:\^[^\s^'\"=:/\\()\[\],;<>]*)+")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_OWN = "dicom_deid"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Mask the given values and anything shaped like a UID or a person name in text."""
    for secret in sorted({s.strip() for s in secrets if s and len(s.strip()) >= 3},
                         key=len, reverse=True):
        text = text.replace(secret, "<redacted>")
        # Person names are often written with '^'; cover their spaced forms too.
        if "^" in secret:
            for part in secret.split("^"):
                if len(part) >= 3:
                    text = re.sub(re.escape(part), "<redacted>", text, flags=re.IGNORECASE)
    text = _PN_RE.sub("<name>", text)
    return _UID_RE.sub(_mask_uid, text)


def redact_quoted(text: str) -> str:
    """Mask every quoted value (what a library quotes is usually the value it rejects)."""
    return _QUOTED_RE.sub("'<redacted>'", text)


def escape_controls(text: str) -> str:
    """Control characters as visible escapes: one record stays one line."""
    return _CONTROL_RE.sub(lambda m: f"\\x{ord(m.group(0)):02x}" if ord(m.group(0)) < 0x100
                           else f"\\u{ord(m.group(0)):04x}", text)


class RateLimiter:
    """At most `burst` events per key in each `window` seconds; counts what it refuses."""

    def __init__(self, burst: int = 5, window: float = 60.0, max_keys: int = 4096):
        self.burst = burst
        self.window = window
        self.max_keys = max_keys
        self._state: dict[str, list[float]] = {}  # key: [window start, count, suppressed]
        self._lock = threading.Lock()

    def allow(self, key: str) -> tuple[bool, int]:
        """(whether to emit, how many were suppressed since the last emitted one)."""
        now = time.monotonic()
        with self._lock:
            state = self._state.get(key)
            if state is None or now - state[0] >= self.window:
                suppressed = int(state[2]) if state else 0
                if len(self._state) >= self.max_keys:
                    self._state.clear()  # a flood of distinct keys: start over, stay bounded
                self._state[key] = [now, 1, 0]
                return True, suppressed
            if state[1] < self.burst:
                state[1] += 1
                suppressed, state[2] = int(state[2]), 0
                return True, suppressed
            state[2] += 1
            return False, 0


def _mask_uid(match: re.Match[str]) -> str:
    parts = match.group(0).split(".")
    if len(parts) == 4 and all(len(p) <= 3 and int(p) <= 255 for p in parts):
        return match.group(0)  # an IPv4 address, not a UID
    return "<uid>"


def short_reason(exc: BaseException, secrets: Iterable[str] = (), limit: int = 300) -> str:
    """An exception as a PHI-masked one-line reason."""
    message = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    text = redact(text, secrets)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _RedactingFilter(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self._library_rate = RateLimiter(burst=10, window=60.0)

    def filter(self, record: logging.LogRecord) -> bool:
        own = record.name == _OWN or record.name.startswith(_OWN + ".")
        if not own:
            allowed, suppressed = self._library_rate.allow(f"{record.name}:{record.msg}")
            if not allowed:
                return False
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: keep only its template
            message = str(record.msg)
        if not own:
            message = redact_quoted(message)
            if suppressed:
                message += f" ({suppressed} similar messages suppressed)"
        record.msg = escape_controls(redact(message))
        record.args = None
        if record.exc_info:
            # Tracebacks quote exception messages; keep the type and where it happened only.
            exc_type = record.exc_info[0]
            record.msg += f" [{exc_type.__name__ if exc_type else 'exception'}; details withheld]"
            record.exc_info = None
            record.exc_text = None
        return True


def _showwarning(message, category, filename, lineno, file=None, line=None) -> None:
    # The text of a library warning may quote header values: log its origin only.
    logging.getLogger("dicom_deid.warnings").warning(
        "%s from %s:%s (text withheld: it may quote header values)",
        getattr(category, "__name__", "Warning"), Path(str(filename)).name, lineno)


class _PrivateFileMixin:
    """Log files are created 0600 and not written while their file system is low."""

    baseFilename: str                # set by the logging.FileHandler this is mixed into
    min_free: int = 0
    _checked_at = 0.0
    _low = False
    dropped = 0

    def _open(self) -> IO[str]:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.fchmod(fd, 0o600)  # an older, wider file is tightened too
        return os.fdopen(fd, "a", encoding="utf-8", errors="backslashreplace")

    def emit(self, record: logging.LogRecord) -> None:
        now = time.monotonic()
        if self.min_free and now - self._checked_at > 1.0:
            self._checked_at = now
            try:
                low = shutil.disk_usage(os.path.dirname(self.baseFilename)).free < self.min_free
            except OSError:
                low = False
            if self._low and not low and self.dropped:
                super().emit(logging.makeLogRecord({  # type: ignore[misc]
                    "name": "dicom_deid.node.logs", "levelno": logging.WARNING,
                    "levelname": "WARNING",
                    "msg": f"{self.dropped} log records dropped while the log's file "
                           "system was below listen.min_free_disk"}))
                self.dropped = 0
            self._low = low
        if self._low:
            self.dropped += 1
            return
        super().emit(record)  # type: ignore[misc]


class PrivateRotatingFileHandler(_PrivateFileMixin, logging.handlers.RotatingFileHandler):  # type: ignore[misc]
    pass


class PrivateWatchedFileHandler(_PrivateFileMixin, logging.handlers.WatchedFileHandler):  # type: ignore[misc]
    """For worker processes: the node process rotates, workers follow the new file."""


def setup_logging(level: str = "INFO", file: Path | None = None, *, max_bytes: int = 0,
                  backups: int = 5, min_free: int = 0) -> None:
    """Configure the root logger for a node process (serve or a worker).

    With max_bytes the file is rotated here (the node process); without it the file is
    reopened when rotated by someone else (a worker).
    """
    handler: logging.Handler
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        file_handler: _PrivateFileMixin
        if max_bytes:
            file_handler = PrivateRotatingFileHandler(file, maxBytes=max_bytes,
                                                      backupCount=backups, encoding="utf-8")
        else:
            file_handler = PrivateWatchedFileHandler(file, encoding="utf-8")
        file_handler.min_free = min_free
        handler = file_handler
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"))
    handler.addFilter(_RedactingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    # Only our own messages follow log.level. Libraries log at WARNING and above: below it
    # they are noisy (codec plugins, fonts, highdicom's copy notes), and pynetdicom at INFO
    # or DEBUG logs identifiers and whole datasets.
    root.setLevel(logging.WARNING)
    logging.getLogger("dicom_deid").setLevel(getattr(logging, level.upper(), logging.INFO))
    for name in ("pynetdicom", "pydicom", "highdicom"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.showwarning = _showwarning
    threading.excepthook = _thread_exception


def _thread_exception(args: threading.ExceptHookArgs) -> None:
    # The default hook prints a traceback to stderr, which quotes exception messages.
    if args.exc_type is SystemExit:
        return
    logging.getLogger("dicom_deid.threads").error(
        "thread %s stopped on %s (details withheld)",
        getattr(args.thread, "name", "?"), getattr(args.exc_type, "__name__", "an exception"))
    warnings.simplefilter("default")
