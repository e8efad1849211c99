"""Operator errors give one clear line and an exit status, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dicom_deid.cli import main
from tests.helpers import REPO

SAMPLE = REPO / "tests" / "data" / "sample"


def _cli(*args: str, env: dict[str, str] | None = None, stdout=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dicom_deid.cli", *args], cwd=REPO,
                          stdout=stdout if stdout is not None else subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_output_that_is_a_file(tmp_path: Path, key_file: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "out"
    target.write_text("a file")
    for command in (["deidentify", str(SAMPLE), "--key-file", str(key_file)],
                    ["transcode", str(SAMPLE)],
                    ["faces", str(SAMPLE), "--key-file", str(key_file)]):
        assert main([*command, "-o", str(target)]) == 2
        err = capsys.readouterr().err
        assert f"output {target} exists and is not a folder" in err, command


def test_output_under_a_file(tmp_path: Path, key_file: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "plain").write_text("a file")
    target = tmp_path / "plain" / "out"
    assert main(["deidentify", str(SAMPLE), "-o", str(target), "--key-file", str(key_file)]) == 2
    assert "a part of its path is a file" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder")
def test_unwritable_output(tmp_path: Path, key_file: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert main(["deidentify", str(SAMPLE), "-o", str(locked / "out"), "--key-file",
                 str(key_file)]) == 2
    assert "cannot create output folder" in capsys.readouterr().err


def _closed_pipe() -> int:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first write, as after `| head` quits
    return write


@pytest.mark.parametrize("command", [["profiles", "show", "basic"], ["status"]])
def test_broken_pipe_is_quiet(command: list[str], tmp_path: Path) -> None:
    state = tmp_path / "state"
    if command == ["status"]:
        from dicom_deid.node.journal import Journal

        state.mkdir()
        Journal(state / "journal.sqlite").close()
    write = _closed_pipe()
    try:
        result = _cli(*command, env={"DICOM_DEID_STATE": str(state)}, stdout=write)
    finally:
        os.close(write)
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr
    assert result.stderr == ""
    assert result.returncode == 141


def test_log_file_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("a file")
    config = tmp_path / "node.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\nlog:\n  file: {tmp_path}/plain/node.log\n")
    result = _cli("serve", "--config", str(config))
    # serve names the log.file key (node hardening branch); without that, the CLI's last
    # resort still names the path and the problem, and never shows a traceback.
    assert result.returncode in (1, 2)
    assert "Traceback" not in result.stderr
    assert f"{tmp_path}/plain" in result.stderr


def test_truncated_dicom_is_reported_as_truncated(tmp_path: Path, key_file: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    data = (SAMPLE / "CT-01-01.dcm").read_bytes()
    cut = tmp_path / "in" / "cut.dcm"
    cut.parent.mkdir()
    cut.write_bytes(data[: len(data) // 2])
    assert main(["deidentify", str(cut), "-o", str(tmp_path / "out"), "--key-file",
                 str(key_file)]) == 1
    err = capsys.readouterr().err
    assert f"FAILED {cut}: truncated" in err


def test_missing_input_names_it_without_a_quarantine(tmp_path: Path, key_file: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere.dcm"
    assert main(["deidentify", str(missing), "-o", str(tmp_path / "out"), "--key-file",
                 str(key_file)]) == 1
    err = capsys.readouterr().err
    assert f"FAILED {missing}: no such file or folder" in err
    assert "quarantine" not in err


def test_non_dicom_in_a_folder_is_skipped_and_listed_by_every_command(
        tmp_path: Path, key_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "CT-01-01.dcm").write_bytes((SAMPLE / "CT-01-01.dcm").read_bytes())
    notes = folder / "notes.txt"
    notes.write_text("not DICOM")
    line = f"skipped {notes}: not a DICOM file"
    assert main(["deidentify", str(folder), "-o", str(tmp_path / "d"), "--key-file",
                 str(key_file)]) == 0
    captured = capsys.readouterr()
    assert line in captured.err and "1 file(s) skipped" in captured.out
    assert main(["transcode", str(folder), "-o", str(tmp_path / "t")]) == 0
    assert line in capsys.readouterr().err
    # faces takes images and videos too: a text file is still skipped, and said so.
    code = main(["faces", str(folder), "-o", str(tmp_path / "f"), "--method", "blur",
                 "--keep-header"])
    err = capsys.readouterr().err
    assert f"skipped {notes}: not an image, a video or DICOM" in err
    assert code == 0, err
    assert (tmp_path / "f" / "CT-01-01.dcm").is_file()


def test_explicit_non_dicom_fails(tmp_path: Path, key_file: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not DICOM")
    assert main(["deidentify", str(notes), "-o", str(tmp_path / "out"), "--key-file",
                 str(key_file)]) == 1
    assert f"FAILED {notes}: not DICOM" in capsys.readouterr().err


def test_library_info_lines_are_off_without_verbose(tmp_path: Path, key_file: Path) -> None:
    result = _cli("deidentify", str(SAMPLE), "-o", str(tmp_path / "out"), "--key-file",
                  str(key_file))
    assert result.returncode == 0, result.stderr
    assert " INFO " not in result.stderr
    # Redirected stderr: one line per file, so that a log shows the run advancing.
    assert result.stderr.count("] CT-") == 4 and "[5/5]" in result.stderr


def test_native_library_lines_are_dropped_unless_verbose(tmp_path: Path) -> None:
    image = tmp_path / "face.png"
    import cv2
    import numpy as np

    cv2.imwrite(str(image), np.full((64, 64, 3), 128, np.uint8))
    quiet = _cli("faces", str(image), "-o", str(tmp_path / "q"), "--method", "blur")
    assert quiet.returncode == 0, quiet.stderr
    assert "XNNPACK" not in quiet.stderr and "absl::InitializeLog" not in quiet.stderr
    assert not any(line[:5] in ("I0000", "W0000") for line in quiet.stderr.splitlines())
    # With -v they are shown: the filter, not chance, removed them above.
    loud = _cli("-v", "faces", str(image), "-o", str(tmp_path / "v"), "--method", "blur")
    assert loud.returncode == 0, loud.stderr
    assert "XNNPACK" in loud.stderr or "W0000" in loud.stderr or "I0000" in loud.stderr


def test_noise_pattern_keeps_errors() -> None:
    from dicom_deid.stderr_filter import is_noise

    assert is_noise(b"W0000 00:00:1796595539.485334   18656 inference_feedback_manager.cc:114]"
                    b" Feedback manager requires a model")
    assert is_noise(b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.")
    assert not is_noise(b"E0000 00:00:1796595539.485334   18656 calculator_graph.cc:887] failed")
    assert not is_noise(b"FAILED in.dcm: truncated")


def test_repeated_messages_are_limited_and_summed_up(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from dicom_deid.cli import RepeatLimiter, setup_cli_logging

    setup_cli_logging(verbose=False)
    log = logging.getLogger("dicom_deid.faces.replacer")
    for frame in range(10):
        log.warning("frame %d: %d face(s) found outside the replaced regions, covered", frame, 1)
    from dicom_deid import cli

    cli._limiter.report()
    err = capsys.readouterr().err
    assert err.count("found outside the replaced regions") == RepeatLimiter.LIMIT + 1
    assert f"{10 - RepeatLimiter.LIMIT} more message(s) like" in err
    setup_cli_logging(verbose=True)
    for frame in range(5):
        log.warning("frame %d: covered", frame)
    assert capsys.readouterr().err.count("covered") == 5


def test_every_command_masks_phi_in_log_lines(monkeypatch, capsys) -> None:
    # The command's body is replaced by one that logs header values through the package
    # logger, as a careless message would; cli.main's filter is what is under test.
    import logging

    from dicom_deid import cli
    from dicom_deid.commands import profiles

    def careless(args) -> int:
        log = logging.getLogger("dicom_deid.commands.profiles")
        log.warning("could not read %s for study %s", "DOE^JOHN",
                    "1.2.826.0.1.3680043.8.498.12345")
        log.warning("patient %s", "Zyxwv^Quin^^Dr")
        return 0

    monkeypatch.setattr(profiles, "run_list", careless)
    assert cli.main(["profiles", "list"]) == 0
    err = capsys.readouterr().err
    assert "could not read <name> for study <uid>" in err
    for value in ("DOE", "JOHN", "Zyxwv", "Quin", "1.2.826.0.1.3680043"):
        assert value not in err
