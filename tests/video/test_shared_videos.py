"""`dicom-deid transcode --transfer-syntax same` over the shared DICOM videos (../shared/data).

The check the issue names: identical frame count and timing, luma PSNR of at least 40 dB,
and no dciodvfy error that the input did not already have. Skipped with the reason when the
shared data is absent.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pydicom import dcmread

from dicom_deid.cli import main
from tests.helpers import new_dciodvfy_errors, shared_data, shared_dir
from tests.video.checks import compare_frames, stream_facts, timing

_FOLDER = ("dicom", "video")
_FOUND = sorted(p.name for p in shared_dir().joinpath("data", *_FOLDER).glob("*.dcm"))
# Re-encoding 75 frames of 720x576 HEVC takes about 5 s on 2 cores; the others 0.3 to 3.5 s.
_SLOW = ("hevc",)


def _param(name: str):
    marks = (pytest.mark.slow,) if any(word in name for word in _SLOW) else ()
    return pytest.param(name, marks=marks, id=name.removesuffix(".dcm"))


@pytest.mark.parametrize("name", [_param(n) for n in _FOUND] or [pytest.param(None, id="absent")])
def test_shared_video_same_syntax(name: str | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = shared_data(*_FOLDER)
    if name is None:
        pytest.skip(f"no DICOM videos in {folder}")
    src = folder / name
    out = tmp_path / "out"
    code = main(["transcode", str(src), "--output", str(out), "--transfer-syntax", "same"])
    assert code == 0, capsys.readouterr().err
    (written,) = sorted(out.glob("*.dcm"))
    source = dcmread(src, stop_before_pixels=True)
    ds = dcmread(written, stop_before_pixels=True)
    assert ds.file_meta.TransferSyntaxUID == source.file_meta.TransferSyntaxUID
    n_in, n_out, psnr = compare_frames(src, written)
    assert n_in == n_out == int(source.get("NumberOfFrames", 1))
    assert timing(written) == timing(src)
    assert psnr >= 40.0, f"luma PSNR {psnr:.2f} dB"
    if "mp4" in name or "h264" in name or "hevc" in name or "mpeg2" in name:
        assert stream_facts(written)["audio_streams"] == 0
    if shutil.which("dciodvfy"):
        assert new_dciodvfy_errors(src, written) == []
