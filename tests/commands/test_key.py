"""`dicom-deid key init|show|export` and the key the CLI and the node share."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from dicom_deid.cli import main
from dicom_deid.config import parse_config
from dicom_deid.header.keys import default_key_path, load_key


def test_init_creates_private_key_and_says_where(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["key", "init"]) == 0
    out = capsys.readouterr().out
    path = default_key_path()
    assert str(path) in out
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key(path).fingerprint() in out


def test_init_never_overwrites(key_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = key_file.read_bytes()
    assert main(["key", "init", "--key-file", str(key_file)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert key_file.read_bytes() == before


def test_show_prints_location_and_fingerprint_never_the_secret(
        key_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["key", "show", "--key-file", str(key_file)]) == 0
    out = capsys.readouterr().out
    secret = key_file.read_text().strip()
    assert secret not in out and secret[:16] not in out
    assert str(key_file.resolve()) in out
    assert load_key(key_file).fingerprint() in out


def test_fingerprint_tells_keys_apart(key_file: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.key"
    assert main(["key", "init", "--key-file", str(other)]) == 0
    assert load_key(other).fingerprint() != load_key(key_file).fingerprint()


def test_missing_key_says_how_to_create_one(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "none.key"
    assert main(["key", "show", "--key-file", str(missing)]) == 1
    err = capsys.readouterr().err
    assert f"dicom-deid key init --key-file {missing}" in err
    assert "Traceback" not in err


def test_export_writes_a_private_copy_with_a_warning(
        key_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    backup = tmp_path / "backup.key"
    assert main(["key", "export", "--key-file", str(key_file), str(backup)]) == 0
    captured = capsys.readouterr()
    assert "WARNING" in captured.err and "site secret" in captured.err
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert load_key(backup).secret == load_key(key_file).secret
    # A second export must not overwrite the first backup.
    assert main(["key", "export", "--key-file", str(key_file), str(backup)]) == 1


def test_key_env_is_shared_by_cli_and_node(key_file: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DICOM_DEID_KEY", str(key_file))
    assert default_key_path() == key_file
    assert parse_config({"state_dir": str(tmp_path / "st")}).key_file == key_file
    # An explicit key_file in the config still wins.
    explicit = tmp_path / "node.key"
    assert parse_config({"key_file": str(explicit)}).key_file == explicit


def test_default_node_key_is_the_cli_default() -> None:
    assert parse_config(None).key_file == default_key_path()


def test_show_with_node_config(key_file: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "node.yaml"
    config.write_text(f"key_file: {key_file}\nstate_dir: {tmp_path / 'st'}\n")
    assert main(["key", "show", "--config", str(config)]) == 0
    assert load_key(key_file).fingerprint() in capsys.readouterr().out


def test_first_use_key_creation_is_announced(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        load_key()
    assert str(default_key_path()) in caplog.text and "back it up" in caplog.text


def test_node_announces_a_new_key_and_a_cli_key_that_differs(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    from dicom_deid.node.service import ensure_node_key

    load_key()  # the CLI's default key, created first
    node_key = tmp_path / "node" / "site.key"
    with caplog.at_level("INFO"):
        key = ensure_node_key(node_key)
    assert f"created a new site key at {node_key}" in caplog.text
    assert key.fingerprint() in caplog.text
    assert "the CLI's default key is another key" in caplog.text
    caplog.clear()
    # Pointing the CLI at the node's key (DICOM_DEID_KEY) silences the warning.
    monkeypatch.setenv("DICOM_DEID_KEY", str(node_key))
    with caplog.at_level("INFO"):
        ensure_node_key(node_key)
    assert "another key" not in caplog.text and "created" not in caplog.text
