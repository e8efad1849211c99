"""Replacement values: dummies valid for each VR, date shifts, and the text cleaner."""

from __future__ import annotations

import re
from datetime import date, timedelta

# D: a non-empty value of the right VR that means nothing. Strings are upper case so that
# they are valid for CS as well; every one fits the VR's maximum length.
DUMMY_TEXT = {
    "AE": "ANONYMOUS",
    "AS": "000Y",
    "CS": "ANONYMIZED",
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "LO": "ANONYMIZED",
    "LT": "ANONYMIZED",
    "PN": "ANONYMOUS",
    "SH": "ANONYMIZED",
    "ST": "ANONYMIZED",
    "UC": "ANONYMIZED",
    "UT": "ANONYMIZED",
    "UR": "urn:anonymized",
    "DS": "0",
    "IS": "0",
}
DUMMY_NUMBER_VRS = frozenset({"FL", "FD", "SL", "SS", "UL", "US", "SV", "UV", "AT"})
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UC", "UT"})
CLEANED = "CLEANED"

# A minimal, valid, empty one-page PDF: the dummy for an encapsulated PDF document.
_PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 72 72]>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)


def dummy_document(mime_type: str | None) -> bytes:
    """Dummy content for Encapsulated Document (even length, as OB requires)."""
    data = _PDF if (mime_type or "").strip().lower() == "application/pdf" else b"REMOVED\n"
    return data if len(data) % 2 == 0 else data + b"\n"


def dummy_value(vr: str) -> object:
    """A dummy value for a VR; None when the VR has no sensible dummy (remove instead)."""
    if vr in DUMMY_TEXT:
        return DUMMY_TEXT[vr]
    if vr in DUMMY_NUMBER_VRS:
        return 0
    if vr in BINARY_VRS:
        return b"\x00\x00"
    return None


# ---------------------------------------------------------------------------- dates

_DA = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_DT = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{6}(?:\.\d{1,6})?|\d{2,4})?([+-]\d{4})?$")


def _shift_date(y: int, m: int, d: int, days: int) -> date:
    return date(y, m, d) + timedelta(days=days)


def shift_da(value: str, days: int) -> str | None:
    """Shift one DA value (or a DA range 'A-B') by whole days; None if it cannot be read."""
    text = value.strip()
    if not text:
        return text
    if "-" in text:
        parts = text.split("-")
        if len(parts) != 2:
            return None
        shifted = [shift_da(p, days) if p else "" for p in parts]
        return None if None in shifted else "-".join(shifted)  # type: ignore[arg-type]
    match = _DA.match(text)
    if not match:
        return None
    try:
        year, month, day = (int(g) for g in match.groups())
        return _shift_date(year, month, day, days).strftime("%Y%m%d")
    except ValueError:
        return None


def shift_dt(value: str, days: int) -> str | None:
    """Shift one DT value by whole days, keeping its precision, time and UTC offset."""
    text = value.strip()
    if not text:
        return text
    match = _DT.match(text)
    if not match:
        return None
    year, month, day, time, zone = match.groups()
    try:
        moved = _shift_date(int(year), int(month or 1), int(day or 1), days)
    except ValueError:
        return None
    out = f"{moved.year:04d}"
    if month:
        out += f"{moved.month:02d}"
    if day:
        out += f"{moved.day:02d}"
    return out + (time or "") + (zone or "")


_TZ = re.compile(r"^[+-]\d{4}$")


def clean_timezone(value: str) -> str:
    """Timezone Offset From UTC under modified dates: a well-formed offset is kept."""
    return value.strip() if _TZ.match(value.strip()) else "+0000"


# ---------------------------------------------------------------------------- text

# Dates, times and long numbers go first, whatever the vocabulary says.
_DATEISH = re.compile(
    r"\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}|\d{1,2}:\d{2}(?::\d{2})?|\d{4,}",
)
_TOKEN = re.compile(r"[^\W_]+")  # letters and digits, any script
_SPACES = re.compile(r"\s{2,}")
_EDGE = re.compile(r"^[\s,;:/\-_.^]+|[\s,;:/\-_^]+$")


def clean_text(value: str, terms: frozenset[str], forbidden: frozenset[str] = frozenset()) -> str:
    """C for free text: keep only words of a vocabulary of clinical and technical terms.

    A description keeps its meaning when it is made of such words ("AX T1 BRAIN POST
    CONTRAST"); names, identifiers, dates and places are not in the vocabulary and are
    dropped. `forbidden` (the instance's own names and identifiers, lower case) is dropped
    even where a name happens to be a vocabulary word. What is left after cleaning, or
    CLEANED when nothing is, never contains a word outside the vocabulary.
    """
    text = _DATEISH.sub(" ", value)

    def keep(match: re.Match[str]) -> str:
        word = match.group(0)
        low = word.lower()
        if low in forbidden:
            return ""
        if low in terms or (word.isdigit() and len(word) <= 3):
            return word
        return ""

    text = _TOKEN.sub(keep, text)
    text = _SPACES.sub(" ", re.sub(r"([^\w\s])(?:\s*[^\w\s])+", r"\1", text))
    text = _EDGE.sub("", text).strip()
    if not _TOKEN.search(text):
        return CLEANED
    return text
