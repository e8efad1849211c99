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
from typing import Any

import yaml

from dicom_deid import face_methods
from dicom_deid.header.iod import iod_types, resolve_action
from dicom_deid.header.options import HEADER_OPTIONS, check_options
from dicom_deid.header.pixels import FACE_SCOPES
from dicom_deid.header.table import AnnexTable, TableRow, load_table
from dicom_deid.resources import profiles_dir

BURNED_IN_ANNOTATION = ("quarantine", "warn")
DEFAULT_DATE_SHIFT = (-1095, -1)
# swap's default geometry blend, measured with `dicom-deid evaluate` on the London set
# (benchmarks/results/2026-11-24, eyelid and lip openings kept): rank-1 re-identification 9.8%
# at 0, 7.8% at 0.7, 2.0% (chance) at 1; landmark NME MediaPipe 1.4/2.2/2.7%, dlib-68
# 2.7/3.5/4.0% (targets <= 5%, <= 3%, <= 5%). GRID blinks survive at 1 (EAR r 0.76).
DEFAULT_FACE_SHAPE = 1.0
OVERRIDE_ACTIONS = {
    "keep": "K", "remove": "X", "empty": "Z", "dummy": "D", "clean": "C", "uid": "U",
}
PATIENT_ID = 0x00100020
PATIENT_NAME = 0x00100010
PROFILE_KEYS = {
    "profile", "description", "base", "options", "faces", "face_scope", "burned_in_annotation",
    "face_shape", "keypoints",
    "keypoint_frame_step", "pseudonyms", "pseudonym_lookup",
    "pseudonym_lookup_required", "date_shift_days", "safe_private", "clean_terms", "overrides",
    "burned_in_text",
}
# Burned-in text in the pixels of video and photographs (dicom_deid.text): every text region
# covered by default, only identifying text under redact-phi, none under off.
BURNED_IN_TEXT_MODES = ("redact-all", "redact-phi", "off")


class ProfileError(ValueError):
    """A profile file that cannot be used; the message names the file and the key."""


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
    faces: str
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
    face_shape: float = DEFAULT_FACE_SHAPE
    keypoints: bool = True
    keypoint_frame_step: int = 1
    face_scope: str = "camera"
    burned_in_annotation: str = "quarantine"
    burned_in_text: str = "redact-all"
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


@dataclass
class _Spec:
    name: str = ""
    description: str = ""
    options: list[str] = field(default_factory=list)
    faces: str = "none"
    face_shape: float = DEFAULT_FACE_SHAPE
    keypoints: bool = True
    keypoint_frame_step: int = 1
    face_scope: str = "camera"
    burned_in_annotation: str = "quarantine"
    burned_in_text: str = "redact-all"
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
    unknown = sorted(set(data) - PROFILE_KEYS)
    if unknown:
        raise ProfileError(
            f"{path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(PROFILE_KEYS))}"
        )
    if "profile" not in data:
        raise ProfileError(f"{path}: not a profile (no 'profile:' name)")
    spec = _read_spec(find_profile(data["base"]), depth + 1) if data.get("base") else _Spec()
    spec.name = str(data["profile"])
    spec.description = str(data.get("description", spec.description))
    try:
        spec.options = list(check_options(list(spec.options) + list(data.get("options") or [])))
    except ValueError as exc:
        raise ProfileError(f"{path}: options: {exc}") from exc
    if "faces" in data:
        faces = str(data["faces"]).strip().lower()
        if faces not in face_methods.choices():
            raise ProfileError(f"{path}: faces must be one of "
                               f"{', '.join(face_methods.choices())}, not {faces!r}")
        spec.faces = faces
    if "face_scope" in data:
        scope = str(data["face_scope"]).strip().lower()
        if scope not in FACE_SCOPES:
            raise ProfileError(f"{path}: face_scope must be one of {', '.join(FACE_SCOPES)}, not {scope!r}")
        spec.face_scope = scope
    if "burned_in_annotation" in data:
        choice = str(data["burned_in_annotation"]).strip().lower()
        if choice not in BURNED_IN_ANNOTATION:
            raise ProfileError(
                f"{path}: burned_in_annotation must be one of {', '.join(BURNED_IN_ANNOTATION)}, "
                f"not {choice!r}"
            )
        spec.burned_in_annotation = choice
    if "face_shape" in data:
        try:
            shape = float(data["face_shape"])
        except (TypeError, ValueError) as exc:
            raise ProfileError(f"{path}: face_shape must be a number within 0..1") from exc
        if not 0.0 <= shape <= 1.0:
            raise ProfileError(f"{path}: face_shape must be within 0..1, not {shape}")
        spec.face_shape = shape
    if "keypoints" in data:
        if not isinstance(data["keypoints"], bool):
            raise ProfileError(f"{path}: keypoints must be true or false")
        spec.keypoints = data["keypoints"]
    if "keypoint_frame_step" in data:
        step = data["keypoint_frame_step"]
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise ProfileError(f"{path}: keypoint_frame_step must be a whole number >= 1, not {step!r}")
        spec.keypoint_frame_step = step
    if "burned_in_text" in data:
        # YAML 1.1 reads a bare `off` as false.
        value = data["burned_in_text"]
        mode = "off" if value is False else str(value).strip().lower()
        if mode not in BURNED_IN_TEXT_MODES:
            raise ProfileError(
                f"{path}: burned_in_text must be one of {', '.join(BURNED_IN_TEXT_MODES)}, not {mode!r}"
            )
        spec.burned_in_text = mode
    if "pseudonyms" in data:
        if not isinstance(data["pseudonyms"], bool):
            raise ProfileError(f"{path}: pseudonyms must be true or false")
        spec.pseudonyms = data["pseudonyms"]
    if data.get("pseudonym_lookup"):
        spec.lookup = _load_lookup(str(data["pseudonym_lookup"]), path)
    if "pseudonym_lookup_required" in data:
        spec.lookup_required = bool(data["pseudonym_lookup_required"])
    if "date_shift_days" in data:
        value = data["date_shift_days"]
        try:
            low, high = (int(v) for v in value)
        except (TypeError, ValueError) as exc:
            raise ProfileError(f"{path}: date_shift_days must be [min, max] in days") from exc
        if low > high:
            raise ProfileError(f"{path}: date_shift_days: min {low} is above max {high}")
        if low <= 0 <= high:
            raise ProfileError(
                f"{path}: date_shift_days [{low}, {high}] includes 0, which would keep real dates"
            )
        spec.date_shift_days = (low, high)
    if spec.lookup_required and not spec.lookup:
        raise ProfileError(f"{path}: pseudonym_lookup_required is set but no pseudonym_lookup is given")
    spec.safe_private |= _load_safe_private(data.get("safe_private"), path)
    spec.clean_terms |= _load_terms(data.get("clean_terms"), path)
    overrides = data.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise ProfileError(f"{path}: overrides must be a mapping of attribute -> action")
    for attr, action in overrides.items():
        tag = _parse_tag(attr)
        if tag is None:
            raise ProfileError(f"{path}: overrides: {attr!r} is neither a keyword nor a tag")
        if tag >> 16 & 1:
            raise ProfileError(
                f"{path}: overrides: {attr!r} is private; use safe_private for private attributes"
            )
        if isinstance(action, dict) and set(action) == {"replace"}:
            spec.overrides[tag] = Rule("REPLACE", "override", str(attr), str(action["replace"]))
        elif isinstance(action, str) and action.strip().lower() in OVERRIDE_ACTIONS:
            spec.overrides[tag] = Rule(OVERRIDE_ACTIONS[action.strip().lower()], "override", str(attr))
        else:
            raise ProfileError(
                f"{path}: overrides: {attr}: {action!r} is not one of "
                f"{', '.join(OVERRIDE_ACTIONS)} or {{replace: VALUE}}"
            )
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
        faces=spec.faces,
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
        face_shape=spec.face_shape,
        keypoints=spec.keypoints,
        keypoint_frame_step=spec.keypoint_frame_step,
        face_scope=spec.face_scope,
        burned_in_annotation=spec.burned_in_annotation,
        burned_in_text=spec.burned_in_text,
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
