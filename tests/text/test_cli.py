"""`dicom-deid text` on an image, a video and a file it cannot read."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from dicom_deid.cli import main
from dicom_deid.faces.media import VideoInfo, VideoWriter, read_image, read_video
from tests.text.frames import background, put


def test_image_and_video_are_cleaned_and_a_bad_file_is_named(tmp_path: Path, detector,
                                                               capsys) -> None:
    src = tmp_path / "in"
    src.mkdir()
    rgb = background()
    box = put(rgb, "DOE^JANE 1957", 10, 40, scale=0.7, thickness=2)
    cv2.imwrite(str(src / "still.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer = VideoWriter(src / "clip.mp4", VideoInfo(6, Fraction(25), 320, 240, "h264"))
    for i in range(6):
        frame = background(seed=i)
        put(frame, "ID 48213977", 10, 200, scale=0.7, thickness=2)
        writer.write(frame)
    writer.finish()
    (src / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    report = tmp_path / "report.json"
    code = main(["text", str(src), "--output", str(out), "--report", str(report),
                 "--key-interval", "4"])
    captured = capsys.readouterr()
    assert code == 1
    assert "broken.png" in captured.err and "not a readable image" in captured.err
    cleaned = read_image(out / "still.png")
    x0, y0, x1, y1 = box
    # The text's pixels became one flat colour (the fill), the rest of the picture did not.
    assert cleaned[y0:y1, x0:x1].reshape(-1, 3).std(axis=0).max() < 1.0
    assert np.array_equal(cleaned[150:, 150:], rgb[150:, 150:])
    frames = list(read_video(out / "clip.mp4"))
    assert len(frames) == 6
    rows = json.loads(report.read_text())
    assert {r["input"] for r in rows} == {"still.png", "clip.mp4"}
    for row in rows:
        assert row["frames_redacted"] == row["frames"] >= 1
        assert "DOE" not in json.dumps(row) and "48213977" not in json.dumps(row)


def test_bad_arguments(tmp_path: Path, capsys) -> None:
    assert main(["text", str(tmp_path), "--output", str(tmp_path / "o")]) == 2
    assert "no input files" in capsys.readouterr().err
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), background())
    assert main(["text", str(img), "--output", str(tmp_path / "o"), "--key-interval", "0"]) == 2


def test_dicom_keeps_its_header_gets_a_new_uid_and_loses_its_text(tmp_path: Path, detector) -> None:
    from pydicom import dcmread

    from dicom_deid.video import open_frames
    from tests.text.test_pipeline import _texted_instance

    src, pictures, boxes = _texted_instance(tmp_path / "sc.dcm", frames=3)
    out = tmp_path / "out"
    assert main(["text", str(src), "--output", str(out), "--mode", "redact-phi"]) == 0
    before, after = dcmread(src, stop_before_pixels=True), dcmread(out / "sc.dcm", stop_before_pixels=True)
    assert after.SOPInstanceUID != before.SOPInstanceUID
    assert after.PatientName == before.PatientName        # pixels only: the header is deidentify's
    with open_frames(out / "sc.dcm") as reader:
        frames = list(reader)
    assert len(frames) == 3
    for frame, frame_boxes in zip(frames, boxes, strict=True):
        for x0, y0, x1, y1 in frame_boxes:       # the name and the ID match the header: covered
            assert frame[y0:y1, x0:x1].reshape(-1, 3).std(axis=0).max() < 1.0
