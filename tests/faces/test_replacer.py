"""FaceReplacer end to end on generated sequences: replacement, fail-closed cover, leak check.

Some tests wrap the real MediaPipe models in `Blindfold`, which makes the tracker see nothing
on chosen frames (an injected tracking failure, stated as such); the others use real inputs
that defeat tracking (motion blur) or hide a face from it.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from dicom_deid.faces import FaceReplacer, MethodUnavailableError
from dicom_deid.faces.models import MediaPipeFaceModels
from dicom_deid.faces.region import covered_region
from tests.faces import recognizer, synth


class _BlindSession:
    def __init__(self, inner, owner: Blindfold) -> None:
        self.inner, self.owner = inner, owner

    def landmarks(self, crop):
        return None if self.owner.blind else self.inner.landmarks(crop)

    def reset(self):
        self.inner.reset()

    def close(self):
        self.inner.close()


class Blindfold:
    """Real MediaPipe models that see nothing while `blind` is set (injected failure), and
    whose detector ignores faces whose centre is right of `hide_right_of` (a face excluded
    from tracking)."""

    def __init__(self, hide_right_of: float | None = None) -> None:
        self.inner = MediaPipeFaceModels()
        self.blind = False
        self.hide_right_of = hide_right_of

    def detect(self, rgb):
        if self.blind:
            return []
        boxes = self.inner.detect(rgb)
        if self.hide_right_of is not None:
            boxes = [b for b in boxes if (b.box[0] + b.box[2]) / 2 < self.hide_right_of]
        return boxes

    def mesh_session(self):
        return _BlindSession(self.inner.mesh_session(), self)

    def close(self):
        self.inner.close()


def _uncovered(out: np.ndarray, original: np.ndarray, truth: np.ndarray, method: str) -> float:
    """Share of the true face hull that still shows original pixels."""
    hull = synth.hull_mask(truth, out.shape)
    if method == "blackout":
        return float(np.any(out[hull] != 0, axis=1).mean())
    return float(np.all(out[hull] == original[hull], axis=1).mean())


@pytest.mark.parametrize("method", ["blur", "pixelate", "blackout"])
def test_baselines_cover_the_moving_face_in_every_frame(method):
    frames, truth = synth.sequence(12, "translate")
    with FaceReplacer(method, fps=25.0) as rep:
        for rgb, gt in zip(frames, truth, strict=True):
            out = rep.process(rgb)
            assert out.shape == rgb.shape and out.dtype == np.uint8
            assert _uncovered(out, rgb, gt, method) < 0.01
            (face,) = rep.last.faces
            assert face.track_id == 1 and not face.fallback and not rep.last.leak
            # Landmarks are reported in the original frame's pixels.
            assert np.abs(face.landmarks[:, :2] - gt[:, :2]).mean() < 5.0
        report = rep.close()
    assert (report.frames, report.faces, report.fallback_frames, report.leaks) == (12, 1, 0, 0)


def test_injected_tracking_gap_is_covered_and_the_track_resumes():
    frames, truth = synth.sequence(16, "translate")
    models = Blindfold()
    gap = range(6, 10)
    with FaceReplacer("blackout", fps=25.0, models=models) as rep:
        for i, (rgb, gt) in enumerate(zip(frames, truth, strict=True)):
            models.blind = i in gap
            out = rep.process(rgb)
            assert _uncovered(out, rgb, gt, "blackout") == 0.0, f"frame {i}"
            assert rep.last.fallback == (i in gap)
            ids = {f.track_id for f in rep.last.faces}
            assert ids == {1}
        report = rep.close()
    assert report.fallback_frames == len(gap)
    assert report.tracks[0].longest_loss == len(gap) and report.faces == 1


def test_motion_blur_defeats_the_mesh_and_the_face_stays_covered():
    frames, truth = synth.sequence(14, "translate")
    blurred = set(range(5, 9))
    frames = [synth.motion_blur(f) if i in blurred else f for i, f in enumerate(frames)]
    with FaceReplacer("blackout", fps=25.0) as rep:
        for i, (rgb, gt) in enumerate(zip(frames, truth, strict=True)):
            out = rep.process(rgb)
            assert _uncovered(out, rgb, gt, "blackout") == 0.0, f"frame {i}"
        report = rep.close()
    # The real failure happened (otherwise this test proves nothing) and was covered.
    assert report.fallback_frames >= 2
    assert report.leaks == 0


def test_long_loss_keeps_covering_while_a_face_is_there_and_stops_when_it_is_gone():
    frames, truth = synth.sequence(30, "still")
    empty = np.full_like(frames[0], synth.BACKGROUND, dtype=np.uint8)
    models = Blindfold()
    covered_after_leave = []
    # The output leak check is off so that only the lost-track cover is under test.
    with FaceReplacer("blackout", fps=25.0, hold_s=0.2, models=models, leak_check=False) as rep:
        for i in range(30):
            models.blind = i >= 4
            rgb = frames[i] if i < 20 else empty
            out = rep.process(rgb)
            if i < 20:
                assert _uncovered(out, rgb, truth[i], "blackout") == 0.0, f"frame {i}"
                assert [f.status for f in rep.last.faces] == ["tracked" if i < 4 else "lost"]
            else:
                covered_after_leave.append(bool(rep.last.faces))
        report = rep.close()
    # Tracking failed for 16 frames with the face still there: the independent check on the
    # input kept the cover on past the 5-frame hold, and the report says so.
    assert report.conservative_frames >= 8
    # Once the face is really gone, the cover is released after the hold.
    assert covered_after_leave[-1] is False


def test_leak_check_finds_and_covers_a_face_hidden_from_the_tracker():
    size = (512, 256)
    left = synth.motion_matrices(1, "still", (256, 256))[0]
    right = left.copy()
    right[0, 2] += 256
    lm = synth.astronaut_landmarks()
    truth_right = synth.warp_landmarks(lm, right)
    rgb = np.where(np.arange(512)[None, :, None] < 256, synth.frame(left, size),
                   synth.frame(right, size)).astype(np.uint8)
    models = Blindfold(hide_right_of=256)
    leaks_per_frame = []
    with FaceReplacer("blur", fps=25.0, models=models) as rep:
        for _ in range(4):
            out = rep.process(rgb)
            assert _uncovered(out, rgb, truth_right, "blur") < 0.01
            leaks_per_frame.append(len(rep.last.leaks))
            for leak in rep.last.leaks:
                assert (leak.box[0] + leak.box[2]) / 2 > 256  # never the replaced left face
        report = rep.close()
    assert leaks_per_frame[0] == 1 and report.leak_events[0].frame == 0
    assert report.leaks == sum(leaks_per_frame) and report.leak_frames >= 1
    # The leak box is handed to the tracker, which follows the face from the next frame on.
    assert leaks_per_frame[-1] == 0 and report.faces == 2


class MirrorRenderer:
    """Stand-in renderer (the real ones are tested in test_swap*/test_mask3d*): writes the
    mirror image of the face into its hull, which is still a face to any detector."""

    def render(self, rgb, landmarks, *, track_id=0, inplace=False):
        out = rgb.copy()
        hull = covered_region(landmarks, rgb.shape) > 0
        ys, xs = np.nonzero(hull)
        axis = int(round(landmarks[:, 0].mean()))
        src = np.clip(2 * axis - xs, 0, rgb.shape[1] - 1)
        out[ys, xs] = rgb[ys, src][:, ::-1]
        return out


class BrokenRenderer:
    def __init__(self, mode: str) -> None:
        self.mode = mode

    def render(self, rgb, landmarks, *, track_id=0, inplace=False):
        if self.mode == "raise":
            raise RuntimeError("renderer bug")
        if self.mode == "unchanged":
            return rgb.copy()
        if self.mode == "partly-unchanged":
            # Every hull pixel changed but the top 30 % of rows (about a quarter of the hull
            # area): more than MAX_UNCHANGED left bit-identical.
            out = rgb.copy()
            ys, xs = np.nonzero(covered_region(landmarks, rgb.shape) > 0)
            keep = ys < ys.min() + 0.3 * (ys.max() - ys.min())
            out[ys[~keep], xs[~keep]] = 255 - out[ys[~keep], xs[~keep]]
            return out
        return rgb[:10]


class FaintRenderer:
    """Changes every hull pixel by one level in one channel: replaced, however faintly (the
    unchanged-region check must count a pixel as changed when any channel differs)."""

    def render(self, rgb, landmarks, *, track_id=0, inplace=False):
        out = rgb.copy()
        ys, xs = np.nonzero(covered_region(landmarks, rgb.shape) > 0)
        green = out[ys, xs, 1]
        out[ys, xs, 1] = np.where(green < 255, green + 1, 254)
        return out


def test_a_replaced_face_is_a_face_but_not_a_leak():
    frames, _ = synth.sequence(4, "still")
    with FaceReplacer("swap", renderer=MirrorRenderer(), fps=25.0) as rep:
        for rgb in frames:
            rep.process(rgb)
            assert rep.leak_checker.detections(rgb), "the detector must see the face"
            assert not rep.last.leak and not rep.last.fallback
        assert rep.close().leaks == 0


@pytest.mark.parametrize("mode", ["raise", "unchanged", "partly-unchanged", "wrong-shape"])
def test_a_failing_renderer_ends_in_a_cover(mode):
    frames, truth = synth.sequence(3, "still")
    with FaceReplacer("swap", renderer=BrokenRenderer(mode), fps=25.0) as rep:
        for rgb, gt in zip(frames, truth, strict=True):
            out = rep.process(rgb)
            assert _uncovered(out, rgb, gt, "blur") < 0.01
            assert rep.last.fallback and rep.last.faces[0].fallback
        report = rep.close()
    assert report.renderer_failures == 3 and report.fallback_frames == 3


def test_a_faint_but_complete_replacement_is_accepted():
    frames, _ = synth.sequence(2, "still")
    with FaceReplacer("swap", renderer=FaintRenderer(), fps=25.0, leak_check=False) as rep:
        for rgb in frames:
            rep.process(rgb)
            assert rep.last.faces and not rep.last.fallback
        assert rep.close().renderer_failures == 0


def test_recogniser_no_longer_matches_after_a_replaced_sequence():
    frames, truth = synth.sequence(6, "scale", size=(384, 384))
    last = frames[-1]
    reference = recognizer.descriptor_at(last, tuple(truth[-1][:, :2].mean(axis=0)))
    with FaceReplacer("pixelate", fps=25.0) as rep:
        outs = [rep.process(f) for f in frames]
    assert recognizer.best_distance(outs[-1], reference) >= recognizer.MATCH_DISTANCE


def test_missing_renderer_module_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "dicom_deid.faces.mask3d", None)
    with pytest.raises(MethodUnavailableError, match="mask3d"):
        FaceReplacer("mask3d")


def test_bad_arguments_and_frames():
    with pytest.raises(ValueError, match="unknown face method"):
        FaceReplacer("smudge")
    with pytest.raises(ValueError, match="shape"):
        FaceReplacer("blur", shape=1.5)
    with FaceReplacer("blur", leak_check=False) as rep:
        with pytest.raises(ValueError, match="uint8"):
            rep.process(np.zeros((32, 32, 3), np.float32))
        with pytest.raises(ValueError, match="H x W x 3"):
            rep.process(np.zeros((32, 32), np.uint8))
        rep.close()
        with pytest.raises(RuntimeError, match="closed"):
            rep.process(np.zeros((32, 32, 3), np.uint8))


def _hidden_face_frame() -> tuple[np.ndarray, np.ndarray]:
    """Two astronauts side by side; the right one is hidden from the tracker's detector."""
    size = (512, 256)
    left = synth.motion_matrices(1, "still", (256, 256))[0]
    right = left.copy()
    right[0, 2] += 256
    rgb = np.where(np.arange(512)[None, :, None] < 256, synth.frame(left, size),
                   synth.frame(right, size)).astype(np.uint8)
    return rgb, synth.warp_landmarks(synth.astronaut_landmarks(), right)


def test_stream_gives_the_frames_and_results_of_process():
    frames, _ = synth.sequence(10, "translate")
    with FaceReplacer("swap", donor_seed=5, fps=25.0) as rep:
        expected = [(rep.process(f), rep.last) for f in frames]
        expected_report = rep.close()
    with FaceReplacer("swap", donor_seed=5, fps=25.0) as rep:
        got = list(rep.stream(iter(frames)))
        report = rep.close()
    assert len(got) == len(frames)
    for i, ((rgb, out, result), (want, want_result)) in enumerate(zip(got, expected, strict=True)):
        assert rgb is frames[i]
        assert np.array_equal(out, want), f"frame {i}"
        assert result.index == want_result.index == i
        assert [f.track_id for f in result.faces] == [f.track_id for f in want_result.faces]
        assert np.array_equal(result.faces[0].landmarks, want_result.faces[0].landmarks)
    assert (report.frames, report.faces, report.leaks) == (expected_report.frames, 1, 0)


def test_stream_hands_a_leak_to_the_tracker_a_fixed_two_frames_later():
    rgb, truth_right = _hidden_face_frame()
    leaks = {}
    for mode in ("process", "stream"):
        with FaceReplacer("blur", fps=25.0, models=Blindfold(hide_right_of=256)) as rep:
            if mode == "process":
                results = []
                for _ in range(5):
                    rep.process(rgb)
                    results.append(rep.last)
            else:
                results = [result for _, out, result in rep.stream([rgb] * 5)]
                for _, out, _ in rep.stream([rgb]):
                    assert _uncovered(out, rgb, truth_right, "blur") < 0.01
            leaks[mode] = [len(r.leaks) for r in results]
    # Covered in the frame it was found either way; followed by the tracker one frame later
    # when frames are processed one by one, two when the next is already being tracked.
    assert leaks["process"] == [1, 0, 0, 0, 0]
    assert leaks["stream"] == [1, 1, 0, 0, 0]


def test_stream_raises_the_sources_error_and_leaves_no_thread_behind():
    import threading

    frames, _ = synth.sequence(3, "still")
    closed = []

    def broken():
        try:
            yield from frames
            raise OSError("decoder broke")
        finally:
            closed.append(threading.current_thread().name)

    with FaceReplacer("blur", fps=25.0) as rep:
        seen = 0
        with pytest.raises(OSError, match="decoder broke"):
            for _ in rep.stream(broken()):
                seen += 1
        assert seen == 3
        # A consumer that stops early: the source is closed (in the tracking thread) before
        # the stream returns.
        stream = rep.stream(broken())
        next(stream)
        stream.close()
    assert closed == ["faces-track", "faces-track"]
    assert not [t for t in threading.enumerate() if t.name == "faces-track"]


def test_closing_the_replacer_stops_a_stream_its_consumer_abandoned():
    """write_frames does not close the iterator it fails on: the replacer's close must join
    the tracking thread before the tracker's models go away."""
    import threading

    frames, _ = synth.sequence(8, "still")
    rep = FaceReplacer("blur", fps=25.0)
    stream = rep.stream(iter(frames))
    next(stream)
    assert [t for t in threading.enumerate() if t.name == "faces-track"]
    report = rep.close()
    assert not [t for t in threading.enumerate() if t.name == "faces-track"]
    assert report.frames == 1
    with pytest.raises(StopIteration):
        next(stream)


class InplaceRenderer(MirrorRenderer):
    """Renders into the frame it is given when asked to; records how it was called."""

    def __init__(self) -> None:
        self.calls: list[tuple[bool, np.ndarray]] = []

    def render(self, rgb, landmarks, *, track_id=0, inplace: bool = False):
        self.calls.append((inplace, rgb))
        out = super().render(rgb, landmarks)
        if not inplace:
            return out
        rgb[...] = out
        return rgb


def test_an_inplace_renderer_draws_into_the_replacers_copy_and_the_input_stays_untouched():
    frames, _ = synth.sequence(3, "still")
    renderer = InplaceRenderer()
    with FaceReplacer("swap", renderer=renderer, fps=25.0, leak_check=False) as rep:
        for rgb in frames:
            before = rgb.copy()
            out = rep.process(rgb)
            inplace, given = renderer.calls[-1]
            assert inplace and given is out and given is not rgb
            assert np.array_equal(rgb, before)
            assert not rep.last.fallback and not np.array_equal(out, rgb)


class EnlargingRenderer:
    """Stand-in for mask3d's grown outline: draws the face enlarged about its centre over an
    ellipse larger than the hull, so a detector finds a face whose box is mostly outside the
    hull (as CenterFace does on mask3d's London 009 and 096 renders)."""

    def __init__(self, scale: float = 2.0) -> None:
        self.scale = scale

    def render(self, rgb, landmarks, *, track_id=0, inplace=False):
        import cv2

        x0, y0 = landmarks[:, :2].min(axis=0)
        x1, y1 = landmarks[:, :2].max(axis=0)
        cx, cy, s = (x0 + x1) / 2, (y0 + y1) / 2, self.scale
        warp = np.float32([[s, 0, cx * (1 - s)], [0, s, cy * (1 - s)]])
        big = cv2.warpAffine(rgb, warp, (rgb.shape[1], rgb.shape[0]),
                             borderMode=cv2.BORDER_REFLECT)
        region = np.zeros(rgb.shape[:2], np.uint8)
        cv2.ellipse(region, (int(cx), int(cy)), (int(s * (x1 - x0) / 2), int(s * (y1 - y0) / 2)),
                    0, 0, 360, 1, -1)
        out = rgb.copy()
        out[region > 0] = big[region > 0]
        return out


def test_a_face_drawn_larger_than_the_hull_is_not_a_leak_but_a_face_beside_it_is():
    size = (512, 256)
    left = synth.motion_matrices(1, "still", (256, 256))[0]
    right = left.copy()
    right[0, 2] += 256
    lm = synth.astronaut_landmarks()
    truth_left = synth.warp_landmarks(lm, left)
    truth_right = synth.warp_landmarks(lm, right)
    rgb = np.where(np.arange(512)[None, :, None] < 256, synth.frame(left, size),
                   synth.frame(right, size)).astype(np.uint8)
    renderer = EnlargingRenderer()
    # The scenario holds: counted by its hull alone, the enlarged face is a leak.
    drawn = renderer.render(rgb, truth_left)
    hull_only = covered_region(truth_left, rgb.shape)
    with FaceReplacer("swap", renderer=renderer, fps=25.0, models=Blindfold(hide_right_of=256)) as rep:
        enlarged = [leak for leak in rep.leak_checker.find(drawn, hull_only, 0)
                    if (leak.box[0] + leak.box[2]) / 2 < 256]
        assert enlarged, "the enlarged face must lie mostly outside the hull"
        out = rep.process(rgb)
        leaks = rep.last.leaks
        assert not rep.last.faces[0].fallback
        report = rep.close()
    # The replaced (enlarged) face is not a leak; the face hidden from the tracker beside it,
    # untouched by the renderer, still is, and is covered.
    assert all((leak.box[0] + leak.box[2]) / 2 > 256 for leak in leaks)
    assert len(leaks) == 1 and report.leaks == 1
    assert _uncovered(out, rgb, truth_right, "blur") < 0.01
    assert _uncovered(out, rgb, truth_left, "swap") < 0.01


def test_a_still_image_is_not_primed_and_a_video_is():
    # The tracker meshes a video track's first frame again until MediaPipe settles (no flicker
    # in the first frames); a stream of one frame is a still image and keeps its first mesh
    # (primed landmarks raised the swap's London rank-1 from 3.9 to 6.5 %).
    frames, _ = synth.sequence(2, "still")
    outputs = []
    for count in (1, 2):
        replacer = FaceReplacer("blur", leak_check=False)
        try:
            outputs.append([out for _, out, _ in replacer.stream(frames[:count])])
            assert replacer.tracker.still == (count == 1)
        finally:
            replacer.close()
    assert not np.array_equal(outputs[0][0], outputs[1][0])
