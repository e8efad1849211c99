"""read_instance(defer_pixels=True): the header is read once, the Pixel Data value stays in
the file and is checked complete by its extent alone (issue 20: read each input once)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread

from dicom_deid.header import InputError, read_instance
from tests.helpers import REPO
from tests.video import fixtures

PIXEL = 0x7FE00010
SAMPLE = REPO / "tests" / "data" / "sample"


def _deferred(ds) -> bool:
    raw = ds.get_item(PIXEL, keep_deferred=True)
    return raw is not None and getattr(raw, "value", b"") is None


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fixtures.make_video(tmp_path_factory.mktemp("v") / "v.dcm", codec="h264", frames=6)


@pytest.mark.parametrize("kind", ["native", "encapsulated"])
def test_same_dataset_without_reading_the_pixels(kind: str, video: Path) -> None:
    path = SAMPLE / "CT-01-01.dcm" if kind == "native" else video
    full = read_instance(path)
    light = read_instance(path, defer_pixels=True)
    assert _deferred(light), "Pixel Data was read"
    assert list(light.keys()) == list(full.keys())
    assert light.PixelData == full.PixelData          # read from the file on access
    assert light == full


def _outcome(path: Path, **kw) -> str:
    try:
        read_instance(path, **kw)
    except InputError as exc:
        return f"refused: {exc}"
    return "accepted"


@pytest.mark.parametrize("cut", [1, 9, 200])
def test_truncated_pixels_fare_as_in_the_full_read(tmp_path: Path, video: Path,
                                                   cut: int) -> None:
    """Whatever the full read says of a cut file (refused, with its reason, or accepted:
    the video reader refuses a cut item sequence later), the light read says the same."""
    refused = 0
    for source in (SAMPLE / "CT-01-01.dcm", video):
        broken = tmp_path / f"{source.stem}-{cut}.dcm"
        broken.write_bytes(source.read_bytes()[:-cut])
        full = _outcome(broken)
        assert _outcome(broken, defer_pixels=True) == full
        refused += full.startswith("refused")
    assert refused >= 1


def test_trailing_elements_are_read_whole(tmp_path: Path) -> None:
    ds = dcmread(SAMPLE / "CT-01-01.dcm")
    ds.DataSetTrailingPadding = b"\0" * 8     # an element after Pixel Data
    path = tmp_path / "padded.dcm"
    ds.save_as(path, enforce_file_format=True)
    light = read_instance(path, defer_pixels=True)
    assert not _deferred(light)
    assert "DataSetTrailingPadding" in light
