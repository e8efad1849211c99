"""One study in, a de-identified study out (DESIGN.md: "the path of one study").

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
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from dicom_deid import __version__, face_methods
from dicom_deid.header import (
    DeidentificationError,
    HeaderResult,
    InputError,
    PixelStatus,
    Profile,
    SiteKey,
    deidentify,
    has_pixels,
    load_profile,
    mark_pixels,
    read_instance,
    write_atomic,
)
from dicom_deid.pixel_stage import PixelStageError
from dicom_deid.video.errors import VideoError

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

    def load(self) -> Profile:
        if isinstance(self.profile, Profile):
            if not self.options:
                return self.profile
            source = self.profile.path or self.profile.name
            return load_profile(source, tuple(self.profile.options) + tuple(self.options))
        return load_profile(self.profile, tuple(self.options))

    def face_method(self, profile: Profile) -> str:
        method = (self.faces or profile.pixels.faces or "none").strip().lower()
        if method not in face_methods.choices():
            raise ValueError(f"face method {method!r} is not one of "
                             f"{', '.join(face_methods.choices())}")
        return method


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


def _burned_in_annotation(source) -> bool:
    try:
        value = source.get("BurnedInAnnotation", "")
    except Exception:  # noqa: BLE001 (an unreadable value says nothing: not YES)
        return False
    return has_pixels(source) and str(value or "").strip().upper() == "YES"


def _text_runs(source, header: HeaderResult, profile: Profile, faces: str) -> bool:
    """Whether the pixel pass will run the burned-in text stage on this instance."""
    from dicom_deid.pixel_stage import text_applies

    if not has_pixels(source) or not header.may_show_face:
        return False
    if not text_applies(profile, source):
        return False
    return faces != "none" or "clean-pixel-data" in profile.options


def _check_burned_in_annotation(source, header: HeaderResult, profile: Profile,
                                faces: str) -> list[str]:
    """Fail closed on text the header says is burned into the pixels where the text stage
    does not run on the instance (profile burned_in_annotation: quarantine); `warn` lets it
    out with a report warning. Where the text stage runs, it covers the text: no warning."""
    if not _burned_in_annotation(source) or _text_runs(source, header, profile, faces):
        return []
    if profile.burned_in_annotation == "quarantine":
        raise PixelStageError(
            "BurnedInAnnotation is YES: text burned into the pixels may identify the patient "
            "and the burned-in text stage does not run on this instance (burned_in_text off, "
            "face method none without clean-pixel-data, or pixels it does not handle; profile "
            "setting burned_in_annotation: quarantine)"
        )
    return ["BurnedInAnnotation is YES: burned-in text was not removed "
            "(profile setting burned_in_annotation: warn)"]


def _needs_faces(source, header: HeaderResult, profile: Profile, faces: str) -> bool:
    """Whether the face stage must run; PixelStageError when the pixel work asked for
    cannot be done by this build."""
    if not has_pixels(source):
        return False
    from dicom_deid.pixel_stage import text_applies

    text = header.may_show_face and text_applies(profile, source)
    if "clean-pixel-data" in profile.options and not text:
        raise PixelStageError(
            "the profile asks for clean-pixel-data, but the burned-in text stage does not run "
            "on this instance (burned_in_text is off, or its pixels are not video, "
            "photography or secondary capture)"
        )
    if not header.may_show_face:
        return False
    if faces == "none":
        if "clean-recognizable-visual-features" in profile.options:
            raise PixelStageError(
                "the profile asks for clean-recognizable-visual-features, but face method "
                "'none' was chosen"
            )
        # Face method none is the header-only route (the node's fast rules): the pixels are
        # touched for text only when the profile asks for clean-pixel-data.
        return text and "clean-pixel-data" in profile.options
    return True


def _report(header: HeaderResult, profile: Profile, faces: str, pixels: PixelStatus | None,
            out, dcm_name: str, source_has_pixels: bool) -> dict:
    actions = {k: v for k, v in sorted(header.actions.items())}
    return {
        "tool": f"dicom-deid {__version__}",
        "file": dcm_name,
        "sop_class_uid": str(out.get("SOPClassUID", "")),
        "study_instance_uid": str(out.get("StudyInstanceUID", "")),
        "series_instance_uid": str(out.get("SeriesInstanceUID", "")),
        "sop_instance_uid": str(out.get("SOPInstanceUID", "")),
        "profile": profile.name,
        "options": list(profile.options),
        "annex_e_table_sha256": profile.table.sha256,
        "actions": actions,
        "dates": {"keep": "kept", "shift": "shifted per patient", "remove": "removed"}[
            header.date_mode
        ],
        "pseudonyms": header.pseudonym_source or ("keyed" if profile.pseudonyms else "none"),
        "warnings": list(header.warnings),
        "pixels": {
            "present": source_has_pixels,
            "may_show_face": header.may_show_face,
            "face_method": faces,
            "faces_cleaned": bool(pixels and pixels.faces_cleaned),
            "pixels_modified": bool(pixels and pixels.pixels_modified),
            "burned_in_annotation_cleaned": bool(pixels and pixels.burned_in_annotation_cleaned),
        },
    }


@dataclass
class InstanceOutput:
    """What one input became: its files (the instance, maybe a keypoint SR) and its report.
    duplicate: an identical re-send of an instance this run already wrote (stored once)."""

    files: list[Path]
    report: Path
    duplicate: bool = False


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


def process_instance(path: Path, output_dir: Path, profile: Profile, faces: str,
                     key: SiteKey, *, durable: bool = True,
                     keypoints_csv: bool = False,
                     registry: dict[str, str] | None = None) -> InstanceOutput:
    """De-identify one file into output_dir.

    registry: output SOP Instance UID -> source digest of what this run has written so far
    (shared across studies by the caller). An identical re-send is stored once
    (InstanceOutput.duplicate); another instance under a SOP Instance UID already written,
    in this run or an earlier one into the same output_dir, raises DuplicateInstanceError:
    nothing is ever overwritten.

    Raises InputError, DeidentificationError, PixelStageError or VideoError (messages
    without PHI). On any error nothing of this instance is left in output_dir.
    """
    with warnings.catch_warnings():
        # pydicom's warnings quote element values (PHI); they are not shown.
        warnings.simplefilter("ignore")
        source = read_instance(path)
        header = deidentify(source, profile, key, pixels=None)
        burned_in = _check_burned_in_annotation(source, header, profile, faces)
        out = header.dataset
        study, series, sop = (_uid(out, k) for k in
                              ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"))
        digest = source_digest(path, key)
        target = output_dir / study / series / f"{sop}.dcm"
        earlier = registry.get(sop) if registry is not None else None
        on_disk = earlier is None and target.exists()
        if on_disk:
            earlier = _written_digest(target)
        if earlier is not None:
            if earlier != digest:
                raise DuplicateInstanceError(
                    "another instance with the same SOP Instance UID but different content "
                    "was already written; it is not overwritten (duplicate SOP Instance UID)"
                )
            report_path = target.with_suffix(".json")
            files = _earlier_output(target, json.loads(report_path.read_text())) if on_disk \
                else [target]
            if registry is not None:
                registry[sop] = digest
            # Written by an earlier run: listed as this run's output; seen in this run: not again.
            return InstanceOutput(files, report_path, duplicate=not on_disk)
        header.warnings.extend(burned_in)
        source_has_pixels = has_pixels(source)
        if not _needs_faces(source, header, profile, faces):
            report = _report(header, profile, faces, None, out, target.name, source_has_pixels)
            report["source_digest"] = digest
            write_atomic(out, target, durable=durable)
            files = [target]
        else:
            files, report = _process_faces(path, source, header, profile, faces, key,
                                           output_dir, study, series, durable, keypoints_csv)
            report["source_digest"] = digest
        del source
    report_path = target.with_suffix(".json")
    write_atomic((json.dumps(report, indent=2) + "\n").encode(), report_path, durable=durable)
    if registry is not None:
        registry[sop] = digest
    return InstanceOutput(files, report_path)


def _process_faces(path: Path, source, header: HeaderResult, profile: Profile, faces: str,
                   key: SiteKey, output_dir: Path, study: str, series: str, durable: bool,
                   keypoints_csv: bool) -> tuple[list[Path], dict]:
    from dicom_deid.pixel_stage import clean_faces

    original_study = str(source.StudyInstanceUID)
    original_sop = str(source.SOPInstanceUID)
    # One mapping from an original SOP Instance UID to its output UID, whatever the pixel
    # stage does: the header stage's, which every reference to the instance uses too.
    new_sop = str(header.dataset.SOPInstanceUID)
    target = output_dir / study / series / f"{new_sop}.dcm"
    written: list[Path] = []
    try:
        outcome = clean_faces(path, header.dataset, original_study, original_sop, profile,
                              faces, key, target, durable=durable,
                              date_offset_days=header.offset_days, original=source)
        out = header.dataset
        mark_pixels(out, profile, outcome.status)
        if not outcome.status.pixels_modified:
            # No face in any frame: the original Pixel Data goes out bit for bit.
            write_atomic(out, target, durable=durable)
        written.append(target)
        report = _report(header, profile, faces, outcome.status, out, target.name, True)
        report.update(outcome.report)
        if outcome.sr is not None:
            sr = outcome.sr
            sr_path = output_dir / study / str(sr.SeriesInstanceUID) / f"{sr.SOPInstanceUID}.dcm"
            write_atomic(sr, sr_path, durable=durable)
            written.append(sr_path)
            report["keypoint_sr"] = {
                "file": f"{sr.SeriesInstanceUID}/{sr_path.name}",
                "series_instance_uid": str(sr.SeriesInstanceUID),
                "sop_instance_uid": str(sr.SOPInstanceUID),
                "bytes": sr_path.stat().st_size,
                "frame_step": profile.pixels.keypoint_frame_step,
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
    return written, report


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
        fd, tmp = tempfile.mkstemp(dir=quarantine_dir, prefix=".tmp-")
        os.close(fd)
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError:
        copied = None
        reason_text += b"the input could not be copied here\n"
    write_atomic(reason_text, target.with_name(target.name + ".reason.txt"))
    return copied


# ------------------------------------------------------------------------ one study

def process_study(files: Iterable[Path | str], output_dir: Path | str, options: StudyOptions,
                  key: SiteKey, quarantine_dir: Path | str,
                  progress: Callable[[Path, bool], None] | None = None,
                  registry: dict[str, str] | None = None) -> StudyResult:
    """De-identify the instances of one study; see the module doc for what is written.

    `progress(path, ok)` is called after each instance. `registry` (output SOP Instance UID
    -> source digest) spans studies when the caller passes the same dict to each call, so a
    SOP Instance UID re-used in another study is caught too (see process_instance). Raises only for problems that
    concern every instance (a bad profile or face method); per-instance problems become
    StudyResult.failures, with the input quarantined.
    """
    output_dir, quarantine_dir = Path(output_dir), Path(quarantine_dir)
    profile = options.load()
    faces = options.face_method(profile)
    result = StudyResult()
    registry = {} if registry is None else registry
    for raw in files:
        path = Path(raw)
        try:
            done = process_instance(path, output_dir, profile, faces, key,
                                    durable=options.durable, keypoints_csv=options.keypoints_csv,
                                    registry=registry)
        except (InputError, DeidentificationError, PixelStageError, VideoError) as exc:
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
            if progress:
                progress(path, True)
            continue
        result.failures.append(InstanceFailure(path, reason, quarantine(path, reason, quarantine_dir)))
        if progress:
            progress(path, False)
    LOG.debug("study: %d instances written, %d failed, %d duplicates",
             len(result.outputs), len(result.failures), result.duplicates)
    return result
