"""`dicom-deid deidentify --dry-run FILE...`: the attribute-by-attribute before/after table.

Nothing is written. The input's values are PHI: they are printed only when standard output is
a terminal (an operator looking at it), never logged, and replaced by `<hidden>` when the
output goes to a file or a pipe. The de-identified values are always shown.
"""

from __future__ import annotations

import sys
from pathlib import Path

HIDDEN = "<hidden>"
_WIDTH = 36


def _text(elem) -> str:
    if elem is None:
        return "-"
    if elem.VR == "SQ":
        return f"<sequence, {len(elem.value)} item(s)>"
    if elem.VR in ("OB", "OW", "OF", "OD", "OL", "OV", "UN") or elem.tag == 0x7FE00010:
        size = len(elem.value) if elem.value is not None else 0
        return f"<{elem.VR}, {size} bytes>"
    if elem.value is None or elem.value == "":
        return "(empty)"
    text = " ".join(str(elem.value).split())
    if elem.VR == "UI":
        return text  # a cut UID cannot be compared with anything
    return text if len(text) <= _WIDTH else text[: _WIDTH - 3] + "..."


def rows(before, after) -> list[tuple[str, str, str, str, str]]:
    """(tag, keyword, before, after, change) for each top-level element of either dataset."""
    from dicom_deid.header.engine import tag_text

    out = []
    for tag in sorted(set(before.keys()) | set(after.keys())):
        old = before.get(tag)
        new = after.get(tag)
        if old is None:
            change = "added"
        elif new is None:
            change = "removed"
        elif old.VR != "SQ" and old.value == new.value:
            change = "kept"
        else:
            change = "changed"
        keyword = (old or new).keyword or ("private" if tag.is_private else "?")
        out.append((tag_text(int(tag)), keyword, _text(old), _text(new), change))
    return out


def dry_run(paths: list[Path], profile, key, show_input: bool | None = None) -> int:
    """Print the table of each file; 1 if any cannot be read or de-identified."""
    from dicom_deid.header import DeidentificationError, InputError, deidentify, read_instance

    show = sys.stdout.isatty() if show_input is None else show_input
    if not show:
        print(f"(input values {HIDDEN}: standard output is not a terminal)")
    failed = 0
    for path in paths:
        try:
            source = read_instance(path)
            result = deidentify(source, profile, key)
        except (InputError, DeidentificationError) as exc:
            print(f"FAILED {path}: {exc}", file=sys.stderr)
            failed += 1
            continue
        table = rows(source, result.dataset)
        counts = {c: sum(1 for r in table if r[4] == c)
                  for c in ("changed", "removed", "added", "kept")}
        print(f"\n{path} (profile {profile.name}): " + ", ".join(f"{n} {c}"
                                                            for c, n in counts.items()))
        print(f"{'tag':12s} {'attribute':32s} {'before':{_WIDTH}s} {'after':{_WIDTH}s} change")
        for tag, keyword, old, new, change in table:
            if show or old in ("-", "(empty)") or old.startswith("<"):
                shown = old
            else:
                shown = "(same)" if change == "kept" else HIDDEN
            print(f"{tag:12s} {keyword[:32]:32s} {shown:{_WIDTH}s} {new:{_WIDTH}s} {change}")
    return 1 if failed else 0
