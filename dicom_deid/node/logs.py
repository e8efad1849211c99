"""Logging for the node with no PHI at any level.

Our own messages name only pseudonyms, counts, AE titles and files we created. The
libraries we use are less careful: pynetdicom's debug output dumps datasets, and pydicom's
warnings quote element values. So pynetdicom never logs below WARNING, warnings are logged
by category and origin only, and every record passes a filter that masks anything shaped
like a UID, as a last line of defence.
"""

from __future__ import annotations

import logging
import re
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path

_UID_RE = re.compile(r"(?<![\w.])[0-9]+(?:\.[0-9]+){3,}(?![\w.])")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Mask the given values and anything shaped like a UID in text."""
    for secret in sorted({s.strip() for s in secrets if s and len(s.strip()) >= 3},
                         key=len, reverse=True):
        text = text.replace(secret, "<redacted>")
        # Person names are often written with '^'; cover their spaced forms too.
        if "^" in secret:
            for part in secret.split("^"):
                if len(part) >= 3:
                    text = re.sub(re.escape(part), "<redacted>", text, flags=re.IGNORECASE)
    return _UID_RE.sub(_mask_uid, text)


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
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: keep only its template
            message = str(record.msg)
        record.msg = redact(message)
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


def setup_logging(level: str = "INFO", file: Path | None = None) -> None:
    """Configure the root logger for a node process (serve or a worker)."""
    handler: logging.Handler
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(file, encoding="utf-8")
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
    warnings.simplefilter("default")
