"""Audit one `dicom-deid deidentify` run over a folder of real-world files.

    audit = audit_run(inputs, output_dir, quarantine_dir, key)
    print(audit.summary())

Each input is classified from what the run left on disk (outputs, JSON reports, quarantine
reasons), never from what the pipeline says it did:
- written: an output named by the key's mapping of the input's SOP Instance UID exists;
- quarantined: a `.reason.txt` names the input; its reason is sorted into a category;
- skipped: a file in a folder that is not an instance (not DICOM, a DICOMDIR), which the CLI
  lists on stderr as `skipped PATH: why` instead of failing the run;
- lost: neither (the pipeline dropped it, which must never happen).
Then: pixels of a written instance must be bit-identical to the input's unless its report
says a face was replaced; every reference in an output to an instance that was written
must resolve to an output; inputs sharing a SOP Instance UID must not both count as written
unless they are the same file.

Run as a script for the counts of one run: `python -m tests.pipeline.corpus_audit IN OUT KEY [QUARANTINE]`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicom_deid.header import SiteKey, load_key

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# Quarantine reasons, most specific first; a reason matching none is "other".
REASON_CATEGORIES = (
    ("unexpected error", "crash"),
    ("DICOMDIR", "DICOMDIR"),
    ("not DICOM", "not DICOM"),
    ("not a DICOM file", "not DICOM"),
    ("truncated", "truncated"),
    ("same SOP Instance UID", "duplicate SOP Instance UID"),
    ("BurnedInAnnotation", "burned-in annotation"),
    ("the instance has no", "no Study/Series/SOP Instance UID"),
    ("is not a valid UID", "invalid UID"),
    ("cannot decode", "pixel data cannot be decoded"),
    ("corrupt", "corrupt"),
    ("element (", "unreadable element"),
)


@dataclass
class Audit:
    files: int = 0
    # Inputs are named by their path relative to the folder that holds them all.
    written: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)          # input name -> reason
    quarantined: dict[str, str] = field(default_factory=dict)      # input name -> reason
    lost: list[str] = field(default_factory=list)
    pixel_changes: list[str] = field(default_factory=list)         # without a replaced face
    faces_replaced: list[str] = field(default_factory=list)
    dangling: list[tuple[str, str]] = field(default_factory=list)  # (output name, tag path)
    references: int = 0                                            # to written inputs
    overwritten: list[str] = field(default_factory=list)           # SOP UID groups, by input names
    overwritten_files: int = 0      # inputs written over an earlier one with the same SOP UID

    @property
    def by_reason(self) -> Counter:
        return Counter(category(r) for r in self.quarantined.values())

    @property
    def crashes(self) -> list[str]:
        return [n for n, r in self.quarantined.items() if category(r) == "crash"]

    def summary(self) -> str:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(self.by_reason.items()))
        return (
            f"files {self.files}; de-identified {len(self.written)} "
            f"(faces replaced in {len(self.faces_replaced)}); quarantined "
            f"{len(self.quarantined)} ({reasons}); skipped {len(self.skipped)}; lost {len(self.lost)}; crashes "
            f"{len(self.crashes)}; pixel changes without a face {len(self.pixel_changes)}; "
            f"references to written instances {self.references}, dangling {len(self.dangling)}; "
            f"overwritten duplicates {self.overwritten_files} (in {len(self.overwritten)} "
            "SOP Instance UIDs)"
        )


def category(reason: str) -> str:
    for needle, name in REASON_CATEGORIES:
        if needle in reason:
            return name
    return "other"


def _read(path: Path) -> Dataset | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dcmread(path, force=True)
    except Exception:  # noqa: BLE001 (anything pydicom cannot read is "not an instance")
        return None


def _sop(ds: Dataset | None) -> str:
    if ds is None:
        return ""
    try:
        return str(ds.get("SOPInstanceUID", "") or "").strip()
    except Exception:  # noqa: BLE001
        return ""


def _pixels(ds: Dataset) -> bytes | None:
    for keyword in PIXEL_KEYWORDS:
        if keyword in ds:
            value = ds[keyword].value
            return bytes(value) if value is not None else b""
    return None


def _references(ds: Dataset, path: str = "") -> list[tuple[str, str]]:
    """(tag path, UID) for every Referenced SOP Instance UID at any depth."""
    found: list[tuple[str, str]] = []
    for elem in ds:
        if elem.VR == "SQ" and isinstance(elem.value, Sequence):
            for i, item in enumerate(elem.value):
                found += _references(item, f"{path}{elem.keyword or elem.tag}[{i}].")
        elif elem.keyword == "ReferencedSOPInstanceUID":
            values = elem.value if isinstance(elem.value, list) else [elem.value]
            found += [(f"{path}{elem.keyword}", str(v)) for v in values if v]
    return found


def _quarantine_reasons(quarantine_dir: Path) -> dict[str, str]:
    reasons: dict[str, str] = {}
    for file in quarantine_dir.glob("*.reason.txt") if quarantine_dir.is_dir() else ():
        text = file.read_text(errors="replace")
        source = re.search(r"^input: (.*)$", text, re.MULTILINE)
        reason = re.search(r"^reason: (.*)$", text, re.MULTILINE)
        if source:
            reasons[str(Path(source.group(1)).resolve())] = reason.group(1) if reason else ""
    return reasons


def skipped_reasons(stderr: str) -> dict[str, str]:
    """Resolved path -> reason of each `skipped PATH: why` line the CLI printed."""
    found = {}
    for line in stderr.splitlines():
        match = re.match(r"^skipped (.*): (.*)$", line)
        if match:
            found[str(Path(match.group(1)).resolve())] = match.group(2)
    return found


def audit_run(inputs: list[Path], output_dir: Path, quarantine_dir: Path, key: SiteKey,
              skipped: dict[str, str] | None = None) -> Audit:
    audit = Audit(files=len(inputs))
    reasons = _quarantine_reasons(quarantine_dir)
    skipped = skipped or {}
    outputs = {p.stem: p for p in output_dir.rglob("*.dcm")
               if not p.resolve().is_relative_to(quarantine_dir.resolve())}
    written_sops: dict[str, str] = {}          # output UID -> input name
    by_sop: dict[str, list[Path]] = defaultdict(list)
    root = Path(os.path.commonpath([p.parent for p in inputs])) if inputs else Path()
    names = {p: p.relative_to(root).as_posix() for p in inputs}   # unique, unlike file names
    for path in inputs:
        name = names[path]
        ds = _read(path)
        sop = _sop(ds)
        if sop:
            by_sop[sop].append(path)
        reason = reasons.get(str(path.resolve()))
        if reason is not None:
            audit.quarantined[name] = reason
            continue
        if str(path.resolve()) in skipped:
            audit.skipped[name] = skipped[str(path.resolve())]
            continue
        target = outputs.get(key.uid(sop)) if sop else None
        if target is None and sop:
            # Before the one-mapping rule, a re-encoded instance had a UID of its own.
            target = outputs.get(key.uid("reencoded:" + sop))
        if target is None or ds is None:
            audit.lost.append(name)
            continue
        audit.written.append(name)
        written_sops[target.stem] = name
        report = json.loads(target.with_suffix(".json").read_text())
        face = report.get("faces", {}).get("faces", 0) > 0 and report["pixels"]["faces_cleaned"]
        if face:
            audit.faces_replaced.append(name)
            continue
        out = _read(target)
        if out is None or _pixels(out) != _pixels(ds):
            audit.pixel_changes.append(name)
    # References: a UID that is the key's mapping of an input that was written must be an
    # output (a quarantined input's references cannot resolve, and that is expected).
    mapped = {key.uid(sop): sop for sop in by_sop}
    for target in outputs.values():
        out = _read(target)
        for where, uid in _references(out) if out is not None else ():
            if uid in mapped and any(names[p] in audit.written for p in by_sop[mapped[uid]]):
                audit.references += 1
                if uid not in outputs:
                    audit.dangling.append((target.name, where))
    for paths in by_sop.values():
        kept = [p for p in paths if names[p] not in audit.quarantined]
        digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in kept}
        if len(digests) > 1:
            audit.overwritten_files += len(digests) - 1
            audit.overwritten.append(", ".join(sorted(names[p] for p in kept)))
    return audit


def main(argv: list[str]) -> int:
    inputs_dir, output_dir, key_file = (Path(a) for a in argv[:3])
    inputs = sorted(p for p in inputs_dir.rglob("*") if p.is_file())
    quarantine_dir = Path(argv[3]) if len(argv) > 3 else output_dir / "quarantine"
    audit = audit_run(inputs, output_dir, quarantine_dir, load_key(key_file))
    print(audit.summary())
    for name, reason in sorted(audit.quarantined.items()):
        print(f"  quarantined {name}: {reason}")
    for name in audit.lost + audit.pixel_changes:
        print(f"  lost or changed: {name}")
    for out, where in audit.dangling:
        print(f"  dangling: {out} {where}")
    for group in audit.overwritten:
        print(f"  overwritten: {group}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
