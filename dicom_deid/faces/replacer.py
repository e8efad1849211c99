"""`FaceReplacer`: the one frame API (docs/CONTRACTS.md) used by the CLI, the video layer, the
pipeline and the evaluation.

Per frame: track faces (tracker.py), render each tracked face with the method (swap, mask3d,
or a baseline over the grown hull), cover every face that is lost or has no mesh with the
fallback baseline (fail closed), then run the independent leak check on the output and cover
whatever it finds outside the replaced regions. Original face pixels are never passed through
knowingly: a renderer that raises or leaves its region unchanged is replaced by the fallback.
"""

from __future__ import annotations

import itertools
import logging
import threading
import weakref
from collections.abc import Generator, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import cv2
import numpy as np

from dicom_deid import face_methods
from dicom_deid.faces.baselines import apply_baseline
from dicom_deid.faces.leakcheck import DEFAULT_MAX_SIDE, DEFAULT_PRECISION, Leak, LeakChecker
from dicom_deid.faces.models import FaceModels
from dicom_deid.faces.region import (
    BASELINE_FOREHEAD,
    BASELINE_MARGIN,
    face_height,
    polygon_bbox,
    polygon_mask,
    region_polygon,
)
from dicom_deid.faces.tracker import DETECTED, LOST, TRACKED, FaceTracker, TrackerConfig, TrackStats
from dicom_deid.onnx_device import ModelSettings
from dicom_deid.overlap import prefetch

log = logging.getLogger(__name__)

# A renderer that leaves more than this share of its hull bit-identical did not replace it.
MAX_UNCHANGED = 0.10
# Leak boxes are covered grown by this share of their larger side on every side.
LEAK_GROW = 0.2
# Beyond its hull, a renderer's region counts as covered for the leak check where it changed
# a pixel by at least CLAIM_MIN_CHANGE (sum of the three channels' differences), within the
# hull's box grown by CLAIM_GROW face heights. mask3d draws a face larger than the hull
# (its grown outline) that CenterFace finds with a box mostly outside the hull (London 009,
# 096): counted by the hull alone, that was a leak. Pixels the renderer left (nearly) as
# they were never count, so a real face beside the replaced one is still a leak.
CLAIM_MIN_CHANGE = 48
CLAIM_GROW = 0.5
MAX_LEAK_EVENTS = 1000
_CHANNEL_SUM = np.ones((1, 3), np.float32)


# In `stream`, a face found by the leak check in frame n is handed to the tracker for frame
# n + STREAM_HINT_LAG: the tracker is then working on frame n + 1 already.
STREAM_HINT_LAG = 2


class Renderer(Protocol):
    """A face method's renderer (face_methods.FaceMethod.factory builds one).

    ``track_id``: the face's track in a video, for a renderer that keeps per-track state
    (a neutral face estimated over the track's frames); ``inplace``: the renderer may draw into
    ``rgb`` itself (the replacer gives it its own copy of the frame) instead of a new frame.
    """

    def render(self, rgb: np.ndarray, landmarks: np.ndarray, *, track_id: int = 0,
               inplace: bool = False) -> np.ndarray: ...


@dataclass
class FaceResult:
    track_id: int                       # 0 for a box-only face that has no track
    landmarks: np.ndarray | None        # 478 x 3 pixels of the original frame; None when lost
    bbox: tuple[int, int, int, int]     # x0, y0, x1, y1 (exclusive), original frame pixels
    status: str                         # tracked | lost | detected
    fallback: bool                      # covered by the fallback baseline, not by the method
    raw_landmarks: np.ndarray | None = None


@dataclass
class FrameResult:
    index: int
    faces: list[FaceResult]
    fallback: bool
    leak: bool
    leaks: list[Leak] = field(default_factory=list)
    scene_cut: bool = False


@dataclass
class _Replaced:
    """A frame tracked, rendered and covered, waiting for its leak check."""

    index: int
    rgb: np.ndarray
    out: np.ndarray
    covered: np.ndarray          # uint8 mask, > 0 where replaced or covered
    faces: list[FaceResult]
    fallback: bool
    conservative: int
    scene_cut: bool


@dataclass
class FacesReport:
    method: str
    frames: int = 0
    faces: int = 0                    # distinct tracks
    face_frames: int = 0              # sum over frames of faces rendered or covered
    fallback_frames: int = 0
    conservative_frames: int = 0      # frames covering a face lost for longer than the hold
    leaks: int = 0
    leak_frames: int = 0
    renderer_failures: int = 0
    scene_cuts: int = 0
    detections_run: int = 0
    leak_events: list[Leak] = field(default_factory=list)
    tracks: list[TrackStats] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, PHI-free (counts, frame indices, boxes)."""
        data = asdict(self)
        data["leak_events"] = [
            {"frame": e.frame, "box": list(e.box), "score": round(e.score, 3),
             "covered_fraction": round(e.covered_fraction, 3)}
            for e in self.leak_events
        ]
        return data

    def summary(self) -> str:
        return (
            f"frames={self.frames} faces={self.faces} fallback_frames={self.fallback_frames} "
            f"leaks={self.leaks}"
        )


def load_renderer(method: str, *, shape: float, donor_seed: int) -> Renderer | None:
    """The renderer of method (face_methods), None for the baselines; MethodUnavailableError
    when it cannot be built here."""
    renderer: Renderer | None = face_methods.get(method).renderer(shape=shape,
                                                                   donor_seed=donor_seed)
    return renderer


class FaceReplacer:
    """Replace every face in a stream of RGB frames; stateful across frames."""

    def __init__(
        self,
        method: str = "swap",
        shape: float = 0.0,
        donor_seed: int = 0,
        fps: float = 25.0,
        *,
        max_faces: int = 4,
        fallback: str | None = None,
        leak_check: bool = True,
        leak_max_side: int = DEFAULT_MAX_SIDE,
        leak_threshold: float | None = None,
        leak_precision: str = DEFAULT_PRECISION,
        detect_interval: int = 5,
        hold_s: float = 1.0,
        models: FaceModels | None = None,
        renderer: Renderer | None = None,
        tracker_config: TrackerConfig | None = None,
        runtime: ModelSettings | None = None,
    ) -> None:
        # runtime: the device and face engine of every model built here (models, if given,
        # is used as it is).
        runtime = runtime or ModelSettings()
        spec = face_methods.get(method)
        if not 0.0 <= float(shape) <= 1.0:
            raise ValueError(f"shape must be within 0..1, got {shape}")
        if fallback is None:
            fallback = spec.fallback
        if fallback not in face_methods.baselines():
            raise ValueError(f"fallback must be one of {face_methods.baselines()}, got {fallback!r}")
        self.method = method
        self.fallback_method = fallback
        self.renderer = renderer if renderer is not None else load_renderer(
            method, shape=float(shape), donor_seed=int(donor_seed)
        )
        # The same independent detector also tells the tracker whether a lost face is still
        # there (on the input), so it is built even when the output check is switched off.
        checker = LeakChecker(max_side=leak_max_side, threshold=leak_threshold,
                              precision=leak_precision, device=runtime.device)
        self.leak_checker = checker if leak_check else None
        config = tracker_config or TrackerConfig(
            max_faces=max_faces, detect_interval=detect_interval, hold_s=hold_s
        )
        self.tracker = FaceTracker(models or runtime.face_models(), fps=fps, config=config,
                                   evidence=checker.evidence)
        self.report = FacesReport(method=method)
        self.last: FrameResult | None = None
        self._closed = False
        self._started = 0                                  # frames given to the tracker
        self._hints: list[tuple[int, tuple[int, int, int, int]]] = []   # leak boxes by frame
        self._hints_lock = threading.Lock()
        self._streams: weakref.WeakSet[Generator] = weakref.WeakSet()

    def __enter__(self) -> FaceReplacer:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._closed:
            self.close()

    def process(self, rgb: np.ndarray) -> np.ndarray:
        """The frame with every face replaced or covered (same shape and dtype; input untouched)."""
        self._check_open()
        return self._finish(self._replace(rgb, hint_lag=1))

    def stream(self, frames: Iterable[np.ndarray]) -> Generator[tuple[np.ndarray, np.ndarray, FrameResult], None, None]:
        """(input, output, result) for each frame of ``frames``, in order, two frames in flight.

        Tracking and rendering of frame n+1 run in a background thread while the caller's
        thread runs the leak check of frame n, so the two halves use two cores (frames are
        also pulled from ``frames`` in that thread). Output frames and results are those of
        `process` except for one thing: a face the leak check finds in frame n is covered in
        frame n in both, but is handed to the tracker for frame n+2 here instead of n+1; the
        lag is fixed, so the output does not depend on thread timing.

        Close the stream (or the replacer, which closes its open streams) when not iterating
        it to the end: its thread is joined then, and ``frames`` closed in that thread.
        """
        self._check_open()
        stream = self._stream(frames)
        self._streams.add(stream)
        return stream

    def _stream(self, frames: Iterable[np.ndarray]) -> Generator[tuple[np.ndarray, np.ndarray, FrameResult], None, None]:
        done = threading.Condition()
        # Index of the last frame whose leak check is done: every frame given before this
        # stream (by `process` or an earlier stream) is.
        finished = [self._started - 1]
        stopped = threading.Event()

        def replaced() -> Generator[_Replaced, None, None]:
            source = iter(frames)
            try:
                # One frame of look-ahead at the start: a stream of one frame is a still
                # image, which the tracker does not prime (see FaceTracker.still).
                head = list(itertools.islice(source, 2))
                self.tracker.still = self._started == 0 and len(head) == 1
                for rgb in itertools.chain(head, source):
                    index = self._started
                    with done:
                        while finished[0] < index - STREAM_HINT_LAG and not stopped.is_set():
                            done.wait(0.05)
                    if stopped.is_set():
                        return
                    yield self._replace(rgb, hint_lag=STREAM_HINT_LAG)
            finally:
                # A decoding generator is cleaned up here, in the thread that ran it, before
                # the stream ends; not whenever the garbage collector gets to it.
                close = getattr(source, "close", None)
                if close is not None:
                    close()

        work = prefetch(replaced(), depth=STREAM_HINT_LAG - 1, name="faces-track")
        try:
            for item in work:
                out = self._finish(item)
                with done:
                    finished[0] = item.index
                    done.notify_all()
                assert self.last is not None
                yield item.rgb, out, self.last
        finally:
            stopped.set()
            work.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("FaceReplacer is closed")

    def _replace(self, rgb: np.ndarray, hint_lag: int) -> _Replaced:
        """Track, render and cover one frame: everything but the leak check."""
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(
                f"expected an H x W x 3 uint8 RGB frame, got {getattr(rgb, 'shape', None)} "
                f"{getattr(rgb, 'dtype', None)}"
            )
        index = self._started
        self._started += 1
        with self._hints_lock:
            due = [h for h in self._hints if h[0] <= index - hint_lag]
            self._hints = [h for h in self._hints if h[0] > index - hint_lag]
        for _, box in due:
            self.tracker.add_hint(box)
        cuts_before = self.tracker.scene_cuts
        tracked = self.tracker.update(rgb)
        assert self.tracker.frame_index == index
        out = rgb.copy()
        covered = np.zeros(rgb.shape[:2], dtype=np.uint8)
        faces: list[FaceResult] = []
        fallback = False
        conservative = 0

        for face in tracked:
            if face.status != TRACKED:
                continue
            assert face.landmarks is not None           # a tracked face has its mesh
            rendered = self._render(out, rgb, face.landmarks, covered, face.track_id)
            ok = rendered is not None
            if rendered is not None:        # (not `ok`: this narrows the type)
                out = rendered
            else:
                self._cover(out, face.cover, covered, face_height(face.landmarks))
            fallback |= not ok
            faces.append(FaceResult(face.track_id, face.landmarks, face.bbox, TRACKED, not ok,
                                    face.raw_landmarks))

        for face in tracked:
            if face.status not in (LOST, DETECTED):
                continue
            x0, y0, x1, y1 = polygon_bbox(face.cover)
            self._cover(out, face.cover, covered, max(y1 - y0, x1 - x0) / 1.6)
            fallback = True
            conservative += int(face.conservative)
            faces.append(FaceResult(face.track_id, None, face.bbox, face.status, True))
        return _Replaced(index, rgb, out, covered, faces, fallback, conservative,
                         self.tracker.scene_cuts > cuts_before)

    def _finish(self, item: _Replaced) -> np.ndarray:
        """The leak check of one replaced frame, its covers and the report."""
        out, covered, index = item.out, item.covered, item.index
        leaks: list[Leak] = []
        if self.leak_checker is not None:
            leaks = self.leak_checker.find(out, covered, index)
            for leak in leaks:
                x0, y0, x1, y1 = leak.box
                grow = LEAK_GROW * max(x1 - x0, y1 - y0)
                poly = np.array(
                    [[x0 - grow, y0 - grow], [x1 + grow, y0 - grow], [x1 + grow, y1 + grow],
                     [x0 - grow, y1 + grow]], dtype=np.float64,
                )
                self._cover(out, poly, covered, max(x1 - x0, y1 - y0))
            if leaks:
                with self._hints_lock:
                    self._hints.extend((index, leak.box) for leak in leaks)
                log.warning("frame %d: %d face(s) found outside the replaced regions, covered",
                            index, len(leaks))

        rep = self.report
        rep.frames += 1
        rep.face_frames += len(item.faces)
        rep.fallback_frames += int(item.fallback)
        rep.conservative_frames += item.conservative
        rep.leaks += len(leaks)
        rep.leak_frames += int(bool(leaks))
        room = MAX_LEAK_EVENTS - len(rep.leak_events)
        if room > 0:
            rep.leak_events.extend(leaks[:room])
        self.last = FrameResult(
            index=index,
            faces=item.faces,
            fallback=item.fallback,
            leak=bool(leaks),
            leaks=leaks,
            scene_cut=item.scene_cut,
        )
        return out

    def close(self) -> FacesReport:
        if self._closed:
            return self.report
        # A stream left suspended (its consumer failed) still has a thread using the tracker:
        # stop and join it before the tracker's models are closed.
        for stream in list(self._streams):
            stream.close()
        self._closed = True
        self.report.tracks = self.tracker.stats()
        self.report.faces = len(self.report.tracks)
        self.report.scene_cuts = self.tracker.scene_cuts
        self.report.detections_run = self.tracker.detections_run
        self.tracker.close()
        return self.report

    # -- internals ---------------------------------------------------------------------------

    def _render(self, out: np.ndarray, original: np.ndarray, landmarks: np.ndarray,
                covered: np.ndarray, track_id: int = 0) -> np.ndarray | None:
        """The frame with one more tracked face rendered (``out`` itself for a baseline and for
        a renderer that renders in place, else the renderer's new frame: ``out`` is a copy, so
        the original cannot be touched), its hull added to ``covered``; None when the method
        did not replace the face."""
        if self.renderer is None:
            poly = region_polygon(landmarks, forehead=BASELINE_FOREHEAD, margin=BASELINE_MARGIN)
            mask = polygon_mask(poly, out.shape)
            apply_baseline(out, mask, self.method, face_height(landmarks), polygon_bbox(poly, out.shape))
            np.maximum(covered, mask, out=covered)
            return out
        try:
            # ``out`` is already the replacer's own copy of the frame: the renderer may draw
            # into it.
            rendered = self.renderer.render(out, landmarks, track_id=track_id, inplace=True)
        except Exception as exc:  # any renderer failure must end in a cover, not a pass-through
            self.report.renderer_failures += 1
            log.warning("renderer %s failed (%s); face covered by %s", self.method,
                        type(exc).__name__, self.fallback_method)
            return None
        if not isinstance(rendered, np.ndarray) or rendered.shape != out.shape or rendered.dtype != out.dtype:
            self.report.renderer_failures += 1
            log.warning("renderer %s returned a frame of the wrong shape or type", self.method)
            return None
        poly = region_polygon(landmarks)          # covered_region's hull
        # Everything within the hull's box (one pixel wider: polygon_mask grows the polygon by
        # one), not over the whole frame, and with OpenCV rather than boolean indexing (5 ms
        # for a 300 px face against 0.3 ms; this runs on every frame).
        x0, y0, x1, y1 = polygon_bbox(poly, out.shape)
        x0, y0 = max(0, x0 - 1), max(0, y0 - 1)
        x1, y1 = min(out.shape[1], x1 + 1), min(out.shape[0], y1 + 1)
        box_hull = (polygon_mask(poly - np.array([x0, y0]), (y1 - y0, x1 - x0))
                    if x1 > x0 and y1 > y0 else np.zeros((0, 0), np.uint8))
        total = cv2.countNonZero(box_hull) if box_hull.size else 0
        if total:
            diff = cv2.absdiff(rendered[y0:y1, x0:x1], original[y0:y1, x0:x1])
            # Sum of the three channel differences, saturated to 255: exactly 0 where the
            # pixel is bit-identical, >= 1 wherever any channel changed.
            changed = cv2.transform(diff, _CHANNEL_SUM)
            same = total - cv2.countNonZero(cv2.bitwise_and(changed, box_hull))
            if float(same) / total > MAX_UNCHANGED:
                self.report.renderer_failures += 1
                log.warning("renderer %s left its face region unchanged; face covered", self.method)
                return None
        if box_hull.size:
            box = covered[y0:y1, x0:x1]
            np.maximum(box, box_hull, out=box)
        self._claim_changed(rendered, original, landmarks, covered)
        return rendered

    @staticmethod
    def _claim_changed(rendered: np.ndarray, original: np.ndarray, landmarks: np.ndarray,
                       covered: np.ndarray) -> None:
        """Add to ``covered`` what the renderer replaced around its hull (CLAIM_GROW)."""
        grow = CLAIM_GROW * face_height(landmarks)
        x0, y0, x1, y1 = polygon_bbox(region_polygon(landmarks), rendered.shape)
        x0, y0 = max(0, int(x0 - grow)), max(0, int(y0 - grow))
        x1 = min(rendered.shape[1], int(np.ceil(x1 + grow)))
        y1 = min(rendered.shape[0], int(np.ceil(y1 + grow)))
        if x1 <= x0 or y1 <= y0:
            return
        diff = cv2.absdiff(rendered[y0:y1, x0:x1], original[y0:y1, x0:x1])
        changed = cv2.transform(diff, _CHANNEL_SUM)
        claimed = (changed >= CLAIM_MIN_CHANGE).astype(np.uint8)
        box = covered[y0:y1, x0:x1]
        np.maximum(box, claimed, out=box)

    def _cover(self, out: np.ndarray, polygon: np.ndarray, covered: np.ndarray,
               face_size: float) -> None:
        mask = polygon_mask(polygon, out.shape)
        apply_baseline(out, mask, self.fallback_method, face_size, polygon_bbox(polygon, out.shape))
        np.maximum(covered, mask, out=covered)
