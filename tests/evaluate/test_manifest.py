"""The manifest: columns, roles, relative paths, media kinds, and errors that name the row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dicom_deid.evaluate.manifest import ManifestError, media_kind, open_source, read_manifest


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    import cv2

    img = np.full((40, 50, 3), 128, np.uint8)
    for name in ("a.png", "b.jpg", "c.png"):
        cv2.imwrite(str(tmp_path / name), img)
    return tmp_path


def _write(folder: Path, text: str) -> Path:
    path = folder / "m.csv"
    path.write_text(text)
    return path


def test_reads_rows_relative_to_the_manifest(images: Path):
    path = _write(images, "path,identity,role,deidentified\na.png,p1,gallery,\n"
                          "b.jpg,p1,probe,c.png\n\nc.png,p2,Distractor,\n")
    entries = read_manifest(path)
    assert [(e.name, e.identity, e.role, e.kind) for e in entries] == [
        ("a.png", "p1", "gallery", "image"), ("b.jpg", "p1", "probe", "image"),
        ("c.png", "p2", "distractor", "image")]
    assert entries[1].deidentified == (images / "c.png").resolve()
    assert entries[0].deidentified is None
    src = open_source(entries[0].path)
    frames = list(src.frames)
    assert len(frames) == 1 and frames[0].shape == (40, 50, 3)


@pytest.mark.parametrize(("text", "message"), [
    ("path,identity\na.png,p1\n", "missing column.*role"),
    ("path,identity,role\na.png,p1,suspect\n", "row 2: role 'suspect'"),
    ("path,identity,role\nmissing.png,p1,probe\n", "row 2: missing.png does not exist"),
    ("path,identity,role\na.png,,probe\n", "row 2: empty identity"),
    ("path,identity,role\na.png,p1,probe\na.png,p1,probe\n", "row 3: .*listed twice"),
    ("path,identity,role\n", "no rows"),
    ("path,identity,role,deidentified\na.png,p1,probe,gone.png\n", "deidentified gone.png"),
])
def test_bad_manifests_name_the_file_and_row(images: Path, text: str, message: str):
    path = _write(images, text)
    with pytest.raises(ManifestError, match=message) as info:
        read_manifest(path)
    assert str(path) in str(info.value)


def test_unknown_media_is_refused(tmp_path: Path):
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(ManifestError, match="not an image"):
        media_kind(other)
    path = _write(tmp_path, "path,identity,role\nnotes.txt,p,probe\n")
    with pytest.raises(ManifestError, match="row 2"):
        read_manifest(path)
