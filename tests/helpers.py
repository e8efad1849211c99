"""Helpers shared by the tests: locating ../shared, running the reference validators."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    """../shared beside the repository, or $DICOM_DEID_SHARED."""
    return Path(os.environ.get("DICOM_DEID_SHARED", REPO.parent / "shared"))


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data; skips the test with the reason when it is absent."""
    path = shared_dir().joinpath("data", *parts)
    if not path.exists():
        pytest.skip(f"test data {path} is absent (../shared/data is not beside the repository)")
    return path


def require_tool(name: str) -> str:
    """Path of an external tool; skips with the reason when it is not installed."""
    found = shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed (bash .ci/run installs it)")
    return found


_DCIODVFY_ERROR = re.compile(r"^(?:\S+\s+)?Error\b|^\S.*- Error -", re.MULTILINE)


def dciodvfy_errors(path: Path) -> list[str]:
    """The Error lines dciodvfy prints for one file (warnings are ignored)."""
    exe = require_tool("dciodvfy")
    proc = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120)
    lines = (proc.stdout + proc.stderr).splitlines()
    return [line.strip() for line in lines if "Error" in line]


def new_dciodvfy_errors(original: Path, written: Path) -> list[str]:
    """Errors dciodvfy reports on written that it did not report on original.

    Tag positions are kept in the comparison so that a moved error still counts as new;
    the instance UIDs that appear in some messages are masked first.
    """
    def normalise(errors: list[str]) -> set[str]:
        masked = (re.sub(r"\b[0-9]+(\.[0-9]+){2,}\b", "<uid>", e) for e in errors)
        # A message that ends in a UID value names the instance, not the problem.
        return {re.sub(r"(UID\s+)\S+$", r"\1<uid>", e) for e in masked}

    return sorted(normalise(dciodvfy_errors(written)) - normalise(dciodvfy_errors(original)))
