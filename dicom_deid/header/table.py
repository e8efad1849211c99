"""The generated Annex E table (profiles/annex_e.yaml) as Python objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from dicom_deid.resources import profiles_dir

TABLE_FILE = "annex_e.yaml"

BASIC_ACTIONS = frozenset({"D", "Z", "X", "K", "C", "U", "X/Z", "X/D", "Z/D", "X/Z/D", "X/Z/U*"})


@dataclass(frozen=True)
class TableRow:
    """One row of Table E.1-1."""

    tag: str                      # 'GGGGEEEE' (x: any digit) or 'private'
    name: str
    basic: str
    options: dict[str, str] = field(default_factory=dict)   # option name -> K or C
    keyword: str | None = None
    vr: str | None = None
    in_std_iod: bool = True

    @property
    def exact_tag(self) -> int | None:
        """The tag as an integer, or None for the wildcard and private rows."""
        if self.tag == "private" or "x" in self.tag:
            return None
        return int(self.tag, 16)

    @property
    def display_tag(self) -> str:
        if self.tag == "private":
            return "(gggg,eeee) odd gggg"
        return f"({self.tag[:4].upper().replace('X', 'x')},{self.tag[4:].upper().replace('X', 'x')})"


@dataclass(frozen=True)
class AnnexTable:
    rows: tuple[TableRow, ...]
    source: str
    sha256: str
    edition: str
    path: Path


def _yaml_load(text: str) -> object:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(text, Loader=loader)  # noqa: S506 (a safe loader)


@lru_cache(maxsize=4)
def load_table(path: Path | None = None) -> AnnexTable:
    """Load the generated table; cached per path."""
    path = Path(path) if path else profiles_dir() / TABLE_FILE
    data = _yaml_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "rows" not in data:
        raise ValueError(f"{path} is not an Annex E table (no 'rows')")
    fixed = {"tag", "name", "basic", "keyword", "vr", "in_std_iod"}
    rows = []
    for raw in data["rows"]:
        basic = str(raw["basic"])
        if basic not in BASIC_ACTIONS:
            raise ValueError(f"{path}: unknown action {basic!r} for {raw.get('tag')}")
        rows.append(
            TableRow(
                tag=str(raw["tag"]).lower(),
                name=str(raw["name"]),
                basic=basic,
                options={k: str(v) for k, v in raw.items() if k not in fixed},
                keyword=raw.get("keyword"),
                vr=raw.get("vr"),
                in_std_iod=bool(raw.get("in_std_iod", True)),
            )
        )
    return AnnexTable(
        rows=tuple(rows),
        source=str(data.get("source", "")),
        sha256=str(data.get("sha256", "")),
        edition=str(data.get("edition", "")),
        path=path,
    )
