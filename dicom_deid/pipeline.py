"""One study in, a de-identified study out: file placement, duplicates and quarantine around
the library's Deidentifier (dicom_deid.deidentifier), which does the de-identification.

    result = process_study(files, output_dir, Deidentifier("basic", key=key), None, quarantine_dir)
    result = process_study(files, output_dir, StudyOptions("basic"), key, quarantine_dir)

For each input instance, in order: read (strictly: a truncated file is refused) -> header
de-identification (PS3.15 Annex E profile) -> pixel stage -> write. Output:

    output_dir/<StudyUID>/<SeriesUID>/<SOPUID>.dcm    the instance, with its new UIDs
    output_dir/<StudyUID>/<SeriesUID>/<SOPUID>.json   a PHI-free report of what was done

Both are written atomically (temp file + rename). An input that fails at any step is
copied to quarantine_dir with a `<name>.reason.txt` beside it, and nothing is written to
output_dir for it; the other instances go on. Inputs are never modified.

An instance whose pixels may show a face (the profile's face_scope; see
header.pixels.may_show_face) goes through the pixel stage (pixel_stage.py) unless the face
method is `none`: faces replaced in every frame and re-encoded, under the same keyed SOP
Instance UID that every reference to the instance gets (one mapping, derived from the key
alone); where no frame changed (no face found), the original Pixel Data is kept bit for bit.
When the profile asks for keypoints (the default), a keypoint Structured Report goes in its
own series:

    output_dir/<StudyUID>/<SRSeriesUID>/<SRSOPUID>.dcm

The same pass covers burned-in text (dicom_deid.text) unless the profile's burned_in_text is
`off`: by default on video and photographs, on secondary captures and other images when the
profile asks for clean-pixel-data (pixel_stage.text_applies). The text stage's having run is
what lets the header claim clean-pixel-data (113101) and set BurnedInAnnotation NO. With
`faces="none"` the pass runs for the text alone when the profile asks for clean-pixel-data;
otherwise such instances are written header-only, with RecognizableVisualFeatures YES and
without the codes 113101/113102: nothing is claimed that was not done. A profile that asks
for clean-pixel-data fails an instance the text stage does not run on (burned_in_text off,
or pixels not of a kind it handles): it goes to quarantine rather than out with text that
may identify.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from dicom_deid.atomic import atomic_path
from dicom_deid.deidentifier import Deidentifier, Outcome, Prepared
from dicom_deid.errors import DeidError
from dicom_deid.header import DeidentificationError, Profile, SiteKey, write_atomic

LOG = logging.getLogger(__name__)
_UID_NAME = re.compile(r"^[0-9][0-9.]{0,63}$")


@dataclass(frozen=True)
class StudyOptions:
    """How to de-identify a study.

    profile: a shipped profile name, a profile YAML path, or a loaded Profile.
    options: option names added to the profile's own.
    faces:   face method for pixels that may show a face; None: the profile's default.
    durable: fsync every file before renaming it into place (the node needs it).
    keypoints_csv: also write the keypoints measured on the original frames as a tidy CSV
                   beside the instance's JSON report.
    """

    profile: str | Path | Profile = "basic"
    options: tuple[str, ...] = ()
    faces: str | None = None
    durable: bool = True
    keypoints_csv: bool = False

    def deidentifier(self, key: SiteKey) -> Deidentifier:
        """The library's Deidentifier for a study under these options."""
        return Deidentifier(self.profile, key=key, options=self.options, faces=self.faces)


@dataclass(frozen=True)
class InstanceFailure:
    """An input that could not be de-identified: where it is now and why (no PHI)."""

    path: Path
    reason: str
    quarantined: Path | None = None


@dataclass
class StudyResult:
    outputs: list[Path] = field(default_factory=list)
    failures: list[InstanceFailure] = field(default_factory=list)
    reports: list[Path] = field(default_factory=list)
    duplicates: int = 0          # identical re-sends, stored once
    # What the node's job records per output, known without reading the files back:
    # output path -> (SOP Class UID, Transfer Syntax UID); faces replaced and leak-check hits.
    facts: dict[Path, tuple[str, str]] = field(default_factory=dict)
    faces_replaced: int = 0
    leaks: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures


# ------------------------------------------------------------------------ one instance

def _uid(ds, keyword: str) -> str:
    value = str(ds.get(keyword, "") or "").strip()
    if not value:
        raise DeidentificationError(f"the instance has no {keyword}")
    if not _UID_NAME.match(value):
        raise DeidentificationError(f"{keyword} is not a valid UID, cannot name the output")
    return value


@dataclass
class InstanceOutput:
    """What one input became: its files (the instance, maybe a keypoint SR) and its report.
    duplicate: an identical re-send of an instance this run already wrote (stored once)."""

    files: list[Path]
    report: Path
    duplicate: bool = False
    facts: dict[Path, tuple[str, str]] = field(default_factory=dict)
    faces_replaced: int = 0
    leaks: int = 0


class DuplicateInstanceError(DeidentificationError):
    """A different instance under a SOP Instance UID that was already written."""


def source_digest(path: Path, key: SiteKey) -> str:
    """A keyed digest of the input file's bytes: tells an identical re-send from another
    instance under the same SOP Instance UID, without being a hash of PHI anyone can check."""
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return key.token("source-file", sha.hexdigest(), 32)


def _written_digest(target: Path) -> str:
    """The source digest an earlier run recorded for an output ("" when it is unknown)."""
    try:
        return str(json.loads(target.with_suffix(".json").read_text()).get("source_digest", ""))
    except (OSError, ValueError):
        return ""


def _earlier_output(target: Path, report: dict) -> list[Path]:
    files = [target]
    sr = report.get("keypoint_sr", {}).get("file") if isinstance(report, dict) else None
    if sr:
        files.append(target.parent.parent / sr)
    return files


def process_instance(path: Path, output_dir: Path, deid: Deidentifier, *,
                     durable: bool = True, keypoints_csv: bool = False,
                     registry: dict[str, str] | None = None) -> InstanceOutput:
    """De-identify one file into output_dir.

    registry: output SOP Instance UID -> source digest of what this run has written so far
    (shared across studies by the caller). An identical re-send is stored once
    (InstanceOutput.duplicate); another instance under a SOP Instance UID already written,
    in this run or an earlier one into the same output_dir, raises DuplicateInstanceError:
    nothing is ever overwritten.

    Raises a DeidError (dicom_deid.errors: a message without PHI) for anything this
    instance's content makes impossible. On any error nothing of this instance is left in
    output_dir.
    """
    with warnings.catch_warnings():
        # pydicom's warnings quote element values (PHI); they are not shown.
        warnings.simplefilter("ignore")
        return _process_instance(path, output_dir, deid, durable, keypoints_csv, registry)


def _process_instance(path: Path, output_dir: Path, deid: Deidentifier, durable: bool,
                      keypoints_csv: bool, registry: dict[str, str] | None) -> InstanceOutput:
    prepared = deid.prepare(path)
    out = prepared.dataset
    study, series, sop = (_uid(out, k) for k in
                          ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"))
    digest = source_digest(path, deid.key)
    target = output_dir / study / series / f"{sop}.dcm"
    earlier = registry.get(sop) if registry is not None else None
    on_disk = earlier is None and target.exists()
    if on_disk:
        # The report is written after the output: an output without one was cut short (a
        # worker killed in between) and never recorded or sent, so it is made again, not
        # taken for another instance's.
        earlier = _written_digest(target) or None
    if earlier is not None:
        if earlier != digest:
            raise DuplicateInstanceError(
                "another instance with the same SOP Instance UID but different content "
                "was already written; it is not overwritten (duplicate SOP Instance UID)"
            )
        report_path = target.with_suffix(".json")
        if registry is not None:
            registry[sop] = digest
        if not on_disk:
            return InstanceOutput([target], report_path, duplicate=True)
        # Written by an earlier run (a job cut short): listed as this run's output, with the
        # faces its report counts; seen in this run: not again.
        earlier_report = json.loads(report_path.read_text())
        faces = earlier_report.get("faces") or {}
        return InstanceOutput(_earlier_output(target, earlier_report), report_path,
                              faces_replaced=int(faces.get("faces", 0) or 0),
                              leaks=int(faces.get("leaks", 0) or 0))
    files, report, outcome = _place(prepared, deid, output_dir, study, target, durable,
                                    keypoints_csv)
    del prepared
    report["source_digest"] = digest
    report_path = target.with_suffix(".json")
    write_atomic((json.dumps(report, indent=2) + "\n").encode(), report_path, durable=durable)
    if registry is not None:
        registry[sop] = digest
    return InstanceOutput(list(files), report_path, facts=files,
                          faces_replaced=outcome.faces_replaced, leaks=outcome.leaks)


def _place(prepared: Prepared, deid: Deidentifier, output_dir: Path, study: str,
           target: Path, durable: bool, keypoints_csv: bool,
           ) -> tuple[dict[Path, tuple[str, str]], dict, Outcome]:
    """Run the Deidentifier on the instance and put what it made in place: the instance at
    target, its keypoint SR in the SR's series folder, the CSV beside the instance. Returns
    the files written (path -> SOP Class UID, Transfer Syntax UID), the report to write and
    the outcome."""
    written: list[Path] = []
    try:
        outcome = deid.deidentify(prepared, video=target, durable=durable)
        if outcome.video is None:
            # Header only, or no face in any frame: the original Pixel Data goes out bit for bit.
            write_atomic(outcome.dataset, target, durable=durable)
        written.append(target)
        facts = {target: (outcome.sop_class_uid, outcome.transfer_syntax)}
        report = _placed_report(outcome, target.name)
        if outcome.sr is not None:
            sr = outcome.sr
            sr_path = output_dir / study / str(sr.SeriesInstanceUID) / f"{sr.SOPInstanceUID}.dcm"
            write_atomic(sr, sr_path, durable=durable)
            written.append(sr_path)
            facts[sr_path] = (str(sr.SOPClassUID), str(sr.file_meta.TransferSyntaxUID))
            built = report["keypoint_sr"]
            report["keypoint_sr"] = {
                "file": f"{sr.SeriesInstanceUID}/{sr_path.name}",
                "series_instance_uid": built["series_instance_uid"],
                "sop_instance_uid": built["sop_instance_uid"],
                "bytes": sr_path.stat().st_size,
                "frame_step": built["frame_step"],
            }
        if keypoints_csv and outcome.keypoints is not None:
            from dicom_deid.keypoints import write_keypoints_csv

            csv_path = target.with_suffix(".keypoints.csv")
            write_keypoints_csv(csv_path, outcome.keypoints, durable=durable)
            report["keypoints_csv"] = csv_path.name
    except BaseException:
        # Never leave a video without its SR, or an SR without its video.
        for done in written:
            done.unlink(missing_ok=True)
        target.unlink(missing_ok=True)
        raise
    return facts, report, outcome


def _placed_report(outcome: Outcome, name: str) -> dict:
    """The Deidentifier's report with the file's name after the tool's."""
    report = dict(outcome.report)
    return {"tool": report.pop("tool"), "file": name, **report}


# ------------------------------------------------------------------------ quarantine

def quarantine(path: Path, reason: str, quarantine_dir: Path) -> Path | None:
    """Copy the input into quarantine_dir with `<name>.reason.txt`; None if it cannot be copied."""
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    stem, suffix = path.stem or "input", path.suffix
    target = quarantine_dir / path.name
    n = 1
    while target.exists() or target.with_name(target.name + ".reason.txt").exists():
        target = quarantine_dir / f"{stem}-{n}{suffix}"
        n += 1
    reason_text = f"input: {path}\nreason: {reason}\n".encode()
    copied: Path | None = target
    try:
        with atomic_path(target, durable=False) as tmp:
            shutil.copyfile(path, tmp)
    except OSError:
        copied = None
        reason_text += b"the input could not be copied here\n"
    write_atomic(reason_text, target.with_name(target.name + ".reason.txt"))
    return copied


# ------------------------------------------------------------------------ one study

def process_study(files: Iterable[Path | str], output_dir: Path | str,
                  options: StudyOptions | Deidentifier, key: SiteKey | None,
                  quarantine_dir: Path | str,
                  progress: Callable[[Path, bool], None] | None = None,
                  registry: dict[str, str] | None = None, *,
                  durable: bool | None = None,
                  keypoints_csv: bool | None = None) -> StudyResult:
    """De-identify the instances of one study; see the module doc for what is written.

    options: the study's Deidentifier (its key is used; `key` may be None), or StudyOptions
    with the key to build one from. durable and keypoints_csv: see StudyOptions (for a
    Deidentifier: default True and False).

    `progress(path, ok)` is called after each instance. `registry` (output SOP Instance UID
    -> source digest) spans studies when the caller passes the same dict to each call, so a
    SOP Instance UID re-used in another study is caught too (see process_instance). Raises only
    for problems that concern every instance (a bad profile, key or face method: a DeidError);
    per-instance problems become StudyResult.failures, with the input quarantined.
    """
    output_dir, quarantine_dir = Path(output_dir), Path(quarantine_dir)
    if isinstance(options, Deidentifier):
        deid = options
    else:
        if key is None:
            raise ValueError("process_study needs the site key with StudyOptions")
        deid = options.deidentifier(key)
        durable = options.durable if durable is None else durable
        keypoints_csv = options.keypoints_csv if keypoints_csv is None else keypoints_csv
    durable = True if durable is None else durable
    keypoints_csv = bool(keypoints_csv)
    result = StudyResult()
    registry = {} if registry is None else registry
    for raw in files:
        path = Path(raw)
        try:
            done = process_instance(path, output_dir, deid, durable=durable,
                                    keypoints_csv=keypoints_csv, registry=registry)
        except DeidError as exc:
            # Every project error says what went wrong without PHI (dicom_deid.errors).
            reason = str(exc)
        except Exception as exc:  # noqa: BLE001 (one bad instance must not stop the study)
            # The message of an unexpected error may quote a value: only its type is kept.
            reason = f"unexpected error ({type(exc).__name__}) while de-identifying"
            LOG.debug("unexpected %s for %s", type(exc).__name__, path.name)
        else:
            if done.duplicate:
                result.duplicates += 1
            else:
                result.outputs.extend(done.files)
                result.reports.append(done.report)
                result.facts.update(done.facts)
                result.faces_replaced += done.faces_replaced
                result.leaks += done.leaks
            if progress:
                progress(path, True)
            continue
        result.failures.append(InstanceFailure(path, reason, quarantine(path, reason, quarantine_dir)))
        if progress:
            progress(path, False)
    LOG.debug("study: %d instances written, %d failed, %d duplicates",
              len(result.outputs), len(result.failures), result.duplicates)
    return result
