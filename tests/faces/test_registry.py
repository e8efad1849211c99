"""A face method registered in one place (dicom_deid/face_methods.py) is known to the node
config, the profiles, the CLI choices, the evaluation and the replacer."""

from __future__ import annotations

import numpy as np
import pytest

from dicom_deid import face_methods
from dicom_deid.cli import build_parser
from dicom_deid.config import ConfigError, parse_config
from dicom_deid.evaluate.run import methods as evaluate_methods
from dicom_deid.faces import FaceReplacer, MethodUnavailableError
from dicom_deid.faces.region import covered_region
from dicom_deid.header.profile import ProfileError, load_profile
from tests.faces import synth


class InvertRenderer:
    """A test method's renderer: inverts the face hull; records each call's track."""

    def __init__(self, donor_seed: int) -> None:
        self.donor_seed = donor_seed
        self.tracks: list[int] = []

    def render(self, rgb, landmarks, *, track_id=0, inplace=False):
        self.tracks.append(track_id)
        out = rgb if inplace else rgb.copy()
        hull = covered_region(landmarks, rgb.shape) > 0
        out[hull] = 255 - out[hull]
        return out


@pytest.fixture
def invert():
    built: list[InvertRenderer] = []

    def factory(*, donor_seed: int, shape: float) -> InvertRenderer:
        built.append(InvertRenderer(donor_seed))
        return built[-1]

    face_methods.register(face_methods.FaceMethod("invert", factory, keyed=True))
    try:
        yield built
    finally:
        face_methods.unregister("invert")


def _choices(parser, command: str, option: str) -> tuple[str, ...]:
    sub = next(a for a in parser._actions if a.dest == "command")
    action = next(a for a in sub.choices[command]._actions if option in a.option_strings)
    return tuple(action.choices)


def test_a_registered_method_is_accepted_everywhere(invert, tmp_path):
    assert "invert" in face_methods.names() and "invert" in face_methods.keyed()
    config = parse_config({"default_rule": {"faces": "invert"}})
    assert config.default_rule is not None and config.default_rule.faces == "invert"
    profile_file = tmp_path / "p.yaml"
    profile_file.write_text("profile: p\nbase: basic\nfaces: invert\n")
    assert load_profile(profile_file).pixels.faces == "invert"
    parser = build_parser()
    assert "invert" in _choices(parser, "faces", "--method")
    assert "invert" in _choices(parser, "deidentify", "--faces")
    assert "invert" in evaluate_methods()

    frames, _ = synth.sequence(2, "still")
    with FaceReplacer("invert", donor_seed=7, fps=25.0, leak_check=False) as rep:
        for rgb in frames:
            out = rep.process(rgb)
            assert rep.last.faces and not rep.last.fallback
            assert not np.array_equal(out, rgb)
    assert built_once(invert).donor_seed == 7
    assert invert[0].tracks and all(t >= 1 for t in invert[0].tracks)


def built_once(built: list[InvertRenderer]) -> InvertRenderer:
    assert len(built) == 1
    return built[0]


def test_an_unregistered_method_is_rejected_everywhere(tmp_path):
    assert "invert" not in face_methods.names()
    with pytest.raises(ConfigError, match="default_rule.faces"):
        parse_config({"default_rule": {"faces": "invert"}})
    profile_file = tmp_path / "p.yaml"
    profile_file.write_text("profile: p\nbase: basic\nfaces: invert\n")
    with pytest.raises(ProfileError, match="faces"):
        load_profile(profile_file)
    assert "invert" not in _choices(build_parser(), "faces", "--method")
    with pytest.raises(ValueError, match="unknown face method"):
        FaceReplacer("invert")


def test_a_method_whose_renderer_cannot_be_built_is_unavailable_by_name():
    def factory(*, donor_seed: int, shape: float):
        raise FileNotFoundError("models/absent.onnx")

    face_methods.register(face_methods.FaceMethod("absent", factory))
    try:
        with pytest.raises(MethodUnavailableError, match="'absent'.*absent.onnx"):
            FaceReplacer("absent")
    finally:
        face_methods.unregister("absent")


def test_reserved_and_taken_names_cannot_be_registered():
    for name in ("none", "swap", ""):
        with pytest.raises(ValueError, match="taken or reserved"):
            face_methods.register(face_methods.FaceMethod(name))
