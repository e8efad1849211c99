"""Attribute types per IOD, and the resolution of Annex E actions by them.

Annex E's compound actions depend on what the instance's IOD requires of the attribute:
X/Z/D means remove it if the IOD does not need it (Type 3), empty it if the IOD needs it
present (Type 2), give it a dummy value if the IOD needs a value (Type 1). The types come
from the standard's IOD and module tables as highdicom ships them (generated into
_iod_types.py by scripts/generate_profiles.py).

Two conservative choices, both about validity, neither costs privacy (a dummy or an empty
value carries no information):
- a plain X or Z on an attribute the IOD requires at that place (for example Presentation
  Creation Date, X in the table but Type 1 in presentation states) keeps it present: dummy
  for Type 1, empty for Type 2; removing it would make the instance invalid.
- an attribute nested at a sequence path the tables do not describe (deep SR content, an
  IOD the tables do not know) resolves a compound action to its keep-present choice.
- X/Z/U* on a reference sequence the IOD requires present (Type 2: a segmentation's
  per-frame Source Image Sequence) keeps its items with their UIDs replaced (U*), rather than
  emptying it: an empty one leaves the instance's other references to the same images
  unmatched (dciodvfy: "ReferencedSeriesSequence present but Instance does not reference
  Instances"), and the keyed UIDs carry no information the output's own UIDs do not.
Conditional types (1C, 2C) count as 1 and 2: the engine only acts on attributes that are
present, and one that is present most likely met its condition.
"""

from __future__ import annotations

from functools import lru_cache

REQUIRED_VALUE = "1"   # Type 1 or 1C
REQUIRED = "2"         # Type 2 or 2C
OPTIONAL = "3"         # Type 3, or absent from the IOD at the top level
UNKNOWN = "?"          # nested at a path the tables do not describe, or unknown IOD

_NORMALISE = {"1": REQUIRED_VALUE, "1C": REQUIRED_VALUE, "2": REQUIRED, "2C": REQUIRED, "3": OPTIONAL}

_RESOLUTION: dict[str, dict[str, str]] = {
    #          type 1     type 2     type 3      unknown
    "X":      {"1": "D", "2": "Z", "3": "X", "?": "X"},
    "Z":      {"1": "D", "2": "Z", "3": "Z", "?": "Z"},
    "X/Z":    {"1": "D", "2": "Z", "3": "X", "?": "Z"},
    "X/D":    {"1": "D", "2": "D", "3": "X", "?": "D"},
    "Z/D":    {"1": "D", "2": "Z", "3": "Z", "?": "D"},
    "X/Z/D":  {"1": "D", "2": "Z", "3": "X", "?": "D"},
    "X/Z/U*": {"1": "U", "2": "U", "3": "X", "?": "U"},
}

TypeMap = dict[int, dict[tuple[int, ...], str]]


def resolve_action(action: str, kind: str) -> str:
    """The simple action (D, Z, X, K, C, U, ...) for an action and an attribute type."""
    table = _RESOLUTION.get(action)
    return table[kind] if table else action


@lru_cache(maxsize=1)
def _tables() -> tuple[dict[str, str], dict[str, tuple[int, ...]], tuple[TypeMap, ...]]:
    from dicom_deid.header import _iod_types as t

    return t.SOP_CLASS_IOD, t.IOD_MODULES, t.MODULES  # type: ignore[return-value]


def iod_for_sop_class(sop_class_uid: str | None) -> str | None:
    """The IOD name for a SOP Class UID, or None when the tables do not know it."""
    if not sop_class_uid:
        return None
    return _tables()[0].get(str(sop_class_uid).strip())


class IodTypes:
    """The types of the table's attributes in one IOD; `kind(tag, path)` -> '1', '2', '3', '?'."""

    def __init__(self, iod: str | None) -> None:
        self.iod = iod
        self._types: TypeMap = {}
        self.known = False
        if iod is None:
            return
        _, iod_modules, modules = _tables()
        indexes = iod_modules.get(iod)
        if indexes is None:
            return
        self.known = True
        rank = {REQUIRED_VALUE: 0, REQUIRED: 1, OPTIONAL: 2}
        for index in indexes:
            for tag, by_path in modules[index].items():
                merged = self._types.setdefault(tag, {})
                for path, raw in by_path.items():
                    kind = _NORMALISE[raw]
                    # An attribute in several modules of the IOD: the strictest type wins.
                    if path not in merged or rank[kind] < rank[merged[path]]:
                        merged[path] = kind

    def kind(self, tag: int, path: tuple[int, ...]) -> str:
        if not self.known:
            return UNKNOWN
        by_path = self._types.get(tag)
        if by_path is not None:
            found = by_path.get(path)
            if found is not None:
                return found
        return OPTIONAL if not path else UNKNOWN


@lru_cache(maxsize=256)
def iod_types(sop_class_uid: str | None) -> IodTypes:
    return IodTypes(iod_for_sop_class(sop_class_uid))
