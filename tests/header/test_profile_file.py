"""Profile files: every problem of a file at once, with its key; pixel settings parsed into
the profile's PixelPolicy (`profile.pixels`), header rules in the Profile."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicom_deid.header.profile import ProfileError, load_profile
from dicom_deid.policy import PixelPolicy


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


def test_every_problem_is_reported_at_once_with_its_key(tmp_path):
    path = _write(tmp_path, "profile: bad\nbase: basic\nfaces: smudge\nface_shape: 2\n"
                            "keypoint_frame_step: 0\npseudonym: true\n"
                            "date_shift_days: [-3, 3]\noverrides:\n  NoSuchKeyword: keep\n"
                            "  StudyDescription: shred\n")
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    problems = info.value.problems
    assert str(path) in str(info.value) and f"{len(problems)} problems" in str(info.value)
    joined = "\n".join(problems)
    assert "faces: must be one of swap, mask3d, blur, pixelate, blackout, none, not 'smudge'" \
        in problems
    assert "face_shape: must be within 0..1, not 2.0" in problems
    assert "keypoint_frame_step: must be a whole number >= 1, not 0" in problems
    assert "pseudonym: unknown key (did you mean 'pseudonyms'?)" in problems
    assert "date_shift_days: [-3, 3] includes 0, which would keep real dates" in problems
    assert "overrides.NoSuchKeyword: 'NoSuchKeyword' is neither a keyword nor a tag" \
        in joined
    assert "overrides.StudyDescription: 'shred' is not one of" in joined
    assert len(problems) == 7


def test_one_problem_reads_as_one_line(tmp_path):
    with pytest.raises(ProfileError) as info:
        load_profile(_write(tmp_path, "profile: bad\nface_scope: everything\n"))
    assert str(info.value) == (f"{tmp_path / 'p.yaml'}: face_scope: must be one of camera, "
                               "secondary-capture, none, not 'everything'")


def test_pixel_settings_live_in_the_pixel_policy_and_inherit_from_the_base(tmp_path):
    basic = load_profile("basic")
    assert isinstance(basic.pixels, PixelPolicy) and basic.pixels.faces == "swap"
    for moved in ("faces", "face_shape", "keypoints", "keypoint_frame_step", "burned_in_text"):
        assert not hasattr(basic, moved), moved
    derived = load_profile(_write(tmp_path, "profile: p\nbase: basic\nkeypoints: false\n"
                                            "burned_in_text: off\n"))
    assert derived.pixels.faces == basic.pixels.faces            # inherited
    assert derived.pixels.face_shape == basic.pixels.face_shape
    assert derived.pixels.keypoints is False and derived.pixels.burned_in_text == "off"
    assert derived.pixels.shape_for("swap") == basic.pixels.face_shape
    assert derived.pixels.shape_for("mask3d") == 0.0
    assert derived.face_scope == basic.face_scope                # header side stays
