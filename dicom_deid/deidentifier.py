"""The library entry point: a study-scoped Deidentifier (docs/LIBRARY.md).

    deid = Deidentifier("basic", key="site.key", faces="blur")
    outcome = deid.deidentify(dataset_or_path)   # Outcome: dataset, sr, report (PHI-free)

One Deidentifier serves one study: it holds what every instance of the study must share, the
loaded profile with its options, the site key, the face method and the pixel settings, so the
instances come out alike (one donor, one date shift per patient, one SR series, all derived
from the key and the original study). The CLI, the node's study job (through
dicom_deid.pipeline, which adds file placement, duplicates and quarantine) and the
evaluation's face replacers are built from it.

For each instance: read (a path strictly: a truncated file is refused) -> header
de-identification (PS3.15 Annex E profile) -> the pixel stage where the pixels may show a face
(faces replaced, burned-in text covered, keypoints measured and written as an SR). Every
error is a DeidError whose message carries no PHI (dicom_deid.errors).
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from dicom_deid import __version__
from dicom_deid.errors import DeidError
from dicom_deid.header import (
    HeaderResult,
    PixelStatus,
    Profile,
    SiteKey,
    deidentify,
    has_pixels,
    load_key,
    load_profile,
    mark_pixels,
    read_instance,
)
from dicom_deid.onnx_device import DEFAULT_FACE_ENGINE, DEFAULT_KEYPOINT_ENGINE, ModelSettings
from dicom_deid.pixel_stage import InstanceContext, PixelStageError, make_replacer, text_applies
from dicom_deid.policy import PixelPolicy

if TYPE_CHECKING:
    from dicom_deid.faces import FaceReplacer

__all__ = ["Deidentifier", "Outcome", "Prepared", "SettingsError"]


class SettingsError(DeidError, ValueError):
    """A Deidentifier asked for something that does not exist (e.g. an unknown face method)."""


@dataclass
class Prepared:
    """An instance read and its header de-identified; the pixel work is still to do.

    original: the dataset as read (PHI: never written, never logged)
    path:     the file it was read from (frames are streamed from it), None for a dataset
    header:   the header stage's result (dataset, actions, warnings, date shift)
    pixel_pass: whether the pixel stage runs on it
    """

    original: Dataset
    path: Path | None
    header: HeaderResult
    pixel_pass: bool

    @property
    def dataset(self) -> Dataset:
        """The de-identified header (with the original Pixel Data until the pixel stage ran)."""
        return self.header.dataset


@dataclass
class Outcome:
    """What one instance became.

    dataset:  the de-identified instance. Where the pixel stage re-encoded the pixels into
              `video` (a path given to deidentify), this is that file's header, without Pixel
              Data; otherwise the whole instance, Pixel Data included.
    video:    the file the re-encoded instance was written to; None when it is in `dataset`
    sr:       the keypoint Structured Report (its own series of the same study), or None
    keypoints: per frame (frame i + 1), measured on the original frames, or None
    status:   what the pixel stage did (None: the pixels were not touched)
    report:   PHI-free: the profile, the actions per kind, the pixel work (faces replaced,
              text covered, frames changed, the video's encoding, keypoint invariance)
    """

    dataset: Dataset
    report: dict[str, Any]
    video: Path | None = None
    sr: Dataset | None = None
    keypoints: list | None = None
    status: PixelStatus | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def sop_class_uid(self) -> str:
        return str(self.dataset.get("SOPClassUID", ""))

    @property
    def transfer_syntax(self) -> str:
        meta = getattr(self.dataset, "file_meta", None)
        return str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""

    @property
    def faces_replaced(self) -> int:
        return int((self.report.get("faces") or {}).get("faces", 0) or 0)

    @property
    def leaks(self) -> int:
        return int((self.report.get("faces") or {}).get("leaks", 0) or 0)


def _pixel_policy(profile: Profile, faces: str | None, face_shape: float | None) -> PixelPolicy:
    """The one place that reads the pixel settings: the profile's PixelPolicy with the
    caller's face method and shape, checked as a profile's are."""
    update: dict[str, Any] = {}
    if faces is not None:
        update["faces"] = faces
    if face_shape is not None:
        update["face_shape"] = face_shape
    if not update:
        return profile.pixels
    try:
        return PixelPolicy.model_validate({**profile.pixels.model_dump(), **update})
    except ValidationError as exc:
        names = {"faces": "face method", "face_shape": "face_shape"}
        raise SettingsError("; ".join(
            f"{names.get(str(e['loc'][0]), str(e['loc'][0])) if e['loc'] else 'settings'}: "
            f"{e['msg']}" for e in exc.errors())) from None


def _load(profile: str | Path | Profile, options: tuple[str, ...]) -> Profile:
    if isinstance(profile, Profile):
        if not options:
            return profile
        source = profile.path or profile.name
        return load_profile(source, tuple(profile.options) + options)
    return load_profile(profile, options)


class Deidentifier:
    """De-identifies the instances of one study (see the module doc).

    profile: a shipped profile name, a profile YAML path, or a loaded Profile
    key:     a SiteKey, a key file, or None for the CLI's default key (created on first use)
    options: PS3.15 option names added to the profile's own
    faces:   the face method; None: the profile's default
    face_shape: swap's donor-shape weight; None: the profile's
    device:  where the models run: auto | cpu | cuda[:N] (dicom_deid.onnx_device)
    face_engine: mediapipe | onnx: who runs the face detector and mesh; None: the default
    keypoint_engine: mediapipe | onnx: who runs the keypoint SR's body pose; None: the default

    Raises ProfileError, KeyFileError or SettingsError (all DeidError) for bad settings.
    """

    def __init__(self, profile: str | Path | Profile = "basic", *,
                 key: SiteKey | str | Path | None = None, options: Iterable[str] = (),
                 faces: str | None = None, face_shape: float | None = None,
                 device: str = "auto", face_engine: str | None = None,
                 keypoint_engine: str | None = None) -> None:
        self.runtime = ModelSettings(device, face_engine or DEFAULT_FACE_ENGINE,
                                     keypoint_engine or DEFAULT_KEYPOINT_ENGINE)
        # cuda asked where onnxruntime has no CUDA: said now, before any file is touched.
        self.runtime.check()
        self.profile = _load(profile, tuple(options))
        self.key = key if isinstance(key, SiteKey) else load_key(key)
        self.pixels: PixelPolicy = _pixel_policy(self.profile, faces, face_shape)

    @property
    def method(self) -> str:
        """The face method of this study."""
        return self.pixels.faces

    # ------------------------------------------------------------------ one instance

    def deidentify(self, source: Dataset | Path | str | Prepared, *,
                   video: Path | None = None, durable: bool = True) -> Outcome:
        """De-identify one instance: a pydicom Dataset (not modified), a file, or what
        prepare() returned.

        video: where the pixel stage writes the instance when it re-encodes the pixels (a
        face replaced, text covered), atomically; then Outcome.dataset is its header only.
        Without it the instance is encoded in a temporary folder and read back whole into
        Outcome.dataset (simple, but a long video is then held in memory).
        durable: the file at `video` survives a power cut once this returns (fsync of the
        file and its folder; the node needs it, a one-shot CLI run does not).
        """
        prepared = source if isinstance(source, Prepared) else self.prepare(source)
        with warnings.catch_warnings():
            # pydicom's warnings quote element values (PHI); they are not shown.
            warnings.simplefilter("ignore")
            if not prepared.pixel_pass:
                _load_deferred_pixels(prepared.dataset)
                return Outcome(prepared.dataset, self._report(prepared, None),
                               warnings=list(prepared.header.warnings))
            if video is not None:
                outcome = self._pixels(prepared, video, durable)
                if outcome.video is None:
                    _load_deferred_pixels(outcome.dataset)
                return outcome
            scratch = Path(tempfile.mkdtemp(prefix="dicom-deid-"))
            try:
                outcome = self._pixels(prepared, scratch / "instance.dcm", False)
                if outcome.video is not None:
                    from pydicom import dcmread

                    outcome.dataset = dcmread(outcome.video)   # Pixel Data included
                    outcome.video = None
                else:
                    _load_deferred_pixels(outcome.dataset)
                return outcome
            finally:
                shutil.rmtree(scratch, ignore_errors=True)

    def prepare(self, source: Dataset | Path | str) -> Prepared:
        """Read the instance (a path: strictly) and de-identify its header; decide whether
        the pixel stage runs. Cheap next to the pixel work: the pipeline checks duplicates
        on the new UIDs before going on."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if isinstance(source, Dataset):
                original, path = source, None
            else:
                path = Path(source)
                # The Pixel Data value stays in the file (checked complete without reading
                # it): the frames are streamed from the file, and the value is read only
                # where it goes out unchanged.
                original = read_instance(path, defer_pixels=True)
            header = deidentify(original, self.profile, self.key, pixels=None)
            _lend_file(header.dataset, original)
            header.warnings.extend(self._check_burned_in_annotation(original, header))
            return Prepared(original, path, header, self._needs_pixels(original, header))

    def face_replacer(self, original_study_uid: str, fps: float = 25.0) -> FaceReplacer:
        """The face stage for frames of this study (the evaluation's captures use it): the
        study's donor from the key, the method and shape of this Deidentifier."""
        return make_replacer(self.pixels, self.key, original_study_uid, fps, self.runtime)

    # ------------------------------------------------------------------ the decisions

    def _text_runs(self, source: Dataset, header: HeaderResult) -> bool:
        """Whether the pixel pass will run the burned-in text stage on this instance."""
        if not has_pixels(source) or not header.may_show_face:
            return False
        if not text_applies(self.pixels, self.profile.options, source):
            return False
        return self.method != "none" or "clean-pixel-data" in self.profile.options

    def _check_burned_in_annotation(self, source: Dataset, header: HeaderResult) -> list[str]:
        """Fail closed on text the header says is burned into the pixels where the text stage
        does not run on the instance (profile burned_in_annotation: quarantine); `warn` lets
        it out with a report warning. Where the text stage runs, it covers the text."""
        if not _burned_in_annotation(source) or self._text_runs(source, header):
            return []
        if self.profile.burned_in_annotation == "quarantine":
            raise PixelStageError(
                "BurnedInAnnotation is YES: text burned into the pixels may identify the "
                "patient and the burned-in text stage does not run on this instance "
                "(burned_in_text off, face method none without clean-pixel-data, or pixels it "
                "does not handle; profile setting burned_in_annotation: quarantine)"
            )
        return ["BurnedInAnnotation is YES: burned-in text was not removed "
                "(profile setting burned_in_annotation: warn)"]

    def _needs_pixels(self, source: Dataset, header: HeaderResult) -> bool:
        """Whether the pixel stage must run; PixelStageError when the pixel work asked for
        cannot be done by this build."""
        if not has_pixels(source):
            return False
        options = self.profile.options
        text = header.may_show_face and text_applies(self.pixels, options, source)
        if "clean-pixel-data" in options and not text:
            raise PixelStageError(
                "the profile asks for clean-pixel-data, but the burned-in text stage does not "
                "run on this instance (burned_in_text is off, or its pixels are not video, "
                "photography or secondary capture)"
            )
        if not header.may_show_face:
            return False
        if self.method == "none":
            if "clean-recognizable-visual-features" in options:
                raise PixelStageError(
                    "the profile asks for clean-recognizable-visual-features, but face method "
                    "'none' was chosen"
                )
            # Face method none is the header-only route (the node's fast rules): the pixels
            # are touched for text only when the profile asks for clean-pixel-data.
            return text and "clean-pixel-data" in options
        return True

    # ------------------------------------------------------------------ the pixel stage

    def _pixels(self, prepared: Prepared, target: Path, durable: bool) -> Outcome:
        from dicom_deid.pixel_stage import clean_faces

        header = prepared.header
        context = InstanceContext(header=header.dataset, original=prepared.original,
                                  path=prepared.path, profile=self.profile, pixels=self.pixels,
                                  key=self.key, date_offset_days=header.offset_days,
                                  durable=durable, runtime=self.runtime)
        done = clean_faces(context, target)
        out = header.dataset
        mark_pixels(out, self.profile, done.status)
        report = self._report(prepared, done.status)
        report.update(done.report)
        outcome = Outcome(out, report, sr=done.sr, keypoints=done.keypoints, status=done.status,
                          warnings=list(header.warnings))
        if done.status.pixels_modified:
            # The instance is the file written; its header is what the pixel stage read back.
            outcome.dataset = done.written_header if done.written_header is not None else out
            outcome.video = target
        if done.sr is not None:
            sr = done.sr
            report["keypoint_sr"] = {
                "series_instance_uid": str(sr.SeriesInstanceUID),
                "sop_instance_uid": str(sr.SOPInstanceUID),
                "frame_step": self.pixels.keypoint_frame_step,
            }
        return outcome

    def _report(self, prepared: Prepared, pixels: PixelStatus | None) -> dict[str, Any]:
        header, profile, out = prepared.header, self.profile, prepared.dataset
        return {
            "tool": f"dicom-deid {__version__}",
            "sop_class_uid": str(out.get("SOPClassUID", "")),
            "study_instance_uid": str(out.get("StudyInstanceUID", "")),
            "series_instance_uid": str(out.get("SeriesInstanceUID", "")),
            "sop_instance_uid": str(out.get("SOPInstanceUID", "")),
            "profile": profile.name,
            "options": list(profile.options),
            "annex_e_table_sha256": profile.table.sha256,
            "actions": dict(sorted(header.actions.items())),
            "dates": {"keep": "kept", "shift": "shifted per patient", "remove": "removed"}[
                header.date_mode
            ],
            "pseudonyms": header.pseudonym_source or ("keyed" if profile.pseudonyms else "none"),
            "warnings": list(header.warnings),
            "pixels": {
                "present": has_pixels(prepared.original),
                "may_show_face": header.may_show_face,
                "face_method": self.method,
                "faces_cleaned": bool(pixels and pixels.faces_cleaned),
                "pixels_modified": bool(pixels and pixels.pixels_modified),
                "burned_in_annotation_cleaned": bool(pixels and pixels.burned_in_annotation_cleaned),
            },
        }


def _burned_in_annotation(source: Dataset) -> bool:
    try:
        value = source.get("BurnedInAnnotation", "")
    except Exception:  # noqa: BLE001 (an unreadable value says nothing: not YES)
        return False
    return has_pixels(source) and str(value or "").strip().upper() == "YES"


_PIXEL_DATA = 0x7FE00010


def _deferred(ds: Dataset) -> bool:
    raw = ds.get_item(_PIXEL_DATA, keep_deferred=True) if _PIXEL_DATA in ds else None
    return type(raw) is RawDataElement and raw.value is None and raw.length != 0


def _lend_file(out: Dataset, original: Dataset) -> None:
    """The header stage passes a Pixel Data value left in the file on as it is; the output
    gets what pydicom needs to read it from there on first access (writing it included)."""
    if _deferred(out):
        out.filename, out.fileobj_type = original.filename, original.fileobj_type
        out.timestamp, out.buffer = getattr(original, "timestamp", None), None


def _load_deferred_pixels(ds: Dataset) -> None:
    """Read a Pixel Data value still in the input file into ds, so the outcome does not
    depend on the file any more."""
    if _deferred(ds):
        ds[_PIXEL_DATA]   # noqa: B018 (pydicom reads a deferred value on access and keeps it)
