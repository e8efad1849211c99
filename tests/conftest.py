from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture()
def key_file(tmp_path: Path) -> Path:
    """A site key file with safe permissions."""
    path = tmp_path / "site.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("0123456789abcdef" * 4 + "\n")
    return path


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Keep every test away from the user's real state folder (default key, journal)."""
    monkeypatch.setenv("DICOM_DEID_STATE", str(tmp_path_factory.mktemp("state")))
