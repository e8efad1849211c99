"""The PS3.15 Annex E engine: one walk over a dataset, every table attribute at every depth.

Speed: the profile's rules are resolved against the instance's IOD once per (profile, SOP
Class) (Profile.resolver), and the walk touches only what it must. An element that no rule
names and that is not a sequence, a UID, or a date under the date-shift option is carried
over as the reader left it (an undecoded RawDataElement), so it is neither decoded nor
re-encoded.

What the engine does with attributes the table does not list (Annex E is the list of what
to act on, so they are kept) has three exceptions:
- sequences are walked, so a listed attribute is found at any depth;
- UIDs are remapped with the same keyed function as U, so references stay consistent,
  except UIDs that name a class, a transfer syntax or a coding scheme, and any UID under
  the DICOM root 1.2.840.10008, which identify no one;
- under retain-longitudinal-modified-dates every DA and DT is shifted, so an unlisted date
  cannot reveal the offset.
Inside a sequence the table tells to dummy (D) or clean (C), unlisted text is replaced too,
because nothing there is known to be safe (see _scrub).
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from dataclasses import dataclass, field

from pydicom.datadict import DicomDictionary
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pydicom.valuerep import VR as _VR

from dicom_deid import __version__
from dicom_deid.errors import DeidError
from dicom_deid.header.keys import SiteKey
from dicom_deid.header.options import BASIC_PROFILE_CODE, OPTION_CODES
from dicom_deid.header.pixels import PixelStatus, may_show_face
from dicom_deid.header.profile import Profile, Rule
from dicom_deid.header.values import (
    BINARY_VRS,
    DUMMY_TEXT,
    TEXT_VRS,
    clean_text,
    clean_timezone,
    dummy_document,
    dummy_value,
    shift_da,
    shift_dt,
)

NORMAL, DUMMY, DUMMY_ALL, CLEAN = 0, 1, 2, 3
KNOWN_VRS = frozenset(str(v.value) for v in _VR)
_UNDEFINED = 0xFFFFFFFF
_MAX_DEPTH = 64
DICOM_ROOT = "1.2.840.10008."

PATIENT_ID = 0x00100020
PATIENT_NAME = 0x00100010
STUDY_UID = 0x0020000D
SOP_CLASS_UID = 0x00080016
SOP_INSTANCE_UID = 0x00080018
ENCAPSULATED_DOCUMENT = 0x00420011
ENCAPSULATED_DOCUMENT_LENGTH = 0x00420015
MIME_TYPE = 0x00420012
TIMEZONE_OFFSET = 0x00080201
# Numbers and coded strings: kept inside dummied or cleaned sequences (see _scrub).
KEEP_VRS = frozenset({"DS", "IS", "FL", "FD", "SL", "SS", "UL", "US", "SV", "UV", "AT", "CS"})
# Identifiers and places whose words the text cleaner drops (besides every person name).
IDENTIFYING_TEXT = frozenset({
    0x00100020, 0x00101000, 0x00080050, 0x00200010, 0x00080080, 0x00080081, 0x00081040,
    0x00101040, 0x00081010, 0x00100021, 0x00101090, 0x00181000, 0x00380010, 0x00400009,
    0x00401001, 0x00400253, 0x00102154, 0x00080092, 0x00080094,
})


def _ui_keep_tags() -> frozenset[int]:
    # UIDs that name a kind of thing, not an instance: SOP classes, transfer syntaxes,
    # coding schemes, context groups, templates. They identify no patient.
    pattern = re.compile(
        r"SOPClass|ClassUID|TransferSyntax|CodingSchemeUID|ContextUID|MappingResourceUID"
        r"|ContextGroupExtensionCreatorUID|SegmentationTemplateUID|PrivateInformationCreatorUID"
    )
    return frozenset(t for t, e in DicomDictionary.items() if e[0] == "UI" and pattern.search(e[4]))


UI_KEEP = _ui_keep_tags()


def _code_tags() -> frozenset[int]:
    # Coded-concept attributes: values from controlled terminologies, not free text.
    names = (
        "CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning",
        "LongCodeValue", "URNCodeValue", "ContextIdentifier", "MappingResource",
        "MappingResourceName", "ContextGroupExtensionFlag", "TemplateIdentifier",
        "ValueType", "RelationshipType", "ContinuityOfContent", "GraphicType",
        "GraphicLayer", "MeasurementUnitsCodeSequence",
    )
    from pydicom.datadict import tag_for_keyword

    return frozenset(int(t) for t in (tag_for_keyword(n) for n in names) if t is not None)


CODE_TAGS = _code_tags()
# What a code says (value and meaning), as opposed to how it is structured.
CODE_TEXT_TAGS = frozenset({0x00080100, 0x00080104, 0x00080119, 0x00080120})
CODING_SCHEME_DESIGNATOR = 0x00080102
# Coding schemes of PS3.16 Table 8-1 whose meanings are a published vocabulary. A local or
# private scheme (a designator starting with 99, or one this list does not know) may be free
# text written at the site: it is treated like any other text of the enclosing attribute.
STANDARD_SCHEMES = frozenset({
    "DCM", "SCT", "SRT", "SNM3", "LN", "UCUM", "FMA", "RADLEX", "NCIT", "MDC", "UMLS",
    "I10", "I10P", "I9", "I9C", "ICD10", "ICD10PCS", "ICD9CM", "ICD11", "ICDO3", "HL7",
    "ACR", "BARI", "NCDR", "NEU", "NICIP", "RFC5646", "RFC3066", "ISO3166_1", "ISO639_1",
    "ISO639_2", "ISO_OID", "UBERON", "MSH", "RXNORM", "WHOATC", "ATC", "PUBCHEM_CID",
    "GMDN", "ITIS_TSN", "NCBI", "MGI", "IBSI", "C4", "C5", "CD2", "DC", "DCMUID", "POS",
    "ASTM-SIGPURPOSE", "CTV3", "HPC", "IHE", "LNC", "MA", "MAYONEDIC", "NYUMCCG", "RO",
    "UPC", "UNS", "SNOMED", "SNOMED-CT",
})
_TIME = re.compile(r"\d{2}(:?\d{2}(:?\d{2}(\.\d{1,6})?)?)?(-\d{2}(:?\d{2}(:?\d{2}(\.\d{1,6})?)?)?)?"
                   r"|-\d{2}(:?\d{2}(:?\d{2}(\.\d{1,6})?)?)?")


def standard_scheme(item: Dataset) -> bool:
    """Whether the code in this item comes from a standard, published coding scheme."""
    if CODING_SCHEME_DESIGNATOR not in item:
        # Long Code Value / URN Code Value without a designator: a URN names a standard
        # vocabulary only under its own URN; nothing here tells, so it is not kept as code.
        return False
    try:
        designator = str(item[CODING_SCHEME_DESIGNATOR].value or "").strip().upper()
    except Exception:  # noqa: BLE001 (an unreadable designator is not a known scheme)
        return False
    return designator in STANDARD_SCHEMES and not designator.startswith("99")


class DeidentificationError(DeidError):
    """An instance the engine cannot de-identify. The message carries no PHI (tags only)."""


@dataclass
class HeaderResult:
    """The de-identified dataset and PHI-free facts about what was done."""

    dataset: Dataset
    actions: Counter = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)
    date_mode: str = "remove"
    pseudonym_source: str | None = None        # 'keyed', 'lookup' or None
    may_show_face: bool = False
    offset_days: int | None = None             # the patient's date shift, under "shift"


def tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _dictionary_vr(tag: int) -> str:
    entry = DicomDictionary.get(tag)
    if entry is None:
        if (tag >> 16) & 0xFF00 in (0x5000, 0x6000):
            entry = DicomDictionary.get(tag & 0xFF00FFFF)
        if entry is None:
            return "UN"
    return entry[0].split(" or ")[0]


def _values(value: object) -> list:
    if value is None:
        return []
    if isinstance(value, MultiValue | list | tuple):
        return list(value)
    return [value]


def _element(tag: int, vr: str, values: list) -> DataElement:
    value: object = values[0] if len(values) == 1 else (values if values else None)
    return DataElement(BaseTag(tag), vr, value)


class _Walker:
    """One instance's walk: the resolved rules, the keyed mappings, the counts."""

    def __init__(self, profile: Profile, key: SiteKey, ds: Dataset) -> None:
        self.profile = profile
        self.key = key
        self.rules: dict[int, Rule] = profile.rules
        self.sop_class = str(ds.get(SOP_CLASS_UID).value).strip() if SOP_CLASS_UID in ds else ""
        self.top, _ = profile.resolver(self.sop_class)
        self.date_mode = profile.date_mode
        self.retain_uids = profile.retain_uids
        self.safe = {(s.group, s.creator, s.element) for s in profile.safe_private}
        self.retain_private = profile.retain_safe_private
        self.counts: Counter = Counter()
        self.warnings: list[str] = []
        self.uid_cache: dict[str, str] = {}
        self.pseudonym_source: str | None = None
        self._identity = self._patient_identity(ds)
        self._offset: int | None = None
        self._forbidden: frozenset[str] | None = None
        self._top = ds

    # ------------------------------------------------------------------ identity
    @staticmethod
    def _text(ds: Dataset, tag: int) -> str:
        if tag not in ds:
            return ""
        value = ds[tag].value
        return str(value).strip() if value is not None else ""

    def _patient_identity(self, ds: Dataset) -> tuple[str, str]:
        """Who the patient is, for pseudonyms and the date offset: the original Patient ID,
        else the name, else the study (then dates shift per study)."""
        for tag, kind in ((PATIENT_ID, "id"), (PATIENT_NAME, "name"), (STUDY_UID, "study")):
            text = self._text(ds, tag)
            if text:
                return kind, text
        return "none", ""

    @property
    def offset_days(self) -> int:
        if self._offset is None:
            low, high = self.profile.date_shift_days
            kind, identity = self._identity
            self._offset = low + self.key.integer("date-shift", f"{kind}:{identity}", high - low + 1)
        return self._offset

    @property
    def forbidden(self) -> frozenset[str]:
        """The instance's own names and identifiers, as words the text cleaner must drop
        even where one happens to be a vocabulary word (a patient called Head)."""
        if self._forbidden is None:
            words: set[str] = set()
            ds = self._top
            for tag in ds.keys():  # noqa: SIM118 (iterating a Dataset decodes every element)
                t = int(tag)
                if t >> 16 & 1:
                    continue
                rule = self.rules.get(t)
                if rule is not None and rule.action == "K":
                    continue
                vr = ds.get_item(tag, keep_deferred=True).VR or _dictionary_vr(t)
                if vr == "PN" or t in IDENTIFYING_TEXT:
                    for value in _values(ds[tag].value):
                        words.update(w.lower() for w in re.findall(r"[^\W_]+", str(value)) if len(w) > 1)
            self._forbidden = frozenset(words)
        return self._forbidden

    # ------------------------------------------------------------------ walk
    def walk(self, src: Dataset, path: tuple[int, ...], mode: int) -> Dataset:
        if len(path) > _MAX_DEPTH:
            raise DeidentificationError(f"sequences nested deeper than {_MAX_DEPTH} levels")
        out: dict = {}
        rules = self.rules
        top = self.top if not path else None
        kept_private: list[int] = []
        for tag in src.keys():  # noqa: SIM118 (iterating a Dataset decodes every element)
            t = int(tag)
            group = t >> 16
            if group & 1:
                new = self._private(src, tag, path)
                if new is not None:
                    out[tag] = new
                    kept_private.append(t)
                continue
            if not t & 0xFFFF or group == 2:
                continue  # group lengths (retired, and wrong after editing); stray file meta
            # keep_deferred: a Pixel Data value left in its file (read_instance) stays there.
            elem = src.get_item(tag, keep_deferred=True)
            if type(elem) is RawDataElement:
                _check_raw(elem)
            rule = rules.get(t)
            action = None
            try:
                if rule is None:
                    if 0x5000 <= group <= 0x60FF and group & 0xFF00 in (0x5000, 0x6000):
                        # Curves (retired) and overlays: bitmaps the header cannot clean, and
                        # removing only Overlay Data would leave an invalid Overlay Plane module.
                        self.counts["X"] += 1
                        continue
                    new = self._unlisted(src, tag, elem, path, mode)
                else:
                    if top is not None:
                        action = top[t]
                    else:
                        action = self.profile.resolve_nested(self.sop_class, t, path)
                    new = self._apply(src, tag, elem, rule, action, path)
            except DeidentificationError:
                raise
            except Exception as exc:  # noqa: BLE001 (pydicom raises many types on bad values)
                new = self._unreadable(tag, action, exc)
            if new is not None:
                out[tag] = new
        for t in kept_private:  # a kept private element keeps its private creator
            creator = BaseTag((t & 0xFFFF0000) | ((t & 0xFF00) >> 8))
            if creator not in out and creator in src:
                out[creator] = src.get_item(creator)
        ds = Dataset(out, parent_encoding=getattr(src, "_parent_encoding", "iso8859"))
        implicit, little = src.original_encoding
        ds.set_original_encoding(implicit, little, src.original_character_set)
        if hasattr(src, "is_undefined_length_sequence_item"):
            ds.is_undefined_length_sequence_item = src.is_undefined_length_sequence_item
        return ds

    def _unreadable(self, tag: BaseTag, action: str | None, exc: Exception):
        """An element whose value pydicom cannot convert (a bad VR, a broken charset, a
        malformed number): acted on by its tag's action where that needs no value, else the
        instance fails with a reason that names the element (by tag, never its value)."""
        t = int(tag)
        if action in ("X", "Z", "D"):
            self.warnings.append(f"unreadable value of {tag_text(t)} {'removed' if action == 'X' else 'replaced'}")
            if action == "X":
                return None
            vr = _dictionary_vr(t)
            if action == "Z" or vr in ("UN", "SQ"):
                return DataElement(tag, "SQ", Sequence()) if vr == "SQ" else DataElement(tag, vr, None)
            return self._dummy_vr(tag, vr)
        raise DeidentificationError(
            f"element {tag_text(t)} cannot be read ({type(exc).__name__}), so it cannot be "
            "de-identified"
        )

    def _dummy_vr(self, tag: BaseTag, vr: str):
        value = dummy_value(vr)
        if value is None:
            self.counts["X"] += 1
            return None
        return DataElement(tag, vr, value)

    def _vr(self, elem: DataElement | RawDataElement, t: int) -> str:
        vr = elem.VR
        if not vr or vr == "UN" or " or " in vr or vr not in KNOWN_VRS:
            known = _dictionary_vr(t)
            if known != "UN" or not vr:
                return known
        return vr

    def _sequence(self, src: Dataset, tag: BaseTag, path: tuple[int, ...], mode: int) -> DataElement:
        elem = src[tag]
        if not isinstance(elem.value, Sequence):
            raise DeidentificationError(f"sequence {tag_text(int(tag))} could not be parsed")
        new_path = path + (int(tag),)
        items = Sequence([self.walk(item, new_path, mode) for item in elem.value])
        new = DataElement(tag, "SQ", items)
        new.is_undefined_length = elem.is_undefined_length
        return new

    # ------------------------------------------------------------------ private
    def _private(self, src: Dataset, tag: BaseTag, path: tuple[int, ...]) -> object:
        t = int(tag)
        number = t & 0xFFFF
        if not self.retain_private or number < 0x1000:
            # Creators (gggg,0010-00FF) come back with their kept elements (see walk).
            if number >= 0x0010 and not self.retain_private:
                self.counts["private removed"] += 1
            return None
        creator_tag = (t & 0xFFFF0000) | (number >> 8)
        creator = src.get(creator_tag)
        name = str(creator.value).strip() if creator is not None and creator.value else ""
        if (t >> 16, name, number & 0xFF) not in self.safe:
            self.counts["private removed"] += 1
            return None
        self.counts["private kept"] += 1
        elem = src.get_item(tag)
        if type(elem) is RawDataElement:
            _check_raw(elem)
        if self._vr(elem, t) == "SQ" or (elem.VR == "SQ"):
            return self._sequence(src, tag, path, NORMAL)
        return _copy(elem)

    # ------------------------------------------------------------------ unlisted
    def _unlisted(self, src: Dataset, tag: BaseTag, elem, path: tuple[int, ...], mode: int):
        t = int(tag)
        vr = self._vr(elem, t)
        if vr == "SQ":
            return self._sequence(src, tag, path, mode)
        if vr == "UI":
            if self.retain_uids or t in UI_KEEP:
                return _copy(elem)
            return self._uids(src, tag)
        if mode == NORMAL:
            if self.date_mode == "shift" and vr in ("DA", "DT"):
                return self._shift(src, tag, vr)
            return _copy(elem)
        return self._scrub(src, tag, elem, vr, mode)

    def _scrub(self, src: Dataset, tag: BaseTag, elem, vr: str, mode: int):
        """Unlisted elements inside a sequence the table dummies (D) or cleans (C).

        Kept: numbers, coded strings (CS) and, unless the sequence is itself an
        identification code sequence (DUMMY_ALL), coded concepts (CodeValue,
        CodeMeaning ...), which come from terminologies. Dates follow the date option.
        Free text is cleaned (C) or replaced (D); binary values are removed.
        """
        t = int(tag)
        if vr in KEEP_VRS:
            return _copy(elem)
        if vr in ("DA", "DT", "TM"):
            if self.date_mode == "keep":
                return _copy(elem)
            if self.date_mode == "shift":
                return self._time(src, tag) if vr == "TM" else self._shift(src, tag, vr)
            return self._dummy(src, tag, vr)
        if t in CODE_TAGS and mode != DUMMY_ALL:
            if t not in CODE_TEXT_TAGS or standard_scheme(src):
                return _copy(elem)
            # A local or private scheme's value and meaning are free text: they follow the
            # enclosing sequence's action below.
            self.counts["local code"] += 1
        if vr in BINARY_VRS:
            self.counts["X"] += 1
            return None
        if mode == CLEAN:
            return self._clean(src, tag, elem, vr)
        return self._dummy(src, tag, vr)

    # ------------------------------------------------------------------ actions
    def _apply(self, src: Dataset, tag: BaseTag, elem, rule: Rule, action: str, path):
        t = int(tag)
        self.counts[action] += 1
        if action == "X":
            return None
        vr = self._vr(elem, t)
        if action == "K":
            return self._sequence(src, tag, path, NORMAL) if vr == "SQ" else _copy(elem)
        if action == "Z":
            return DataElement(tag, "SQ", Sequence()) if vr == "SQ" else DataElement(tag, vr, None)
        if action == "U":
            if vr == "SQ":
                # U* on a reference sequence: its UIDs are replaced (as every UID is), and
                # anything else in it that is text is not known to be safe: dummied.
                return self._sequence(src, tag, path, DUMMY)
            return self._uids(src, tag) if vr == "UI" else self._dummy(src, tag, vr)
        if action == "D":
            if vr == "SQ":
                name = DicomDictionary.get(t, ("", "", "", "", ""))[4]
                return self._sequence(src, tag, path, DUMMY_ALL if name.endswith("CodeSequence") else DUMMY)
            return self._dummy(src, tag, vr)
        if action == "C":
            if vr == "SQ":
                return self._sequence(src, tag, path, CLEAN)
            return self._clean(src, tag, elem, vr)
        if action == "PSEUDO_ID":
            return self._pseudo_id(src, tag)
        if action == "PSEUDO_NAME":
            return self._pseudo_name(src, tag)
        if action == "REPLACE":
            return DataElement(tag, vr, rule.value)
        raise DeidentificationError(f"no action {action!r} for {tag_text(t)}")

    def _uid(self, value: str) -> str:
        value = value.strip().rstrip("\x00")
        if not value or value.startswith(DICOM_ROOT):
            return value
        new = self.uid_cache.get(value)
        if new is None:
            new = self.uid_cache[value] = self.key.uid(value)
        return new

    def _uids(self, src: Dataset, tag: BaseTag) -> DataElement:
        values = _values(src[tag].value)
        return _element(int(tag), "UI", [self._uid(str(v)) for v in values])

    def _dummy(self, src: Dataset, tag: BaseTag, vr: str):
        t = int(tag)
        if vr == "UI":
            # A dummy UID that still keeps references consistent: the keyed mapping.
            values = _values(src[tag].value) or [f"dummy:{t}"]
            return _element(t, "UI", [self.key.uid(str(values[0]))])
        if t == ENCAPSULATED_DOCUMENT:
            mime = src.get(MIME_TYPE)
            return DataElement(tag, "OB", dummy_document(mime.value if mime else None))
        value = dummy_value(vr)
        if value is None:
            self.counts["X"] += 1
            return None
        return DataElement(tag, vr, value)

    def _shift(self, src: Dataset, tag: BaseTag, vr: str) -> DataElement | None:
        shift = shift_da if vr == "DA" else shift_dt
        out = []
        for value in _values(src[tag].value):
            moved = shift(str(value), self.offset_days)
            if moved is None:
                self.warnings.append(f"unreadable {vr} in {tag_text(int(tag))} replaced by a dummy")
                moved = DUMMY_TEXT[vr]
            out.append(moved)
        self.counts["shifted"] += 1
        return _element(int(tag), vr, out)

    def _time(self, src: Dataset, tag: BaseTag) -> DataElement:
        """A time under the date-shift option: kept, as the shift is whole days, if it is a
        time; any other text in a TM element is replaced by the dummy."""
        values = []
        for value in _values(src[tag].value):
            text = str(value).strip()
            if text and not _TIME.fullmatch(text):
                self.warnings.append(f"unreadable TM in {tag_text(int(tag))} replaced by a dummy")
                text = DUMMY_TEXT["TM"]
            values.append(text)
        return _element(int(tag), "TM", values)

    def _clean(self, src: Dataset, tag: BaseTag, elem, vr: str):
        """C on one value: replace it with one of similar meaning that identifies nobody.

        Dates: shifted under retain-longitudinal-modified-dates (times stay: the shift is
        whole days), otherwise a dummy. AE titles: a keyed pseudonym (still tells devices
        apart). Free text: only vocabulary words are kept (values.clean_text). Person names:
        a dummy. Coded strings and numbers: kept. Binary (overlay, curve): removed, since it
        cannot be cleaned.
        """
        t = int(tag)
        if vr in ("DA", "DT"):
            if self.date_mode == "shift":
                return self._shift(src, tag, vr)
            return _copy(elem) if self.date_mode == "keep" else self._dummy(src, tag, vr)
        if vr == "TM":
            if self.date_mode == "shift":
                return self._time(src, tag)
            return _copy(elem) if self.date_mode == "keep" else self._dummy(src, tag, vr)
        if t == TIMEZONE_OFFSET:
            return _element(t, vr, [clean_timezone(str(v)) for v in _values(src[tag].value)])
        if vr == "AE":
            values = _values(src[tag].value)
            return _element(t, vr, ["AE" + self.key.token("ae-title", str(v).strip(), 14) for v in values])
        if vr in TEXT_VRS or vr == "CS":
            # A coded string is text too: defined terms in the vocabulary survive.
            terms = self.profile.clean_terms
            values = [clean_text(str(v), terms, self.forbidden) for v in _values(src[tag].value)]
            if vr == "CS":
                values = [v.upper()[:16] for v in values]
            return _element(t, vr, values)
        if vr in KEEP_VRS:
            return _copy(elem)  # numbers
        if vr == "UI":
            return self._uids(src, tag)
        if vr in BINARY_VRS:
            self.counts["X"] += 1
            return None
        return self._dummy(src, tag, vr)

    # ------------------------------------------------------------------ pseudonyms
    def _lookup(self, original: str) -> tuple[str, str | None] | None:
        found = self.profile.lookup.get(original)
        if found is not None:
            self.pseudonym_source = "lookup"
            return found
        if self.profile.lookup_required:
            raise DeidentificationError(
                "Patient ID not found in the profile's pseudonym lookup table "
                "(pseudonym_lookup_required is set)"
            )
        self.pseudonym_source = self.pseudonym_source or "keyed"
        return None

    def _pseudo_id(self, src: Dataset, tag: BaseTag) -> DataElement:
        original = self._text(src, int(tag))
        if not original:
            return DataElement(tag, "LO", None)
        found = self._lookup(original)
        return DataElement(tag, "LO", found[0] if found else self.key.token("patient-id", original, 16))

    def _pseudo_name(self, src: Dataset, tag: BaseTag) -> DataElement:
        if not self._text(src, int(tag)):
            return DataElement(tag, "PN", None)
        # The name follows the Patient ID beside it (or the instance's patient), so one
        # patient has one pseudonymous name whatever spellings the sources used.
        local_id = self._text(src, PATIENT_ID)
        kind, identity = ("id", local_id) if local_id else self._identity
        found = self._lookup(identity) if kind == "id" else None
        if found and found[1]:
            return DataElement(tag, "PN", found[1])
        return DataElement(tag, "PN", "ANONYMOUS^" + self.key.token("patient-name", identity, 10))


def _check_raw(elem: RawDataElement) -> None:
    """A value shorter than its declared length: the file was cut off."""
    if elem.length != _UNDEFINED and elem.value is not None and len(elem.value) != elem.length:
        raise DeidentificationError(
            f"element {tag_text(int(elem.tag))} is truncated "
            f"({len(elem.value)} of {elem.length} bytes)"
        )


def _copy(elem):
    # Raw elements are immutable tuples and can be shared; a decoded element is copied so
    # that changing the output never changes the input.
    if type(elem) is RawDataElement:
        return elem
    return copy.deepcopy(elem)


# ---------------------------------------------------------------------- finishing

def _transfer_syntax(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return str(meta.TransferSyntaxUID)
    implicit, little = ds.original_encoding
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little in (True, None) else ExplicitVRBigEndian


def _method_values(profile: Profile, pixels: PixelStatus | None) -> list[str]:
    values = [f"dicom-deid {__version__} PS3.15 Annex E"[:64], f"profile {profile.name}"[:64]]
    values += [f"option {o}" for o in profile.header_options]
    if profile.table.sha256:
        values.append(f"table sha256 {profile.table.sha256[:16]}")
    if pixels is None:
        values.append("pixels not modified")
    else:
        if pixels.faces_cleaned and not pixels.pixels_modified:
            values.append(f"no face found ({pixels.method or 'unspecified'})"[:64])
        elif pixels.faces_cleaned:
            values.append(f"faces replaced ({pixels.method or 'unspecified'})"[:64])
        if pixels.burned_in_annotation_cleaned:
            values.append("burned-in annotation removed")
        if not (pixels.faces_cleaned or pixels.burned_in_annotation_cleaned):
            values.append("pixels not cleaned")
    return values


def _code_item(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item


def mark_pixels(out: Dataset, profile: Profile, pixels: PixelStatus | None) -> None:
    """Write what was done to the instance: PatientIdentityRemoved, DeidentificationMethod,
    its CID 7050 codes, BurnedInAnnotation and RecognizableVisualFeatures.

    The pipeline calls it again after the pixel stage, with what that stage did.
    """
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = _method_values(profile, pixels)
    codes = [_code_item(*BASIC_PROFILE_CODE)]
    for option in profile.header_options:
        codes.append(_code_item(*OPTION_CODES[option]))
    if pixels is not None and pixels.burned_in_annotation_cleaned:
        codes.append(_code_item(*OPTION_CODES["clean-pixel-data"]))
    if pixels is not None and pixels.faces_cleaned:
        codes.append(_code_item(*OPTION_CODES["clean-recognizable-visual-features"]))
    out.DeidentificationMethodCodeSequence = codes
    out.LongitudinalTemporalInformationModified = {
        "keep": "UNMODIFIED", "shift": "MODIFIED", "remove": "REMOVED"
    }[profile.date_mode]
    # Only what the pixel stage did is claimed; the source's own statements stay otherwise,
    # except that pixels that may show a face are never left marked as showing none.
    if pixels is not None and pixels.burned_in_annotation_cleaned:
        out.BurnedInAnnotation = "NO"
    if pixels is not None and pixels.faces_cleaned:
        out.RecognizableVisualFeatures = "NO"
    elif may_show_face(out, profile.face_scope):
        out.RecognizableVisualFeatures = "YES"


def _finish(out: Dataset, src: Dataset, profile: Profile, pixels: PixelStatus | None) -> None:
    mark_pixels(out, profile, pixels)
    if ENCAPSULATED_DOCUMENT in out and ENCAPSULATED_DOCUMENT_LENGTH in out:
        document = out[ENCAPSULATED_DOCUMENT].value or b""
        out[ENCAPSULATED_DOCUMENT_LENGTH] = DataElement(
            BaseTag(ENCAPSULATED_DOCUMENT_LENGTH), "UL", len(document)
        )
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    if SOP_CLASS_UID in out:
        meta.MediaStorageSOPClassUID = out[SOP_CLASS_UID].value
    if SOP_INSTANCE_UID in out:
        meta.MediaStorageSOPInstanceUID = out[SOP_INSTANCE_UID].value
    meta.TransferSyntaxUID = _transfer_syntax(src)  # type: ignore[assignment]
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"DICOMDEID_{__version__}"[:16]
    out.file_meta = meta


def deidentify(ds: Dataset, profile: Profile, key: SiteKey,
               pixels: PixelStatus | None = None) -> HeaderResult:
    """De-identify one dataset by the profile; the input is not changed.

    Raises DeidentificationError (message without PHI) when the dataset cannot be handled.
    """
    walker = _Walker(profile, key, ds)
    out = walker.walk(ds, (), NORMAL)
    face = may_show_face(ds, profile.face_scope)
    _finish(out, ds, profile, pixels)
    return HeaderResult(
        dataset=out,
        actions=walker.counts,
        warnings=walker.warnings,
        date_mode=profile.date_mode,
        pseudonym_source=walker.pseudonym_source,
        may_show_face=face,
        offset_days=walker.offset_days if profile.date_mode == "shift" else None,
    )


def deidentify_dataset(ds: Dataset, profile: Profile, key: SiteKey,
                       pixels: PixelStatus | None = None) -> Dataset:
    """The contract's entry point (docs/CONTRACTS.md): the de-identified copy of ds."""
    return deidentify(ds, profile, key, pixels).dataset
