"""De-identification profiles: the Annex E table, options, and a site's own changes.

A profile is a YAML file (the shipped ones are in profiles/):

    profile: my-site                 # its name (required: marks the file as a profile)
    description: what it is for
    base: basic                      # optional: a shipped profile name or a path to start from
    options: [retain-patient-characteristics, clean-descriptors]
    faces: swap                      # default face method: swap|mask3d|blur|pixelate|blackout|none
    face_scope: camera               # where faces run: camera|secondary-capture|none (header.pixels)
    burned_in_annotation: quarantine # BurnedInAnnotation YES: quarantine|warn
    face_shape: 1.0                  # swap only: 0 keeps the patient's geometry, 1 the mean shape
    keypoints: true                  # measure keypoints and write them as an SR beside face video
    keypoint_frame_step: 1           # SR holds every Nth frame (1: every frame)
    burned_in_text: redact-all       # text in video/photo pixels: redact-all|redact-phi|off
    pseudonyms: true                 # PatientID / PatientName -> keyed pseudonyms
    pseudonym_lookup: lookup.csv     # CSV original_patient_id,patient_id[,patient_name]
    pseudonym_lookup_required: false  # true: a patient missing from the CSV fails the instance
    date_shift_days: [-1095, -1]     # per-patient offset range (retain-longitudinal-modified-dates)
    safe_private: safe_private.yaml  # or a list of {group, creator, element, name}; extends the base
    clean_terms: [extra, words]      # words the text cleaner keeps; extends the base
    overrides:                       # per attribute, wherever it appears; tag or keyword
      StudyDescription: keep
      "(0008,103E)": {replace: "RESEARCH SERIES"}
      InstitutionName: remove        # keep|remove|empty|dummy|clean|uid|{replace: VALUE}

Relative paths are relative to the profile file.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BeforeValidator, ValidationError

from dicom_deid.errors import DeidError
from dicom_deid.header.iod import iod_types, resolve_action
from dicom_deid.header.options import HEADER_OPTIONS, check_options
from dicom_deid.header.pixels import FACE_SCOPES
from dicom_deid.header.table import AnnexTable, TableRow, load_table
from dicom_deid.policy import PixelPolicy
from dicom_deid.resources import profiles_dir
from dicom_deid.validation import fail, kind, problems, strict_bool

BURNED_IN_ANNOTATION = ("quarantine", "warn")
DEFAULT_DATE_SHIFT = (-1095, -1)
OVERRIDE_ACTIONS = {
    "keep": "K", "remove": "X", "empty": "Z", "dummy": "D", "clean": "C", "uid": "U",
}
PATIENT_ID = 0x00100020
PATIENT_NAME = 0x00100010
class ProfileError(DeidError, ValueError):
    """A profile file that cannot be used; the message names the file and the key (every
    problem of the file's keys at once, one per line of `problems`)."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]

    @classmethod
    def of(cls, path: Path, problems: list[str]) -> ProfileError:
        if len(problems) == 1:
            return cls(f"{path}: {problems[0]}", problems)
        return cls(f"{path}: {len(problems)} problems:\n  " + "\n  ".join(problems), problems)


@dataclass(frozen=True)
class Rule:
    """What to do with one attribute, before resolution by the instance's IOD."""

    action: str            # Annex E action, or PSEUDO_ID / PSEUDO_NAME / REPLACE
    source: str            # 'basic', an option name, 'override' or 'pseudonym'
    name: str = ""
    value: str | None = None    # REPLACE only


@dataclass(frozen=True)
class SafePrivate:
    group: int
    creator: str
    element: int           # the low byte of the element number (xxEE)
    name: str = ""


@dataclass
class Profile:
    """Effective rules of one profile with its options. Build with load_profile()."""

    name: str
    description: str
    path: Path | None
    options: tuple[str, ...]
    pseudonyms: bool
    date_shift_days: tuple[int, int]
    lookup: dict[str, tuple[str, str | None]]
    lookup_required: bool
    safe_private: frozenset[SafePrivate]
    clean_terms: frozenset[str]
    rules: dict[int, Rule]
    group_rules: dict[str, Rule]          # '50xxxxxx', '60xx3000', '60xx4000', 'private'
    table: AnnexTable
    overridden: dict[int, Rule] = field(default_factory=dict)
    # The pixel settings of the same file (faces, face_shape, keypoints, keypoint_frame_step,
    # burned_in_text): not header rules, carried here so one load gives both.
    pixels: PixelPolicy = field(default_factory=PixelPolicy)
    face_scope: str = "camera"
    burned_in_annotation: str = "quarantine"
    _resolved: dict[str, tuple[dict[int, str], dict]] = field(default_factory=dict, repr=False)

    @property
    def date_mode(self) -> str:
        """'keep' (full dates), 'shift' (modified dates) or 'remove' (neither option)."""
        if "retain-longitudinal-full-dates" in self.options:
            return "keep"
        if "retain-longitudinal-modified-dates" in self.options:
            return "shift"
        return "remove"

    @property
    def retain_uids(self) -> bool:
        return "retain-uids" in self.options

    @property
    def retain_safe_private(self) -> bool:
        return "retain-safe-private" in self.options

    @property
    def header_options(self) -> tuple[str, ...]:
        return tuple(o for o in self.options if o in HEADER_OPTIONS)

    def resolver(self, sop_class_uid: str | None) -> tuple[dict[int, str], dict]:
        """(top-level tag -> simple action, cache for nested lookups) for one SOP Class.

        Computed once per (profile, SOP Class) so the walk is one dict lookup per element.
        """
        key = str(sop_class_uid or "")
        found = self._resolved.get(key)
        if found is None:
            types = iod_types(key or None)
            top = {tag: resolve_rule(rule, types.kind(tag, ())) for tag, rule in self.rules.items()}
            found = (top, {})
            self._resolved[key] = found
        return found

    def resolve_nested(self, sop_class_uid: str | None, tag: int, path: tuple[int, ...]) -> str:
        _, cache = self.resolver(sop_class_uid)
        action = cache.get((tag, path))
        if action is None:
            action = resolve_rule(self.rules[tag], iod_types(sop_class_uid or None).kind(tag, path))
            cache[(tag, path)] = action
        return action


def resolve_rule(rule: Rule, kind: str) -> str:
    if rule.source == "override" or rule.action in ("PSEUDO_ID", "PSEUDO_NAME", "REPLACE"):
        return rule.action
    return resolve_action(rule.action, kind)


def _row_action(row: TableRow, options: tuple[str, ...]) -> tuple[str, str]:
    """The row's action under the options, and where it came from.

    When several options change one row (Calibration Date: retain-device-identity K,
    retain-longitudinal-modified-dates C) cleaning wins over keeping: a kept real date would
    undo the shift of every other date.
    """
    chosen = [(row.options[o], o) for o in options if o in row.options]
    if not chosen:
        return row.basic, "basic"
    for action, option in chosen:
        if action == "C":
            return "C", option
    return chosen[0]


def _parse_tag(text: str) -> int | None:
    from pydicom.datadict import tag_for_keyword

    text = str(text).strip()
    found = tag_for_keyword(text)
    if found is not None:
        return int(found)
    match = re.fullmatch(r"\(?\s*([0-9A-Fa-f]{4})\s*,?\s*([0-9A-Fa-f]{4})\s*\)?", text)
    if match:
        return int(match.group(1) + match.group(2), 16)
    return None


def _int(value: Any) -> int:
    return value if isinstance(value, int) else int(str(value), 0)


def _load_yaml(path: Path) -> dict:
    try:
        # libyaml's loader where PyYAML has it: the pure-Python one costs the CLI ~0.3 s a run.
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506 (safe)
    except OSError as exc:
        raise ProfileError(f"cannot read profile {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ProfileError(f"profile {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ProfileError(f"profile {path} must be a YAML mapping")
    return data


def _load_safe_private(spec: Any, where: Path) -> set[SafePrivate]:
    if spec is None:
        return set()
    if isinstance(spec, str):
        file = (where.parent / spec) if not Path(spec).is_absolute() else Path(spec)
        if not file.is_file():
            raise ProfileError(f"{where}: safe_private file {spec} not found")
        data = _load_yaml(file)
        spec = data.get("safe_private")
        where = file
    if not isinstance(spec, list):
        raise ProfileError(f"{where}: safe_private must be a list of {{group, creator, element}}")
    entries = set()
    for i, item in enumerate(spec):
        try:
            group = _int(item["group"])
            element = _int(item["element"]) & 0xFF
            creator = str(item["creator"]).strip()
        except (KeyError, TypeError, ValueError) as exc:
            raise ProfileError(
                f"{where}: safe_private entry {i} needs group, creator and element ({exc})"
            ) from exc
        if not group & 1:
            raise ProfileError(f"{where}: safe_private entry {i}: group {group:04X} is not private")
        entries.add(SafePrivate(group, creator, element, str(item.get("name", ""))))
    return entries


def _load_lookup(spec: str, where: Path) -> dict[str, tuple[str, str | None]]:
    file = Path(spec) if Path(spec).is_absolute() else where.parent / spec
    if not file.is_file():
        raise ProfileError(f"{where}: pseudonym_lookup file {spec} not found")
    table: dict[str, tuple[str, str | None]] = {}
    with file.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        needed = {"original_patient_id", "patient_id"}
        if not reader.fieldnames or not needed <= set(reader.fieldnames):
            raise ProfileError(
                f"{file}: the lookup CSV needs the columns original_patient_id, patient_id "
                "(and optionally patient_name)"
            )
        for line, row in enumerate(reader, start=2):
            original = (row.get("original_patient_id") or "").strip()
            new_id = (row.get("patient_id") or "").strip()
            if not original or not new_id:
                raise ProfileError(f"{file}: line {line} has an empty original_patient_id or patient_id")
            if original in table:
                raise ProfileError(f"{file}: line {line} repeats an original_patient_id")
            table[original] = (new_id, (row.get("patient_name") or "").strip() or None)
    return table


def _load_terms(spec: Any, where: Path) -> set[str]:
    if spec is None:
        return set()
    if isinstance(spec, str):
        file = Path(spec) if Path(spec).is_absolute() else where.parent / spec
        spec = _load_yaml(file).get("clean_terms")
    if not isinstance(spec, list):
        raise ProfileError(f"{where}: clean_terms must be a list of words")
    return {str(t).strip().lower() for t in spec if str(t).strip()}


def find_profile(name_or_path: str | Path) -> Path:
    """A shipped profile by name, or a profile file by path."""
    text = str(name_or_path)
    candidate = Path(text)
    if candidate.suffix in (".yaml", ".yml") or "/" in text or candidate.is_file():
        if not candidate.is_file():
            raise ProfileError(f"profile file {candidate} not found")
        return candidate
    shipped = profiles_dir() / f"{text}.yaml"
    if not shipped.is_file():
        raise ProfileError(
            f"no profile named {text!r}; shipped: {', '.join(shipped_profiles())}"
        )
    return shipped


def shipped_profiles() -> list[str]:
    """Names of the profiles in profiles/ (YAML files with a 'profile' key)."""
    names = []
    for path in sorted(profiles_dir().glob("*.yaml")):
        head = path.read_text(encoding="utf-8")[:4000]
        if re.search(r"^profile:", head, re.MULTILINE):
            names.append(path.stem)
    return names


def _choice(choices: tuple[str, ...]) -> BeforeValidator:
    def check(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise fail(f"must be one of {', '.join(choices)}, not {text!r}")
        return text

    return BeforeValidator(check)


def _options(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise fail(f"must be a list of option names, got {kind(value)}")
    try:
        return list(check_options([str(v) for v in value]))
    except ValueError as exc:
        raise fail(str(exc)) from None


def _date_shift(value: Any) -> tuple[int, int]:
    try:
        low, high = (int(v) for v in value)
    except (TypeError, ValueError):
        raise fail("must be [min, max] in days") from None
    if low > high:
        raise fail(f"min {low} is above max {high}")
    if low <= 0 <= high:
        raise fail(f"[{low}, {high}] includes 0, which would keep real dates")
    return low, high


def _override_key(value: str) -> str:
    tag = _parse_tag(value)
    if tag is None:
        raise fail(f"{value!r} is neither a keyword nor a tag")
    if tag >> 16 & 1:
        raise fail(f"{value!r} is private; use safe_private for private attributes")
    return value


def _override_action(value: Any) -> Rule:
    if isinstance(value, dict) and set(value) == {"replace"}:
        return Rule("REPLACE", "override", "", str(value["replace"]))
    if isinstance(value, str) and value.strip().lower() in OVERRIDE_ACTIONS:
        return Rule(OVERRIDE_ACTIONS[value.strip().lower()], "override")
    raise fail(f"{value!r} is not one of {', '.join(OVERRIDE_ACTIONS)} or {{replace: VALUE}}")


def _overrides(value: Any) -> Any:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail("must be a mapping of attribute -> action")
    return {str(k): v for k, v in value.items()}


class _ProfileFile(PixelPolicy):
    """A profile file as written: the header keys here, the pixel keys from PixelPolicy."""

    profile: Annotated[str, BeforeValidator(str)]
    description: Annotated[str, BeforeValidator(str)] = ""
    base: Annotated[str, BeforeValidator(str)] | None = None
    options: Annotated[list[str], BeforeValidator(_options)] = []
    face_scope: Annotated[str, _choice(FACE_SCOPES)] = "camera"
    burned_in_annotation: Annotated[str, _choice(BURNED_IN_ANNOTATION)] = "quarantine"
    pseudonyms: Annotated[bool, BeforeValidator(strict_bool)] = False
    pseudonym_lookup: Annotated[str, BeforeValidator(str)] | None = None
    pseudonym_lookup_required: Annotated[bool, BeforeValidator(bool)] = False
    date_shift_days: Annotated[tuple[int, int], BeforeValidator(_date_shift)] = DEFAULT_DATE_SHIFT
    safe_private: Any = None      # a file name or a list; checked by _load_safe_private
    clean_terms: Any = None       # a file name or a list; checked by _load_terms
    overrides: Annotated[dict[Annotated[str, AfterValidator(_override_key)],
                              Annotated[Rule, BeforeValidator(_override_action)]],
                         BeforeValidator(_overrides)] = {}


# Every key a profile file may hold (docs/PROFILES.md documents each).
PROFILE_KEYS = frozenset(_ProfileFile.model_fields)


@dataclass
class _Spec:
    name: str = ""
    description: str = ""
    options: list[str] = field(default_factory=list)
    pixels: PixelPolicy = field(default_factory=PixelPolicy)
    face_scope: str = "camera"
    burned_in_annotation: str = "quarantine"
    pseudonyms: bool = False
    lookup: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    lookup_required: bool = False
    date_shift_days: tuple[int, int] = DEFAULT_DATE_SHIFT
    safe_private: set[SafePrivate] = field(default_factory=set)
    clean_terms: set[str] = field(default_factory=set)
    overrides: dict[int, Rule] = field(default_factory=dict)


def _read_spec(path: Path, depth: int = 0) -> _Spec:
    if depth > 8:
        raise ProfileError(f"{path}: profiles extend each other too deeply (a cycle?)")
    data = _load_yaml(path)
    if "profile" not in data:
        raise ProfileError(f"{path}: not a profile (no 'profile:' name)")
    try:
        given = _ProfileFile.model_validate(data)
    except ValidationError as exc:
        raise ProfileError.of(path, problems(exc, _ProfileFile)) from None
    spec = _read_spec(find_profile(given.base), depth + 1) if given.base else _Spec()
    was_set = given.model_fields_set
    spec.name = given.profile
    if "description" in was_set:
        spec.description = given.description
    try:
        spec.options = list(check_options(list(spec.options) + given.options))
    except ValueError as exc:
        raise ProfileError(f"{path}: options: {exc}") from exc
    spec.pixels = spec.pixels.model_copy(update={
        key: getattr(given, key) for key in PixelPolicy.model_fields if key in was_set})
    for key in ("face_scope", "burned_in_annotation", "pseudonyms", "date_shift_days"):
        if key in was_set:
            setattr(spec, key, getattr(given, key))
    if "pseudonym_lookup_required" in was_set:
        spec.lookup_required = given.pseudonym_lookup_required
    if given.pseudonym_lookup:
        spec.lookup = _load_lookup(given.pseudonym_lookup, path)
    if spec.lookup_required and not spec.lookup:
        raise ProfileError(f"{path}: pseudonym_lookup_required is set but no pseudonym_lookup is given")
    spec.safe_private |= _load_safe_private(given.safe_private, path)
    spec.clean_terms |= _load_terms(given.clean_terms, path)
    for attr, rule in given.overrides.items():
        tag = _parse_tag(attr)
        assert tag is not None          # _override_key checked it
        spec.overrides[tag] = Rule(rule.action, rule.source, attr, rule.value)
    return spec


def build_profile(spec_path: Path | None, options: tuple[str, ...] = ()) -> Profile:
    spec = _read_spec(spec_path) if spec_path else _Spec(name="annex-e")
    all_options = check_options(list(spec.options) + list(options))
    table = load_table()
    rules: dict[int, Rule] = {}
    group_rules: dict[str, Rule] = {}
    for row in table.rows:
        action, source = _row_action(row, all_options)
        rule = Rule(action, source, row.name)
        if row.exact_tag is None:
            group_rules[row.tag] = rule
        else:
            rules[row.exact_tag] = rule
    if spec.pseudonyms:
        rules[PATIENT_ID] = Rule("PSEUDO_ID", "pseudonym", "Patient ID")
        rules[PATIENT_NAME] = Rule("PSEUDO_NAME", "pseudonym", "Patient's Name")
    for tag, rule in spec.overrides.items():
        rules[tag] = rule
    shipped_terms = _load_terms("clean_terms.yaml", profiles_dir() / "x.yaml")
    return Profile(
        name=spec.name,
        description=spec.description,
        path=spec_path,
        options=all_options,
        pseudonyms=spec.pseudonyms,
        date_shift_days=spec.date_shift_days,
        lookup=spec.lookup,
        lookup_required=spec.lookup_required,
        safe_private=frozenset(spec.safe_private),
        clean_terms=frozenset(shipped_terms | spec.clean_terms),
        rules=rules,
        group_rules=group_rules,
        table=table,
        overridden=dict(spec.overrides),
        pixels=spec.pixels,
        face_scope=spec.face_scope,
        burned_in_annotation=spec.burned_in_annotation,
    )


@lru_cache(maxsize=32)
def _cached(path: str, mtime: float, options: tuple[str, ...]) -> Profile:
    return build_profile(Path(path), options)


def load_profile(name_or_path: str | Path = "basic", options: tuple[str, ...] | list[str] = ()) -> Profile:
    """The effective profile: a shipped name or a YAML path, plus extra option names.

    Cached per (file, modification time, options), so a node may call it for every study.
    """
    path = find_profile(name_or_path).resolve()
    return _cached(str(path), path.stat().st_mtime, check_options(list(options)))
