"""`dicom-deid transcode` end to end, and audio handling."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import HEVCMP51, MPEG2MPML, MPEG4HP41, ExplicitVRLittleEndian

from dicom_deid.cli import main
from dicom_deid.video import open_frames
from tests.helpers import new_dciodvfy_errors
from tests.video import fixtures
from tests.video.checks import compare_frames, stream_facts, timing
from tests.video.test_roundtrip import transcode

W, H, N = 64, 48, 8


def _outputs(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.dcm"))


def test_transcode_folder_same_syntax(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    video = fixtures.make_video(inputs / "video.dcm", codec="mpeg2", width=W, height=H, frames=N)
    multi = fixtures.make_multiframe(inputs / "sub" / "multi.dcm", frames=N)
    fixtures.make_multiframe(inputs / "single.dcm", frames=1)     # an image, not a video
    (inputs / "notes.txt").write_text("not DICOM")                # found in a folder: skipped
    out = tmp_path / "out"
    report = tmp_path / "report.json"

    code = main(["transcode", str(inputs), "--output", str(out), "--transfer-syntax", "same",
                 "--report", str(report)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "2 transcoded, 2 skipped, 0 failed" in captured.err
    written = _outputs(out)
    assert len(written) == 2
    records = {Path(r["input"]).name: r for r in json.loads(report.read_text())}
    assert records["video.dcm"]["status"] == "written"
    assert records["multi.dcm"]["status"] == "written"
    assert records["single.dcm"]["status"] == "skipped"
    for name, src, syntax in (("video.dcm", video, MPEG2MPML), ("multi.dcm", multi, ExplicitVRLittleEndian)):
        path = Path(records[name]["path"])
        ds = dcmread(path, stop_before_pixels=True)
        assert path.stem == ds.SOPInstanceUID and ds.SOPInstanceUID.startswith("2.25.")
        assert ds.file_meta.TransferSyntaxUID == syntax
        source = dcmread(src, stop_before_pixels=True)
        assert ds.SOPInstanceUID != source.SOPInstanceUID
        # Nothing else changes: same patient, study, series.
        for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "AccessionNumber"):
            assert ds.get(keyword) == source.get(keyword)
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        n_in, n_out, psnr = compare_frames(src, path)
        assert n_in == n_out == N and psnr >= 40.0
        assert timing(path) == timing(src)
        if shutil.which("dciodvfy"):
            assert new_dciodvfy_errors(src, path) == []


def test_transcode_hevc_to_h264(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = fixtures.make_video(tmp_path / "hevc.dcm", codec="hevc", width=W, height=H, frames=N)
    out = tmp_path / "out"
    assert main(["transcode", str(src), "--output", str(out), "--transfer-syntax", "h264"]) == 0
    line = capsys.readouterr().out
    assert "hevc.dcm ->" in line and "H.264" in line
    (path,) = _outputs(out)
    assert dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID == MPEG4HP41
    assert stream_facts(path)["codec"] == "h264"
    n_in, n_out, psnr = compare_frames(src, path)
    assert n_in == n_out == N and psnr >= 40.0


def test_transcode_failure_is_named_and_leaves_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = fixtures.make_video(tmp_path / "good.dcm", codec="h264", width=W, height=H, frames=N)
    data = fixtures.encode_stream(fixtures.pattern_frames(N, W, H), "libx264", "h264")
    bad = fixtures.make_video(tmp_path / "bad.dcm", codec="h264", width=W, height=H, frames=N,
                              stream_bytes=data[: len(data) // 2])
    out = tmp_path / "out"
    code = main(["transcode", str(bad), str(good), "--output", str(out)])
    captured = capsys.readouterr()
    assert code == 1
    assert f"FAILED {bad}:" in captured.err
    assert "1 transcoded, 0 skipped, 1 failed" in captured.err
    # Only the good input's output; no temporary or partial file of the bad one.
    assert [p.name for p in out.iterdir()] == [p.name for p in _outputs(out)]
    assert len(_outputs(out)) == 1


def test_transcode_rejects_unknown_syntax(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = fixtures.make_multiframe(tmp_path / "in.dcm", frames=3)
    assert main(["transcode", str(src), "--output", str(tmp_path / "out"), "--transfer-syntax", "vp9"]) == 2
    assert "unknown transfer syntax 'vp9'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_transcode_explicit_non_dicom_input_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"junk" * 100)
    assert main(["transcode", str(junk), "--output", str(tmp_path / "out")]) == 1
    assert f"FAILED {junk}: not a readable DICOM file" in capsys.readouterr().err


def test_audio_dropped_by_default_and_kept_on_request(tmp_path: Path) -> None:
    src = fixtures.make_video(tmp_path / "talk.dcm", codec="h264", container="mp4", audio=True,
                              width=W, height=H, frames=N)
    with open_frames(src) as reader:
        assert reader.info.has_audio
    dropped = transcode(src, tmp_path / "dropped.dcm")
    assert dropped.audio == "dropped"
    assert stream_facts(tmp_path / "dropped.dcm")["audio_streams"] == 0
    kept = transcode(src, tmp_path / "kept.dcm", keep_audio=True)
    assert kept.audio == "kept"
    assert stream_facts(tmp_path / "kept.dcm")["audio_streams"] == 1
    n_in, n_out, psnr = compare_frames(src, tmp_path / "kept.dcm")
    assert n_in == n_out == N and psnr >= 40.0


def test_audio_dropped_when_changing_codec(tmp_path: Path) -> None:
    src = fixtures.make_video(tmp_path / "talk.dcm", codec="h264", container="mp4", audio=True,
                              width=W, height=H, frames=N)
    report = transcode(src, tmp_path / "hevc.dcm", syntax="hevc")
    assert report.audio == "dropped"
    assert report.transfer_syntax == HEVCMP51
    assert stream_facts(tmp_path / "hevc.dcm")["audio_streams"] == 0


def test_transcode_cli_drops_audio(tmp_path: Path) -> None:
    src = fixtures.make_video(tmp_path / "talk.dcm", codec="h264", container="mp4", audio=True,
                              width=W, height=H, frames=N)
    out = tmp_path / "out"
    assert main(["transcode", str(src), "--output", str(out)]) == 0
    (path,) = _outputs(out)
    assert stream_facts(path)["audio_streams"] == 0
    assert main(["transcode", str(src), "--output", str(tmp_path / "kept"), "--keep-audio"]) == 0
    (kept,) = _outputs(tmp_path / "kept")
    assert stream_facts(kept)["audio_streams"] == 1
