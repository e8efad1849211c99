"""Defaults that keep PHI where it belongs: the quarantine and `faces` on DICOM."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicom_deid.cli import main
from dicom_deid.commands.faces import describe
from dicom_deid.faces.replacer import FacesReport
from tests.helpers import REPO

SAMPLE = REPO / "tests" / "data" / "sample"


def test_quarantine_inside_the_output_is_refused(tmp_path: Path, key_file: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["deidentify", str(SAMPLE), "-o", str(out), "--key-file", str(key_file),
                 "--quarantine", str(out / "q")]) == 2
    assert "must not be inside the output" in capsys.readouterr().err
    assert not (out / "q").exists()


def test_given_quarantine_is_private(tmp_path: Path, key_file: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"\x00" * 10)
    quarantine = tmp_path / "q"
    assert main(["deidentify", str(bad), "-o", str(tmp_path / "out"), "--key-file",
                 str(key_file), "--quarantine", str(quarantine)]) == 1
    assert quarantine.stat().st_mode & 0o777 == 0o700
    assert (quarantine / "bad.dcm.reason.txt").exists()
    assert f"copies and reasons are in {quarantine}" in capsys.readouterr().err


def test_faces_refuses_dicom_without_keep_header(tmp_path: Path, key_file: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    source = SAMPLE / "CT-01-01.dcm"
    assert main(["faces", str(source), "-o", str(tmp_path / "out"), "--method", "blur",
                 "--key-file", str(key_file)]) == 1
    err = capsys.readouterr().err
    assert f"FAILED {source}: DICOM input refused" in err
    assert "dicom-deid deidentify --faces blur" in err and "--keep-header" in err
    assert not list((tmp_path / "out").iterdir())


def test_faces_report_says_leaks_were_caught_and_covered() -> None:
    report = FacesReport("swap", frames=100, faces=90, fallback_frames=3, leaks=29, leak_frames=20)
    text = describe(report)
    assert "29 missed faces caught by the leak check and covered (in 20 frames)" in text
    assert "leaks=" not in text
    assert "no face found by the leak check" in describe(FacesReport("blur", frames=5, faces=5))


def test_faces_keep_header_uid_depends_on_the_method(tmp_path: Path, key_file: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from pydicom import dcmread

    from dicom_deid.header import load_key
    from tests.video import fixtures

    video = fixtures.make_video(tmp_path / "video.dcm", codec="mpeg2", width=64,
                                height=48, frames=4)
    source = dcmread(video, stop_before_pixels=True)
    uids = {}
    for method in ("blur", "pixelate"):
        out = tmp_path / method
        code = main(["faces", str(video), "-o", str(out), "--method", method, "--keep-header",
                     "--key-file", str(key_file)])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        assert "header kept as it was (PHI)" in captured.out
        uids[method] = str(dcmread(out / "video.dcm", stop_before_pixels=True).SOPInstanceUID)
    assert uids["blur"] != uids["pixelate"]
    # Nor the UID `deidentify` gives its own re-encoded copy of this instance.
    assert load_key(key_file).uid("reencoded:" + str(source.SOPInstanceUID)) not in uids.values()


def test_redirected_progress_prints_lines_inside_long_videos(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from dicom_deid.commands import bars
    from dicom_deid.progress import start_frames

    monkeypatch.setattr(bars, "LINE_EVERY", 0.0)
    progress = bars.RunProgress(2, "de-identifying")
    tick = start_frames(10)
    tick()
    tick()
    progress.file_done(Path("a.dcm"), True)
    progress.close()
    err = capsys.readouterr().err
    assert "[1/2]   frame 2/10" in err and "left)" in err
    assert "[1/2] a.dcm: done" in err
    # Outside a run nothing reports frames.
    start_frames(10)()
    assert capsys.readouterr().err == ""


def test_faces_names_a_truncated_dicom_as_truncated(tmp_path: Path, key_file: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    data = (SAMPLE / "CT-01-01.dcm").read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:400])  # cut inside the header, before the Study Instance UID
    assert main(["faces", str(cut), "-o", str(tmp_path / "out"), "--method", "blur",
                 "--keep-header", "--key-file", str(key_file)]) == 1
    err = capsys.readouterr().err
    assert f"FAILED {cut}: " in err and "truncated" in err
    assert "StudyInstanceUID or SOPInstanceUID missing" not in err


def test_transcode_reports_frames_when_redirected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from dicom_deid.commands import bars
    from tests.video import fixtures

    monkeypatch.setattr(bars, "LINE_EVERY", 0.0)
    video = fixtures.make_video(tmp_path / "video.dcm", codec="mpeg2", width=64, height=48,
                                frames=6)
    assert main(["transcode", str(video), "-o", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "[1/1]   frame 6/6" in err
