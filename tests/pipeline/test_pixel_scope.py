"""Where pixels may change: the face stage's scope, and pixels kept bit for bit where no face
was replaced (issue 16, defect 1)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from dicom_deid.header import ProfileError, load_key, load_profile, may_show_face
from dicom_deid.pipeline import StudyOptions, process_study
from tests.faces import synth
from tests.helpers import new_dciodvfy_errors
from tests.video.fixtures import VIDEO_PHOTOGRAPHIC, base_header

SC = "1.2.840.10008.5.1.4.1.1.7"
CT = "1.2.840.10008.5.1.4.1.1.2"


def _image(path: Path, pixels: np.ndarray, sop_class: str = SC, modality: str = "OT",
           signed: bool = False) -> Path:
    """A single-frame native image (no NumberOfFrames, as the SC IOD has none)."""
    rows, columns = pixels.shape[:2]
    ds = base_header(sop_class, rows, columns, 1)
    for keyword in ("NumberOfFrames", "FrameTime", "FrameIncrementPointer"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.Modality = modality
    colour = pixels.ndim == 3
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = "RGB" if colour else "MONOCHROME2"
    if colour:
        ds.PlanarConfiguration = 0
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OB" if bits == 8 else "OW"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)
    return path


def _header(sop_class: str, modality: str, samples: int, bits: int):
    ds = base_header(sop_class, 8, 8, 1)
    ds.Modality = modality
    ds.SamplesPerPixel, ds.BitsAllocated = samples, bits
    ds.PixelData = b"\0" * (8 * 8 * samples * bits // 8)
    return ds


@pytest.mark.parametrize(("sop_class", "modality", "samples", "bits", "camera", "capture"), [
    (SC, "OT", 1, 16, False, True),     # a 16-bit grey screenshot or converted scan
    (SC, "NM", 1, 16, False, True),
    (SC, "OT", 3, 8, True, True),       # 8-bit colour: may be a photograph
    (SC, "XC", 1, 8, True, True),       # the Modality names a camera
    (SC, "ES", 1, 16, True, True),
    (CT, "CT", 1, 16, False, False),
    (CT, "OT", 3, 8, True, True),
    (VIDEO_PHOTOGRAPHIC, "XC", 3, 8, True, True),
    ("1.2.840.10008.5.1.4.1.1.77.1.2", "GM", 3, 8, True, True),   # VL microscopic
])
def test_face_scope(sop_class, modality, samples, bits, camera, capture) -> None:
    ds = _header(sop_class, modality, samples, bits)
    assert may_show_face(ds) is camera
    assert may_show_face(ds, "camera") is camera
    assert may_show_face(ds, "secondary-capture") is capture
    assert may_show_face(ds, "none") is False


def test_face_scope_is_a_profile_setting(tmp_path: Path) -> None:
    assert load_profile("basic").face_scope == "camera"
    good = tmp_path / "wide.yaml"
    good.write_text("profile: wide\nbase: basic\nface_scope: secondary-capture\n")
    assert load_profile(good).face_scope == "secondary-capture"
    bad = tmp_path / "bad.yaml"
    bad.write_text("profile: bad\nbase: basic\nface_scope: everything\n")
    with pytest.raises(ProfileError, match="face_scope"):
        load_profile(bad)


def _run(path: Path, tmp_path: Path, key_file: Path, **kw):
    result = process_study([path], tmp_path / "out", StudyOptions("basic", **kw),
                           load_key(key_file), tmp_path / "q")
    assert result.ok, result.failures
    return result


def test_16_bit_signed_secondary_capture_is_not_touched(tmp_path: Path, key_file: Path) -> None:
    """pydicom's JPEG2000.dcm case: an NM whole-body image stored as SC came out 8-bit."""
    ramp = (np.arange(64 * 64, dtype=np.int16).reshape(64, 64) - 2000) * 7
    source = _image(tmp_path / "nm.dcm", ramp, modality="NM", signed=True)
    result = _run(source, tmp_path, key_file)
    assert len(result.outputs) == 1
    out = dcmread(result.outputs[0])
    assert out.PixelData == dcmread(source).PixelData
    assert (out.BitsAllocated, out.PixelRepresentation) == (16, 1)
    assert "NumberOfFrames" not in out
    report = json.loads(result.reports[0].read_text())
    assert report["pixels"]["may_show_face"] is False
    assert report["pixels"]["faces_cleaned"] is False
    assert "faces" not in report


@pytest.mark.slow
def test_colour_image_without_a_face_keeps_its_pixels(tmp_path: Path, key_file: Path) -> None:
    """In scope (8-bit colour SC), the face method runs, finds no face: no re-encode."""
    y, x = np.mgrid[0:96, 0:128]
    rgb = np.stack([x * 2, y * 2, (x + y)], axis=-1).astype(np.uint8)
    source = _image(tmp_path / "chart.dcm", rgb)
    result = _run(source, tmp_path, key_file, faces="blur")
    out_path = next(p for p in result.outputs if p.stem == load_key(key_file).uid(
        str(dcmread(source).SOPInstanceUID)))
    out = dcmread(out_path)
    assert out.PixelData == dcmread(source).PixelData
    assert out.PhotometricInterpretation == "RGB"
    assert "NumberOfFrames" not in out and "FrameTime" not in out
    assert "LossyImageCompression" not in out
    assert any("no face found" in v for v in out.DeidentificationMethod)
    report = json.loads(out_path.with_suffix(".json").read_text())
    assert report["pixels"]["may_show_face"] is True
    assert report["pixels"]["pixels_modified"] is False
    assert report["faces"]["faces"] == 0 and report["frames_changed"] == 0
    assert new_dciodvfy_errors(source, out_path) == []


@pytest.mark.slow
def test_face_in_a_single_frame_image_adds_no_multiframe_attributes(
        tmp_path: Path, key_file: Path) -> None:
    picture, _ = synth.scaled(synth.astronaut(), synth.astronaut_landmarks(), 0.5)
    source = _image(tmp_path / "photo.dcm", np.ascontiguousarray(picture), modality="XC")
    result = _run(source, tmp_path, key_file, faces="blur")
    out_path = result.outputs[0]
    out = dcmread(out_path)
    assert out.PixelData != dcmread(source).PixelData, "the face was replaced"
    assert "NumberOfFrames" not in out and "FrameTime" not in out
    assert (out.BitsStored, out.SamplesPerPixel) == (8, 3)
    report = json.loads(out_path.with_suffix(".json").read_text())
    assert report["pixels"]["pixels_modified"] is True and report["faces"]["faces"] > 0
    # Native RGB in, native RGB out: nothing else changed, and nothing is claimed.
    assert "changed" not in report["video"]
    assert out.PhotometricInterpretation == "RGB" and "LossyImageCompression" not in out
    assert new_dciodvfy_errors(source, out_path) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", [
    "JPEG2000.dcm",            # 16-bit signed NM stored as SC: came out 8-bit, all 127/128
    "JPGExtended.dcm",         # 12-bit JPEG extended: came out 8-bit JPEG-LS, "lossless"
    "SC_rgb_rle_16bit.dcm",    # 16-bit RGB RLE: came out 8-bit, still "RLE Lossless"
    "SC_rgb_rle_32bit.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",   # 8-bit colour JPEG baseline: in scope, no face, no re-encode
])
def test_pydicom_files_the_face_stage_damaged_keep_their_pixels(
        name: str, tmp_path: Path, key_file: Path) -> None:
    import pydicom.data

    source = Path(pydicom.data.__file__).parent / "test_files" / name
    if not source.is_file():
        pytest.skip(f"pydicom's test file {name} is not installed")
    result = _run(source, tmp_path, key_file)
    original = dcmread(source)
    out_path = next(p for p in result.outputs
                    if p.stem == load_key(key_file).uid(str(original.SOPInstanceUID)))
    out = dcmread(out_path)
    assert out.PixelData == original.PixelData
    for keyword in ("BitsAllocated", "BitsStored", "PhotometricInterpretation",
                    "PixelRepresentation", "SmallestImagePixelValue", "LargestImagePixelValue",
                    "NumberOfFrames", "LossyImageCompression"):
        assert out.get(keyword) == original.get(keyword), keyword
    assert out.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert "FrameTime" not in out or "FrameTime" in original
