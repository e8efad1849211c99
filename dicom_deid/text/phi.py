"""Which recognised text identifies the patient (the `redact-phi` mode).

    terms = PhiTerms.from_dataset(original_ds)
    terms.identifying("DOE^JANE 02/03/1957", confidence=0.93) -> True

A line is identifying when it contains one of the original header's identifying values (name
parts, patient and other IDs, accession and study IDs, dates and times written in the common
formats, institution and physician names) or looks like a date, a time or an ID by itself. Text
the recogniser is unsure of is treated as identifying: this mode keeps harmless text, it does not
take chances with text it cannot read. The terms live only in memory and are never logged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydicom.dataset import Dataset

MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
NAME_KEYWORDS = ("PatientName", "OtherPatientNames", "PatientBirthName", "PatientMotherBirthName",
                 "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName",
                 "NameOfPhysiciansReadingStudy", "RequestingPhysician", "PhysiciansOfRecord")
ID_KEYWORDS = ("PatientID", "OtherPatientIDs", "AccessionNumber", "StudyID", "IssuerOfPatientID",
               "MedicalRecordLocator", "AdmissionID", "RequestedProcedureID")
DATE_KEYWORDS = ("PatientBirthDate", "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate",
                 "InstanceCreationDate")
TIME_KEYWORDS = ("PatientBirthTime", "StudyTime", "SeriesTime", "AcquisitionTime", "ContentTime")
PLACE_KEYWORDS = ("InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
                  "StationName", "PatientAddress")
# Words of an institution's name that say nothing about which one it is.
COMMON_WORDS = frozenset({"THE", "AND", "FOR", "OF", "ST", "HOSPITAL", "CLINIC", "MEDICAL",
                          "CENTER", "CENTRE", "UNIVERSITY", "DEPARTMENT", "DEPT", "HEALTH",
                          "INSTITUTE", "GENERAL", "KLINIKUM", "HOPITAL", "SAINT"})

_DATE = re.compile(
    r"\d{1,4}\s?[-/.]\s?\d{1,2}\s?[-/.]\s?\d{2,4}"
    r"|\d{1,2}\s?[-/. ]?\s?(?:" + "|".join(MONTHS) + r")[A-Z]*\s?[-/. ]?\s?\d{2,4}"
    r"|(?:" + "|".join(MONTHS) + r")[A-Z]*\s?\d{1,2},?\s?\d{2,4}"
)
_TIME = re.compile(r"\d{1,2}\s?[:h]\s?\d{2}")
_LONG_NUMBER = re.compile(r"\d{5,}")
_MIXED_ID = re.compile(r"\b(?=[A-Z0-9]*\d)(?=[A-Z0-9]*[A-Z])[A-Z0-9]{6,}\b")


def _norm(text: str) -> str:
    return re.sub(r"[^0-9A-Z]", "", text.upper())


def _values(ds: Dataset, keyword: str) -> list[str]:
    value = ds.get(keyword, None)
    if value is None or value == "":
        return []
    items = value if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue" else [value]
    return [str(v) for v in items if str(v).strip()]


def date_forms(value: str) -> set[str]:
    """A DICOM date (YYYYMMDD) as it may be burned in, normalised (letters and digits only)."""
    m = re.fullmatch(r"(\d{4})(\d{2})(\d{2})", value.strip())
    if not m:
        return set()
    y, mo, d = m.groups()
    yy = y[2:]
    mon = MONTHS[int(mo) - 1] if 1 <= int(mo) <= 12 else ""
    forms = {y + mo + d, d + mo + y, mo + d + y, d + mo + yy, mo + d + yy, yy + mo + d}
    if mon:
        forms |= {d + mon + y, str(int(d)) + mon + y, mon + d + y, d + mon + yy, mon + str(int(d)) + y}
    # A day or month without its leading zero (3/2/1957).
    forms |= {str(int(d)) + str(int(mo)) + y, str(int(mo)) + str(int(d)) + y}
    return forms


def time_forms(value: str) -> set[str]:
    m = re.match(r"(\d{2})(\d{2})(\d{2})?", value.strip())
    if not m:
        return set()
    hh, mm, ss = m.groups()
    forms = {hh + mm}
    if ss:
        forms.add(hh + mm + ss)
    return forms


@dataclass
class PhiTerms:
    words: set[str] = field(default_factory=set)      # names, places: matched as substrings (>= 3)
    short: set[str] = field(default_factory=set)      # 2-letter name parts: matched as whole words
    numbers: set[str] = field(default_factory=set)    # IDs, dates, times, normalised

    @classmethod
    def from_dataset(cls, ds: Dataset | None) -> PhiTerms:
        terms = cls()
        if ds is None:
            return terms
        for kw in NAME_KEYWORDS:
            for value in _values(ds, kw):
                terms.add_words(re.split(r"[\^\s,=]+", value))
        for kw in PLACE_KEYWORDS:
            for value in _values(ds, kw):
                terms.add_words([w for w in re.split(r"[\s,.;:/()-]+", value)
                                 if w.upper() not in COMMON_WORDS])
        for kw in ID_KEYWORDS:
            for value in _values(ds, kw):
                n = _norm(value)
                if len(n) >= 3:
                    terms.numbers.add(n)
        for kw in DATE_KEYWORDS:
            for value in _values(ds, kw):
                terms.numbers |= date_forms(value)
        for kw in TIME_KEYWORDS:
            for value in _values(ds, kw):
                terms.numbers |= time_forms(value)
        return terms

    def add_words(self, words: Iterable[str]) -> None:
        for word in words:
            n = _norm(word)
            if len(n) >= 3:
                self.words.add(n)
            elif len(n) == 2 and n.isalpha():
                self.short.add(n)

    def __bool__(self) -> bool:
        return bool(self.words or self.short or self.numbers)

    def identifying(self, text: str, confidence: float = 1.0, *, min_confidence: float = 0.6) -> bool:
        """Whether a recognised line must be covered."""
        upper = text.upper().strip()
        if not upper or confidence < min_confidence:
            return True                      # unreadable to us is not proof of harmless
        if _DATE.search(upper) or _TIME.search(upper) or _LONG_NUMBER.search(upper) \
                or _MIXED_ID.search(upper):
            return True
        flat = _norm(upper)
        if any(term in flat for term in self.words) or any(term in flat for term in self.numbers):
            return True
        tokens = set(re.split(r"[^0-9A-Z]+", upper))
        return bool(self.short & tokens)
