"""Donors of plain files come from their content, never from their file name (issue 15 item 5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dicom_deid.faces import FaceReplacer
from dicom_deid.faces.files import image_identity, process_image, video_identity
from dicom_deid.faces.media import MediaError, write_image


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)


def _identities(paths: list[Path], tmp_path: Path) -> list[str]:
    seen: list[str] = []

    def make(fps: float, donor_identity: str) -> FaceReplacer:
        seen.append(donor_identity)
        return FaceReplacer("blur", fps=fps)

    for i, src in enumerate(paths):
        process_image(src, tmp_path / f"out{i}.png", make)
    return seen


def test_same_name_different_people_get_different_donors(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"
    write_image(first, _image(1))
    write_image(second, _image(2))
    ids = _identities([first, second], tmp_path)
    assert ids[0] != ids[1]
    assert "x.png" not in ids[0]


def test_same_content_under_another_name_gets_the_same_donor(tmp_path):
    write_image(tmp_path / "one.png", _image(3))
    write_image(tmp_path / "two.png", _image(3))
    ids = _identities([tmp_path / "one.png", tmp_path / "two.png"], tmp_path)
    assert ids[0] == ids[1] == image_identity(_image(3))
    # The size is part of the digest: the same bytes in another shape are other content.
    assert image_identity(_image(3).reshape(64, 48, 3)) != ids[0]


def test_video_identity_is_the_files_content(tmp_path):
    a, b, c = tmp_path / "a.mp4", tmp_path / "b.mp4", tmp_path / "c.mp4"
    a.write_bytes(b"\x00" * 3_000_000 + b"1")
    b.write_bytes(b"\x00" * 3_000_000 + b"1")
    c.write_bytes(b"\x00" * 3_000_000 + b"2")
    assert video_identity(a) == video_identity(b) != video_identity(c)
    with pytest.raises(MediaError, match="missing.mp4"):
        video_identity(tmp_path / "missing.mp4")
