"""Burned-in text through `deidentify`'s pipeline: one pass with the faces, the header says
what was done, and clean-pixel-data is refused where the text stage does not run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian

from dicom_deid.header import load_key
from dicom_deid.pipeline import StudyOptions, process_study
from dicom_deid.video import open_frames
from tests.text.frames import background, put
from tests.video.fixtures import MF_TRUE_COLOR_SC, _with_meta, base_header

PHI = {"PatientName": "DOE^JANE", "PatientID": "48213977", "PatientBirthDate": "19570302"}


def _texted_instance(path: Path, frames: int = 6) -> tuple[Path, list, list]:
    """A native multi-frame secondary capture whose pixels carry the patient's name and ID."""
    pictures, boxes = [], []
    for i in range(frames):
        rgb = background(seed=i)
        boxes.append([put(rgb, "DOE^JANE", 8, 24, scale=0.6),
                      put(rgb, "ID 48213977", 8, 220, scale=0.5, colour=(250, 250, 120))])
        pictures.append(rgb)
    ds = base_header(MF_TRUE_COLOR_SC, 240, 320, frames, 40.0)
    for keyword, value in PHI.items():
        setattr(ds, keyword, value)
    ds.BurnedInAnnotation = "YES"
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = b"".join(p.tobytes() for p in pictures)
    ds["PixelData"].VR = "OB"
    _with_meta(ds, ExplicitVRLittleEndian).save_as(path, enforce_file_format=True)
    return path, pictures, boxes


def _profile(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "profile.yaml"
    path.write_text("\n".join(["profile: test-text", "base: basic", *lines]) + "\n")
    return path


def _run(tmp_path: Path, source: Path, *lines: str, options: tuple[str, ...] = ()):
    opts = StudyOptions(profile=_profile(tmp_path, *lines), options=options)
    key = load_key(None)          # the per-test state folder's key (conftest)
    return process_study([source], tmp_path / "out", opts, key, tmp_path / "q")


def test_text_alone_is_covered_and_the_header_says_so(tmp_path: Path, detector) -> None:
    source, pictures, boxes = _texted_instance(tmp_path / "sc.dcm")
    result = _run(tmp_path, source, "faces: none", "keypoints: false",
                  options=("clean-pixel-data",))
    assert result.ok, result.failures
    out = result.outputs[0]
    ds = dcmread(out, stop_before_pixels=True)
    assert ds.BurnedInAnnotation == "NO"
    codes = {item.CodeValue for item in ds.DeidentificationMethodCodeSequence}
    assert "113101" in codes and "113102" not in codes
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["pixels"]["burned_in_annotation_cleaned"] is True
    assert report["text"]["frames"] == len(pictures) == report["text"]["frames_redacted"]
    assert "DOE" not in json.dumps(report["text"])
    with open_frames(out) as reader:
        frames = list(reader)
    assert len(frames) == len(pictures)
    for frame, original, frame_boxes in zip(frames, pictures, boxes, strict=True):
        changed = np.any(frame != original, axis=-1)
        for box in frame_boxes:
            x0, y0, x1, y1 = box
            # every text pixel was replaced by the fill (native syntax: no codec loss)
            assert frame[y0:y1, x0:x1].reshape(-1, 3).std(axis=0).max() < 1.0
        # Nothing changed away from the text (its boxes grown by 12 px).
        near = np.zeros(changed.shape, bool)
        for x0, y0, x1, y1 in frame_boxes:
            near[max(0, y0 - 12):y1 + 12, max(0, x0 - 12):x1 + 12] = True
        assert not changed[~near].any()


def test_clean_pixel_data_without_the_text_stage_is_quarantined(tmp_path: Path) -> None:
    source, _, _ = _texted_instance(tmp_path / "sc.dcm", frames=2)
    result = _run(tmp_path, source, "faces: none", "burned_in_text: off",
                  options=("clean-pixel-data",))
    assert not result.ok and not result.outputs
    assert "clean-pixel-data" in result.failures[0].reason
    assert (tmp_path / "q" / "sc.dcm").is_file()


def test_off_writes_the_header_only_and_claims_nothing(tmp_path: Path) -> None:
    source, _, _ = _texted_instance(tmp_path / "sc.dcm", frames=2)
    # The header says BurnedInAnnotation YES and nothing will remove the text: quarantined by
    # default (issue 16), let out with a warning under burned_in_annotation: warn.
    (tmp_path / "default").mkdir()
    held = _run(tmp_path / "default", source, "faces: none", "burned_in_text: off")
    assert not held.ok and "BurnedInAnnotation" in held.failures[0].reason
    result = _run(tmp_path, source, "faces: none", "burned_in_text: off",
                  "burned_in_annotation: warn")
    assert result.ok, result.failures
    ds = dcmread(result.outputs[0], stop_before_pixels=True)
    assert ds.BurnedInAnnotation == "YES"
    assert "113101" not in {item.CodeValue for item in ds.DeidentificationMethodCodeSequence}


@pytest.mark.parametrize("value,expected", [("redact-phi", "redact-phi"), ("off", "off"),
                                            ("REDACT-ALL", "redact-all")])
def test_profile_key(tmp_path: Path, value: str, expected: str) -> None:
    from dicom_deid.header import load_profile

    assert load_profile(_profile(tmp_path, f"burned_in_text: {value}")).pixels.burned_in_text == expected
    assert load_profile("basic").pixels.burned_in_text == "redact-all"


def test_profile_key_bad_value(tmp_path: Path) -> None:
    from dicom_deid.header import load_profile
    from dicom_deid.header.profile import ProfileError

    with pytest.raises(ProfileError, match="burned_in_text: must be one of"):
        load_profile(_profile(tmp_path, "burned_in_text: blur"))


def test_a_secondary_capture_gets_the_text_stage_only_when_asked(tmp_path: Path) -> None:
    # Video and photographs get it by default; a secondary capture when the profile asks for
    # clean-pixel-data (the first test above).
    source, _, _ = _texted_instance(tmp_path / "sc.dcm", frames=2)
    result = _run(tmp_path, source, "faces: none", "burned_in_annotation: warn")
    assert result.ok, result.failures
    ds = dcmread(result.outputs[0], stop_before_pixels=True)
    assert ds.BurnedInAnnotation == "YES"
    report = json.loads(result.outputs[0].with_suffix(".json").read_text())
    assert "text" not in report and report["pixels"]["burned_in_annotation_cleaned"] is False


def test_video_gets_the_text_stage_by_default(tmp_path: Path) -> None:
    # In the face pass; face method none stays header-only unless clean-pixel-data is asked.
    from tests.video.fixtures import make_video

    source = make_video(tmp_path / "v.dcm", width=96, height=64, frames=6)
    result = _run(tmp_path, source, "faces: blackout", "keypoints: false")
    assert result.ok, result.failures
    out = result.outputs[0]
    ds = dcmread(out, stop_before_pixels=True)
    assert ds.BurnedInAnnotation == "NO"
    assert "113101" in {item.CodeValue for item in ds.DeidentificationMethodCodeSequence}
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["text"]["frames"] == 6 and report["text"]["mode"] == "redact-all"
