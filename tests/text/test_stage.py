"""The text stage on short videos drawn here: static overlays, a running clock, a label that
appears and goes between two key frames, and frames with no text at all."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dicom_deid.text import PhiTerms, TextStage
from dicom_deid.text.redact import box_mask
from dicom_deid.text.stage import _plain_picture
from tests.text.frames import background, covered, put


def _clip(frames: int = 20, label: tuple[int, int] = (5, 9)) -> tuple[list, list, list]:
    """(frames with text, the same without, per frame {field: box})."""
    clean, texted, truth = [], [], []
    for i in range(frames):
        base = background(seed=i)          # noise differs per frame, like a camera's
        rgb = base.copy()
        boxes = {"name": put(rgb, "DOE^JANE", 8, 24), "id": put(rgb, "ID 48213977", 8, 48)}
        boxes["clock"] = put(rgb, f"14:32:{i // 4:02d}", 200, 228, colour=(250, 250, 120))
        if label[0] <= i < label[1]:
            boxes["label"] = put(rgb, "DR KOWALSKI", 110, 140, colour=(0, 0, 0))
        clean.append(base)
        texted.append(rgb)
        truth.append(boxes)
    return clean, texted, truth


@pytest.mark.parametrize("interval", [1, 8])
def test_every_frame_a_text_is_on_is_covered(detector, interval: int) -> None:
    clean, texted, truth = _clip()
    stage = TextStage("redact-all", key_interval=interval, detector=detector, record=True)
    out = list(stage.stream(iter([f.copy() for f in texted])))
    report = stage.close()
    assert len(out) == len(texted) == len(stage.covered)
    for i, (frame, boxes) in enumerate(zip(out, truth, strict=True)):
        for field, box in boxes.items():
            assert covered(stage.covered[i], box, frame.shape) > 0.98, (i, field)
        mask = box_mask(frame.shape, stage.covered[i])
        # Outside the covered boxes the frame is the input, bit for bit.
        assert np.array_equal(frame[~mask], texted[i][~mask])
        # The covered area is the text and its surroundings, not the picture.
        assert mask.mean() < 0.2
    assert report.frames == len(texted) and report.frames_redacted == len(texted)
    if interval == 8:
        # key frames 0, 8, 16 and the last; the label (frames 5-8) appears between two of them
        assert report.key_frames == 4
        assert report.region_checks >= 1


def test_a_label_between_key_frames_is_found_by_the_region_check(detector) -> None:
    # Key frames 0 and 15 both lack the label (on from 4 to 7): only the region check sees it.
    clean, texted, truth = _clip(frames=16, label=(4, 8))
    stage = TextStage("redact-all", key_interval=15, detector=detector, record=True)
    out = list(stage.stream(texted))
    stage.close()
    for i in range(4, 8):
        assert covered(stage.covered[i], truth[i]["label"], out[i].shape) > 0.98, i
    assert stage.report.region_checks >= 1


def test_frames_without_text_are_untouched(detector) -> None:
    frames = [background(seed=i) for i in range(6)]
    stage = TextStage("redact-all", key_interval=4, detector=detector)
    out = list(stage.stream([f.copy() for f in frames]))
    report = stage.close()
    assert all(np.array_equal(a, b) for a, b in zip(out, frames, strict=True))
    assert report.frames_redacted == 0 and report.boxes_found == 0
    assert report.area_max == 0.0


def test_redact_phi_keeps_harmless_text(detector, recognizer) -> None:
    rgb = background()
    name = put(rgb, "DOE JANE", 8, 30, scale=0.8, thickness=2)
    harmless = put(rgb, "ZOOM", 200, 200, scale=0.8, thickness=2)
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.PatientName = "DOE^JANE"
    stage = TextStage("redact-phi", PhiTerms.from_dataset(ds), detector=detector,
                      recognizer=recognizer, record=True)
    stage.process_image(rgb.copy())
    report = stage.close()
    assert covered(stage.covered[0], name, rgb.shape) > 0.98
    assert covered(stage.covered[0], harmless, rgb.shape) == 0.0
    assert report.boxes_kept == 1 and report.frames_redacted == 1


def test_off_passes_frames_and_counts_them() -> None:
    frames = [background(seed=i) for i in range(3)]
    stage = TextStage("off")
    out = list(stage.stream(frames))
    assert all(a is b for a, b in zip(out, frames, strict=True))
    assert stage.close().frames == 3


def test_bad_settings_and_frame_size_changes_are_refused(detector) -> None:
    with pytest.raises(ValueError, match="burned_in_text must be one of"):
        TextStage("blur")
    with pytest.raises(ValueError, match="key_interval"):
        TextStage("redact-all", key_interval=0, detector=detector)
    stage = TextStage("redact-all", key_interval=4, detector=detector)
    with pytest.raises(ValueError, match="frame 2 is"):
        list(stage.stream([background(), background(160, 120)]))


def test_closing_the_stream_closes_its_source(detector) -> None:
    closed = []

    def source():
        try:
            for i in range(10):
                yield background(seed=i)
        finally:
            closed.append(True)

    stage = TextStage("redact-all", key_interval=4, detector=detector)
    stream = stage.stream(source())
    next(stream)
    stream.close()
    assert closed == [True]


def test_the_report_holds_counts_only(detector) -> None:
    _, texted, _ = _clip(frames=3)
    stage = TextStage("redact-all", detector=detector)
    list(stage.stream(texted))
    report = stage.close().as_dict()
    assert set(report) == {"mode", "frames", "key_frames", "region_checks", "boxes_found",
                           "boxes_kept", "frames_redacted", "boxes_redacted", "area_max",
                           "area_mean"}
    assert all(isinstance(v, int | float) for k, v in report.items() if k != "mode")


@pytest.mark.parametrize("label", [(4, 7), (5, 8), (6, 9), (17, 20)])
def test_text_at_the_end_of_a_group_or_of_the_file_is_covered(detector, label) -> None:
    # interval 4: the first group is frames 1-6, its key frame 6, frames 5 and 6 held over to
    # the next group (7-10), and so on. The label is on for three frames (the shortest the
    # still-edge check promises to see): gone before the key frame, on the held frames, across
    # a key frame, or on the last frames of the file, where its edges are still only at the end.
    _, texted, truth = _clip(frames=20, label=label)
    stage = TextStage("redact-all", key_interval=4, detector=detector, record=True)
    out = list(stage.stream(texted))
    stage.close()
    for i in range(*label):
        assert covered(stage.covered[i], truth[i]["label"], out[i].shape) > 0.98, i


@pytest.mark.parametrize(("start", "shown"), [(5, 1), (5, 2), (9, 1), (10, 2)])
def test_text_shown_for_one_or_two_frames_between_key_frames_is_covered(detector, start,
                                                                         shown) -> None:
    # interval 8: key frames 0, 8 (held over with 7) and 16. A label shown for one or two
    # frames never has edges that are still for three frames; frames 5-6 lie inside a group,
    # 9-11 just after a key frame (on the frames held over to the next group).
    _, texted, truth = _clip(frames=20, label=(start, start + shown))
    stage = TextStage("redact-all", key_interval=8, detector=detector, record=True)
    out = list(stage.stream(texted))
    stage.close()
    for i in range(start, start + shown):
        assert covered(stage.covered[i], truth[i]["label"], out[i].shape) > 0.98, i
    # and only there (and a frame either side): the frames well before it are not covered
    # where the label was
    assert covered(stage.covered[start - 3], truth[start]["label"], out[0].shape) < 0.5


@pytest.mark.parametrize(("start", "shown"), [(5, 1), (5, 2), (9, 1), (10, 2)])
def test_the_frames_next_to_a_flash_on_a_still_picture_are_not_covered(detector, start,
                                                                       shown) -> None:
    # The frame before a flash shows what the frame before it shows, the one after what the
    # one after it shows: plainly the picture, so only the flash's own frames are covered
    # (a frame either side was 3.97 % of a small clip's frame outside any text).
    _, texted, truth = _clip(frames=20, label=(start, start + shown))
    stage = TextStage("redact-all", key_interval=8, detector=detector, record=True)
    out = list(stage.stream(texted))
    stage.close()
    label = truth[start]["label"]
    on = {i for i in range(20) if covered(stage.covered[i], label, out[i].shape) > 0.98}
    assert on == set(range(start, start + shown))


def _greys(levels: list[int]) -> list[np.ndarray]:
    """Grey frames 40 x 60 of a flat picture at 100 with a block of `level` at 10:30, 10:50."""
    frames = []
    for level in levels:
        g = np.full((40, 60), 100, np.uint8)
        g[10:30, 10:50] = level
        frames.append(g)
    return frames


BLOCK = np.array([[8, 8, 52, 32]], np.float32)
STATIC = np.array([[2, 2, 30, 8]], np.float32)       # a box with nothing that changed in it


@pytest.mark.parametrize(("levels", "plain"), [
    ([100, 100, 250, 100], True),          # before, neighbour, flash, after: the picture
    ([100, 150, 250, 100], False),         # the neighbour half way: a fade
    ([130, 100, 250, 100], False),         # the frame before differs there: cannot tell
    ([100, 100, 110, 100], False)])        # the text changed too few pixels to tell
def test_a_neighbour_of_a_flash_is_plainly_the_picture_only_when_it_matches_the_frame_beyond(
        levels, plain) -> None:
    boxes = np.concatenate([BLOCK, STATIC])
    # per box: the one the flash did not change (text on the neighbour too) stays covered
    assert _plain_picture(_greys(levels), 1, 0, 2, boxes).tolist() == [plain, False]
    # the frame beyond is not at hand (before the first frame held): covered
    assert not _plain_picture(_greys(levels), 1, -1, 2, boxes).any()
    assert not _plain_picture([None, *_greys(levels)[1:]], 1, 0, 2, boxes).any()


def test_a_new_box_is_covered_only_on_the_frames_it_is_on(detector) -> None:
    # The label is on for frames 3-7 of a 16-frame group: found there, it used to be covered
    # on all 18 frames of the group.
    _, texted, truth = _clip(frames=20, label=(3, 8))
    stage = TextStage("redact-all", key_interval=16, detector=detector, record=True)
    out = list(stage.stream(texted))
    stage.close()
    label = truth[3]["label"]
    on = [i for i in range(20) if covered(stage.covered[i], label, out[i].shape) > 0.98]
    assert set(range(3, 8)) <= set(on)
    assert set(on) <= set(range(2, 9)), on


def test_a_single_small_character_appearing_mid_clip_is_covered(detector) -> None:
    # One 10 px digit, appearing at frame 6 for good, away from any other text.
    frames, boxes = [], []
    for i in range(24):
        rgb = background(seed=i)
        put(rgb, "DOE^JANE", 8, 24)
        boxes.append(put(rgb, "7", 250, 120, scale=0.4) if i >= 6 else None)
        frames.append(rgb)
    stage = TextStage("redact-all", key_interval=8, detector=detector, record=True)
    out = list(stage.stream(frames))
    stage.close()
    for i in range(6, 24):
        assert covered(stage.covered[i], boxes[i], out[i].shape) > 0.98, i



def _label_clip(shift: int = 0, fade: bool = False) -> tuple[list, tuple[int, int, int, int]]:
    """20 frames, a name top left throughout and a label on frames 5-9; shift: pixels a
    textured picture moves per frame (0: the still gradient); fade: the label at half
    strength on frames 4 and 10."""
    texture = cv2.normalize(cv2.GaussianBlur(np.random.default_rng(7).random((240, 320, 3))
                                             .astype(np.float32), (0, 0), 2),
                            None, 60, 200, cv2.NORM_MINMAX).astype(np.uint8)
    frames, box = [], (0, 0, 0, 0)
    for i in range(20):
        rgb = np.roll(texture, shift * i, axis=1) if shift else background(seed=i)
        put(rgb, "DOE^JANE", 8, 24)
        if 5 <= i < 10:
            box = put(rgb, "DR KOWALSKI", 110, 140, colour=(0, 0, 0))
        elif fade and i in (4, 10):
            shown = rgb.copy()
            put(shown, "DR KOWALSKI", 110, 140, colour=(0, 0, 0))
            rgb[:] = ((rgb.astype(np.uint16) + shown) // 2).astype(np.uint8)
        frames.append(rgb)
    return frames, box


@pytest.mark.parametrize(("shift", "fade", "expected"), [
    (0, False, set(range(5, 10))),         # a still picture: only the label's own frames
    (0, True, set(range(4, 11))),          # fading in and out: the half-strength frames too
    (3, False, set(range(4, 11)))])        # a moving picture: cannot tell, a frame either
                                           # side
def test_the_frames_next_to_a_new_label_are_covered_unless_they_plainly_show_no_text(
        detector, shift, fade, expected) -> None:
    frames, label = _label_clip(shift, fade)
    stage = TextStage("redact-all", key_interval=16, detector=detector, record=True)
    out = list(stage.stream(frames))
    stage.close()
    on = {i for i in range(20) if covered(stage.covered[i], label, out[i].shape) > 0.98}
    assert on == expected


def _label_on_patch() -> tuple[list, tuple[int, int, int, int]]:
    """20 frames: a light label with a shadow on frames 5-9, over a still, textured picture
    with a dark flat patch over the top of its letters (the evaluation's clip_01: a yellow
    label on a face, hair and a blue ground beside it). The box's smaller grey class is the
    patch, which keeps its level when the label goes."""
    texture = cv2.normalize(cv2.GaussianBlur(np.random.default_rng(3).random((240, 320))
                                             .astype(np.float32), (0, 0), 1.5),
                            None, 140, 200, cv2.NORM_MINMAX).astype(np.uint8)
    picture = np.dstack([texture, texture, texture])
    picture[110:131, 100:250] = (30, 60, 110)
    frames, label = [], (0, 0, 0, 0)
    for i in range(20):
        rgb = picture.copy()
        put(rgb, "DOE^JANE", 8, 24)
        if 5 <= i < 10:
            cv2.putText(rgb, "DR KOWALSKI", (111, 141), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1,
                        cv2.LINE_AA)
            label = put(rgb, "DR KOWALSKI", 110, 140, colour=(255, 255, 120))
        frames.append(rgb)
    return frames, label


def _covered_frames(detector, frames: list, box: tuple[int, int, int, int]) -> set[int]:
    stage = TextStage("redact-all", key_interval=16, detector=detector, record=True)
    out = list(stage.stream(frames))
    stage.close()
    return {i for i in range(len(out)) if covered(stage.covered[i], box, out[i].shape) > 0.98}


def test_a_light_label_whose_smaller_grey_class_is_the_picture_is_covered_only_on_its_frames(
        detector) -> None:
    # It was covered on all 18 frames of its group.
    on = _covered_frames(detector, *_label_on_patch())
    assert set(range(5, 10)) <= on <= set(range(4, 11)), on


def test_a_new_box_stays_covered_where_the_detector_still_finds_text(detector, monkeypatch) -> None:
    # The same clip, with a detector that finds text in the box on the frames the pixels the
    # label changed say it is off: the box stays covered on every frame of its group.
    monkeypatch.setattr(TextStage, "_text_in", lambda self, rgb, box: True)
    on = _covered_frames(detector, *_label_on_patch())
    assert on >= set(range(1, 17)), on

def _blue(seed: int) -> np.ndarray:
    """A flat blue field with a camera's noise (a backdrop behind a patient's head)."""
    rng = np.random.default_rng(seed)
    rgb = np.full((240, 320, 3), (30, 150, 190), np.float32) + rng.normal(0, 2.0, (240, 320, 3))
    return np.clip(rgb, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(("digit", "font", "scale"), [
    ("4", cv2.FONT_HERSHEY_COMPLEX, 0.35), ("7", cv2.FONT_HERSHEY_COMPLEX, 0.3),
    ("4", cv2.FONT_HERSHEY_PLAIN, 0.7)])
def test_a_lone_light_digit_with_a_shadow_is_covered(detector, digit, font, scale) -> None:
    # 8-10 px digits, light yellow with a dark shadow on blue (the evaluation's missed "7"):
    # the detector finds none of these at 4x, the scale the retry of an empty region check
    # used before, and each at 8x (FINE_SCALE).
    frames, boxes = [], []
    for i in range(24):
        rgb = _blue(i)
        put(rgb, "DOE^JANE", 8, 24)
        box = None
        if i >= 6:
            cv2.putText(rgb, digit, (251, 121), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
            box = put(rgb, digit, 250, 120, scale=scale, colour=(255, 255, 120), font=font)
        boxes.append(box)
        frames.append(rgb)
    stage = TextStage("redact-all", key_interval=8, detector=detector, record=True)
    out = list(stage.stream(frames))
    stage.close()
    for i in range(6, 24):
        assert covered(stage.covered[i], boxes[i], out[i].shape) > 0.98, i
