"""End to end on skimage's astronaut (a real public-domain face): the CLI writes metrics.json
with the required keys and the known answers hold on real models (dlib, MediaPipe, CenterFace).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("dlib")
pytest.importorskip("face_recognition_models")

from dicom_deid.cli import main  # noqa: E402
from dicom_deid.evaluate.aggregate import REQUIRED_KEYS  # noqa: E402


def _astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()[:300, 60:360]      # the face and shoulders, 300 x 300


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    import cv2

    folder = tmp_path_factory.mktemp("eval")
    face = _astronaut()
    bgr = cv2.cvtColor(face, cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(folder / "gallery.png"), bgr)
    # Another "capture": shifted and slightly brighter, so it is not the same file.
    shifted = np.roll(face, (6, -8), axis=(0, 1))
    shifted = np.clip(shifted.astype(np.int16) + 10, 0, 255).astype(np.uint8)
    cv2.imwrite(str(folder / "probe.png"), cv2.cvtColor(shifted, cv2.COLOR_RGB2BGR))
    # A distractor identity with no face at all and one with a face-free texture.
    cv2.imwrite(str(folder / "noface.png"), np.full((120, 120, 3), 90, np.uint8))
    # A still video: the same frame six times, losslessly (FFV1), so the frames stay identical.
    import av

    with av.open(str(folder / "still.mkv"), mode="w") as container:
        stream = container.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = 300, 300, "yuv444p"
        for _ in range(6):
            for packet in stream.encode(av.VideoFrame.from_ndarray(face, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    (folder / "m.csv").write_text(
        "path,identity,role\ngallery.png,astronaut,gallery\nprobe.png,astronaut,probe\n"
        "noface.png,nobody,distractor\nstill.mkv,astronaut,probe\n")
    out = folder / "out"
    code = main(["evaluate", "--manifest", str(folder / "m.csv"), "--methods",
                 "original,blackout,swap", "--output", str(out), "--descriptor-step", "1",
                 "--crops", "1", "--keys", "2"])
    assert code == 0
    return out, json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_cli_writes_metrics_with_required_keys(run):
    out, metrics = run
    assert set(metrics) == {"original", "blackout", "swap"}
    for method, values in metrics.items():
        missing = [k for k in REQUIRED_KEYS if k not in values]
        assert not missing, f"{method} lacks {missing}"
    assert (out / "report.html").read_text().count("data:image/png;base64,") >= 2
    assert "CC BY 4.0" in (out / "report.html").read_text()
    assert "embeds original faces" in (out / "report.html").read_text()


@pytest.mark.slow
def test_keys_expression_and_appearance_are_reported(run):
    _, metrics = run
    swap, black, orig = metrics["swap"], metrics["blackout"], metrics["original"]
    # swap runs under each key, the unkeyed methods once.
    assert swap["keys"] == 2 and len(swap["privacy_per_key"]) == 2
    assert black["keys"] == 1
    assert swap["rank1_worst_key"] >= swap["rank1"]
    # gallery.png and probe.png are one person's two stills: one expression pair per key.
    assert swap["expression"]["pairs"] == 1 and swap["expression"]["keys"] == 2
    assert orig["expression"]["compared"] == 1
    # Nothing replaced on the original; a black block has a hard edge; swap changed the face.
    assert orig["boundary_contrast"] is None
    assert black["boundary_contrast"] > 2.0
    assert swap["boundary_frames"] > 0
    # The still video does not change from frame to frame, so no flicker ratio can be formed.
    assert orig["videos"][0]["flicker_ratio"] is None


def test_report_without_crops_has_no_pictures_of_the_data(tmp_path: Path):
    from dicom_deid.evaluate.report import render

    metrics = {"original": {"available": True, "rank1": 1.0, "chance": 1.0}}
    summary = {"manifest": "m.csv", "entries": 1, "noise_floor": {}}
    html = render(metrics, summary, {}, {}, crops=False)
    assert "embeds original faces" not in html
    assert "Expression" in html and "Appearance" in html and "worst key" in html


@pytest.mark.slow
def test_identical_input_gives_zero_nme_and_full_rank1(run):
    _, metrics = run
    orig = metrics["original"]
    assert orig["rank1"] == 1.0 and orig["linkage_rank1"] == 1.0
    assert orig["chance"] == pytest.approx(0.5)
    assert orig["nme_mediapipe"] == 0.0 and orig["nme_dlib68"] == 0.0
    assert orig["detection_retention"] == 1.0 and orig["no_face_rate"] == 0.0
    assert orig["verification_rate"] == 1.0
    # The untouched face is what a leak is: every frame with a face counts.
    assert orig["leaks"] == 7


@pytest.mark.slow
def test_blackout_leaves_no_face_to_find(run):
    _, metrics = run
    black = metrics["blackout"]
    assert black["no_face_rate"] == 1.0
    assert black["rank1"] == 0.0 and black["rank5"] == 0.0 and black["verification_rate"] == 0.0
    assert black["detection_retention"] == 0.0
    assert black["nme_mediapipe"] is None
    assert black["leaks"] == 0


@pytest.mark.slow
def test_still_video_jitter_and_noise_floor(run):
    _, metrics = run
    video = metrics["original"]["videos"][0]
    assert video["file"] == "still.mkv" and video["frames"] == 6
    # Identical frames, each measured on its own: the landmarks do not move at all.
    assert video["jitter_original"] == 0.0
    assert video["ear_mae"] == 0.0
    assert metrics["original"]["nme_mediapipe_floor_jpeg"] < 2.0


@pytest.mark.slow
def test_unavailable_method_is_recorded_not_fatal(tmp_path: Path, monkeypatch):
    # Stands in for an installation without the swap renderer (the real one may be present).
    import cv2

    from dicom_deid.faces import MethodUnavailableError, replacer

    def missing(method, **_):
        if method == "swap":
            raise MethodUnavailableError("swap renderer not installed")
        return None

    monkeypatch.setattr(replacer, "load_renderer", missing)
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(_astronaut(), cv2.COLOR_RGB2BGR))
    (tmp_path / "m.csv").write_text("path,identity,role\na.png,x,gallery\na.png,x,probe\n")
    assert main(["evaluate", "--manifest", str(tmp_path / "m.csv"), "--methods", "swap,blur",
                 "--output", str(tmp_path / "out")]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["swap"]["available"] is False and "not installed" in metrics["swap"]["error"]
    assert all(k in metrics["swap"] for k in REQUIRED_KEYS)
    assert metrics["blur"]["available"] is True


def test_bad_manifest_exits_2_naming_it(tmp_path: Path, capsys):
    path = tmp_path / "m.csv"
    path.write_text("path,identity\nx.png,a\n")
    assert main(["evaluate", "--manifest", str(path), "--output", str(tmp_path / "o")]) == 2
    assert "m.csv" in capsys.readouterr().err


@pytest.mark.slow
def test_deidentified_column_evaluates_given_outputs(tmp_path: Path):
    import cv2

    face = cv2.cvtColor(_astronaut(), cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(tmp_path / "a.png"), face)
    cv2.imwrite(str(tmp_path / "same.png"), face)          # "de-identified" = untouched: a leak
    black = face.copy()
    black[40:220, 60:250] = 0                                # a crude blackout over the face
    cv2.imwrite(str(tmp_path / "black.png"), black)
    (tmp_path / "m.csv").write_text(
        "path,identity,role,deidentified\na.png,x,gallery,black.png\na.png,x,probe,same.png\n")
    assert main(["evaluate", "--manifest", str(tmp_path / "m.csv"), "--methods",
                 "deidentified", "--output", str(tmp_path / "out")]) == 0
    got = json.loads((tmp_path / "out" / "metrics.json").read_text())["deidentified"]
    assert got["rank1"] == 1.0 and got["nme_mediapipe"] == 0.0 and got["leaks"] == 1
    assert got["leaks_recogniser"] == 1 and got["leaks_detector"] == 1
    # The linkage gallery is the blacked-out capture: nothing to link to.
    assert got["linkage_rank1"] == 0.0


def test_unreadable_video_exits_2_naming_the_file(tmp_path: Path, capsys):
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    (tmp_path / "m.csv").write_text("path,identity,role\nbroken.mp4,a,probe\n")
    assert main(["evaluate", "--manifest", str(tmp_path / "m.csv"), "--methods", "original",
                 "--output", str(tmp_path / "out")]) == 2
    assert "broken.mp4" in capsys.readouterr().err
    assert not (tmp_path / "out" / "metrics.json").exists()
