"""Find and follow every face: detection on a schedule, mesh on crops every frame.

Per frame, each live track runs the face mesh on a square crop around where the face is
expected (upscaled, so a 60 px face gets the same detail as a large one, and downscaled, so a
full-frame face costs no more). The whole-frame detector runs every `detect_interval` frames,
on every frame while no face is tracked, after a scene cut, and whenever a track misses; its
boxes start new tracks and re-seed lost ones. Landmarks are smoothed with a One Euro filter.

A track whose face is not found is kept as *lost* and reported with the region where the face
was last seen, so the caller can cover it (fail closed). It is ended only after `hold_s` seconds
without any evidence of a face there; evidence is a detector box over it, or the optional
independent `evidence` check on the input crop. While evidence keeps coming the track stays
lost and covered for as long as it lasts (reported as `conservative`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from dicom_deid.faces.models import LANDMARK_COUNT, FaceBox, FaceModels, MeshSession
from dicom_deid.faces.region import (
    BASELINE_FOREHEAD,
    BASELINE_MARGIN,
    face_height,
    grow_polygon,
    polygon_bbox,
    region_polygon,
)
from dicom_deid.faces.scenecut import SceneCutDetector
from dicom_deid.faces.shrink import shrink
from dicom_deid.faces.smoothing import LandmarkSmoother

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]
EvidenceCheck = Callable[[np.ndarray, Box], bool]

TRACKED, LOST, DETECTED = "tracked", "lost", "detected"


@dataclass
class TrackerConfig:
    max_faces: int = 4
    detect_interval: int = 5          # frames between whole-frame detections while tracking
    crop_size: int = 256              # side of the square crop the mesh sees
    crop_scale: float = 2.0           # crop side / face size (landmark box)
    hold_s: float = 1.0               # how long a lost face stays covered without evidence
    max_lag: float = 0.02             # smoothed landmarks stay within this x face height of raw
    lost_growth_per_s: float = 0.6    # cover grows by this x face height per second lost
    lost_growth_max: float = 1.0
    smoothing: bool = True
    min_cutoff: float = 1.5
    beta: float = 8.0
    prime_passes: int = 3             # extra mesh passes on a new track's first frame


@dataclass
class TrackedFace:
    """One face in one frame, in pixels of that (original) frame."""

    track_id: int
    status: str                         # tracked | lost | detected (box only, no mesh)
    landmarks: np.ndarray | None        # 478 x 3, smoothed (what is rendered)
    raw_landmarks: np.ndarray | None    # 478 x 3 as measured this frame
    bbox: tuple[int, int, int, int]     # x0, y0, x1, y1 (exclusive)
    cover: np.ndarray                   # polygon to cover when not rendered (lost/detected)
    lost_frames: int = 0
    conservative: bool = False


@dataclass
class TrackStats:
    track_id: int
    first_frame: int
    last_frame: int
    tracked_frames: int = 0
    lost_frames: int = 0
    longest_loss: int = 0
    conservative_frames: int = 0


@dataclass
class _Track:
    id: int
    session: MeshSession
    smoother: LandmarkSmoother
    raw: np.ndarray
    smoothed: np.ndarray
    face_h: float
    centre: np.ndarray
    size: float
    velocity: np.ndarray
    last_polygon: np.ndarray
    stats: TrackStats
    lost: int = 0
    last_evidence: int = 0
    seen_now: bool = False
    loss_run: int = 0
    extra: dict = field(default_factory=dict)


def _box_of(points: np.ndarray) -> Box:
    x0, y0 = points[:, 0].min(), points[:, 1].min()
    x1, y1 = points[:, 0].max(), points[:, 1].max()
    return float(x0), float(y0), float(x1), float(y1)


def _area(box: Box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def _intersection(a: Box, b: Box) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(0.0, w) * max(0.0, h)


def iou(a: Box, b: Box) -> float:
    inter = _intersection(a, b)
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def box_polygon(box: Box, grow: float = 0.0) -> np.ndarray:
    """Rectangle polygon of a box grown by `grow` x its larger side on every side."""
    x0, y0, x1, y1 = box
    pad = grow * max(x1 - x0, y1 - y0)
    return np.array(
        [[x0 - pad, y0 - pad], [x1 + pad, y0 - pad], [x1 + pad, y1 + pad], [x0 - pad, y1 + pad]],
        dtype=np.float64,
    )


class FaceTracker:
    def __init__(
        self,
        models: FaceModels | None = None,
        *,
        fps: float = 25.0,
        config: TrackerConfig | None = None,
        evidence: EvidenceCheck | None = None,
    ) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if models is None:
            from dicom_deid.onnx_device import ModelSettings

            models = ModelSettings().face_models()
        self.models = models
        self.fps = float(fps)
        self.config = config or TrackerConfig()
        self.evidence = evidence
        self.frame_index = -1
        self.scene_cuts = 0
        self.detections_run = 0
        self._tracks: list[_Track] = []
        self._ended: list[TrackStats] = []
        self._next_id = 1
        self._last_detection = -(10**9)
        self._hints: list[Box] = []
        self._force_detection = False
        self._cut = SceneCutDetector()
        self._spare_sessions: list[MeshSession] = []
        # A single still image: no later frame to settle toward, so no priming (FaceReplacer
        # sets it when its stream ends after one frame). Primed landmarks on London stills
        # raised the recogniser's rank-1 on swap (3.9 -> 6.5 % pooled).
        self.still = False

    # -- public ------------------------------------------------------------------------------

    def add_hint(self, box: Box) -> None:
        """A face box found by someone else (the leak check) to try on the next frame."""
        x0, y0, x1, y1 = (float(v) for v in box)
        self._hints.append((x0, y0, x1, y1))

    def update(self, rgb: np.ndarray) -> list[TrackedFace]:
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an H x W x 3 uint8 RGB frame, got {rgb.shape} {rgb.dtype}")
        self.frame_index += 1
        t = self.frame_index / self.fps
        cfg = self.config

        cut = self._cut(rgb)
        if cut:
            self.scene_cuts += 1
            for tr in self._tracks:
                tr.session.reset()
                tr.smoother.reset()
                tr.velocity[:] = 0.0

        for tr in self._tracks:
            tr.seen_now = False
            lm = self._mesh(tr.session, rgb, self._predicted_crop(tr), expect=tr)
            if lm is not None:
                self._observe(tr, lm, t)

        missing = any(not tr.seen_now for tr in self._tracks)
        due = self.frame_index - self._last_detection >= max(1, cfg.detect_interval)
        detect = (
            cut or missing or due or not self._tracks or self._force_detection or bool(self._hints)
        )
        self._force_detection = False
        box_only: list[FaceBox] = []
        if detect:
            boxes = self.models.detect(rgb)
            self.detections_run += 1
            self._last_detection = self.frame_index
            boxes += [FaceBox(box=h, score=0.0) for h in self._hints]
            box_only = self._associate(rgb, boxes, t)
        self._hints = []

        self._dedupe()
        faces: list[TrackedFace] = []
        for tr in list(self._tracks):
            if tr.seen_now:
                faces.append(self._tracked_face(tr))
                continue
            tr.lost += 1
            tr.loss_run += 1
            tr.stats.lost_frames += 1
            tr.stats.longest_loss = max(tr.stats.longest_loss, tr.loss_run)
            hold = max(1, round(cfg.hold_s * self.fps))
            cover = self._lost_cover(tr)
            if tr.last_evidence < self.frame_index and self.evidence is not None:
                x0, y0, x1, y1 = polygon_bbox(cover, rgb.shape)
                if x1 > x0 and y1 > y0 and self.evidence(rgb, (x0, y0, x1, y1)):
                    tr.last_evidence = self.frame_index
            if tr.lost > hold and self.frame_index - tr.last_evidence >= hold:
                self._end(tr)
                continue
            conservative = tr.lost > hold
            if conservative:
                tr.stats.conservative_frames += 1
            tr.stats.last_frame = self.frame_index
            faces.append(
                TrackedFace(
                    track_id=tr.id,
                    status=LOST,
                    landmarks=None,
                    raw_landmarks=None,
                    bbox=polygon_bbox(cover, rgb.shape),
                    cover=cover,
                    lost_frames=tr.lost,
                    conservative=conservative,
                )
            )
        for fb in box_only:
            # A face the detector sees but the mesh cannot follow (or one over max_faces):
            # cover its box this frame and look again next frame.
            self._force_detection = True
            cover = box_polygon(fb.box, grow=0.25)
            faces.append(
                TrackedFace(
                    track_id=0,
                    status=DETECTED,
                    landmarks=None,
                    raw_landmarks=None,
                    bbox=polygon_bbox(cover, rgb.shape),
                    cover=cover,
                )
            )
        return faces

    def stats(self) -> list[TrackStats]:
        """Per-track statistics, ended and live tracks, by track id."""
        return sorted(self._ended + [tr.stats for tr in self._tracks], key=lambda s: s.track_id)

    def close(self) -> None:
        for tr in self._tracks:
            self._ended.append(tr.stats)
            tr.session.close()
        self._tracks = []
        for session in self._spare_sessions:
            session.close()
        self._spare_sessions = []
        self.models.close()

    # -- internals ---------------------------------------------------------------------------

    def _crop(self, rgb: np.ndarray, cx: float, cy: float, side: float) -> tuple[np.ndarray, float, float, float]:
        size = self.config.crop_size
        s = size / max(side, 1.0)
        x0, y0 = cx - side / 2.0, cy - side / 2.0
        matrix = np.array([[s, 0.0, -s * x0], [0.0, s, -s * y0]], dtype=np.float64)
        interp = cv2.INTER_AREA if s < 0.7 else cv2.INTER_LINEAR
        if s < 0.7:
            # warpAffine has no area filter; shrink the region first so that a full-frame face
            # is not aliased on its way to a 256 px crop.
            bx0, by0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
            bx1 = min(rgb.shape[1], int(np.ceil(x0 + side)))
            by1 = min(rgb.shape[0], int(np.ceil(y0 + side)))
            crop = np.zeros((size, size, 3), np.uint8)
            if bx1 > bx0 and by1 > by0:
                # floor() puts the region's first pixel up to one pixel before x0, y0, which
                # rounds to -1 in the crop: clamp to the crop.
                tx0 = min(size - 1, max(0, int(round((bx0 - x0) * s))))
                ty0 = min(size - 1, max(0, int(round((by0 - y0) * s))))
                tw = max(1, min(size - tx0, int(round((bx1 - bx0) * s))))
                th = max(1, min(size - ty0, int(round((by1 - by0) * s))))
                part = shrink(rgb[by0:by1, bx0:bx1], (tw, th))
                crop[ty0:ty0 + th, tx0:tx0 + tw] = part
                # Map back with the exact scale of the resized part.
                return crop, bx0 - tx0 * (bx1 - bx0) / tw, by0 - ty0 * (by1 - by0) / th, (bx1 - bx0) / tw
            return crop, x0, y0, 1.0 / s
        crop = cv2.warpAffine(rgb, matrix, (size, size), flags=interp, borderMode=cv2.BORDER_CONSTANT)
        return crop, x0, y0, 1.0 / s

    def _mesh(
        self,
        session: MeshSession,
        rgb: np.ndarray,
        crop: tuple[float, float, float],
        *,
        expect: _Track | None = None,
        box: Box | None = None,
    ) -> np.ndarray | None:
        cx, cy, side = crop
        image, ox, oy, unit = self._crop(rgb, cx, cy, side)
        lm = session.landmarks(image)
        if lm is None or lm.shape != (LANDMARK_COUNT, 3) or not np.all(np.isfinite(lm)):
            return None
        pts = lm.astype(np.float64).copy()
        pts[:, 0] = ox + pts[:, 0] * unit
        pts[:, 1] = oy + pts[:, 1] * unit
        pts[:, 2] = pts[:, 2] * unit
        x0, y0, x1, y1 = _box_of(pts)
        size = max(x1 - x0, y1 - y0)
        centre = np.array([(x0 + x1) / 2.0, (y0 + y1) / 2.0])
        # The mesh always answers with *a* face near where it looked; accept it only when it is
        # the face we are following (or the box we were given), not a neighbour or a guess.
        if expect is not None:
            ratio = size / max(expect.size, 1.0)
            moved = np.linalg.norm(centre - (expect.centre + expect.velocity)) / max(expect.size, 1.0)
            if not 0.5 <= ratio <= 2.0 or moved > 0.6:
                return None
        if box is not None:
            bw, bh = box[2] - box[0], box[3] - box[1]
            bc = np.array([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0])
            ratio = size / max(bw, bh, 1.0)
            if not 0.6 <= ratio <= 3.5 or np.linalg.norm(centre - bc) > 0.6 * max(bw, bh, 1.0):
                return None
        return pts

    def _predicted_crop(self, tr: _Track) -> tuple[float, float, float]:
        centre = tr.centre + tr.velocity * (1 + tr.lost)
        return float(centre[0]), float(centre[1]), tr.size * self.config.crop_scale

    def _observe(self, tr: _Track, lm: np.ndarray, t: float) -> None:
        cfg = self.config
        x0, y0, x1, y1 = _box_of(lm)
        centre = np.array([(x0 + x1) / 2.0, (y0 + y1) / 2.0])
        if tr.lost == 0 and tr.stats.tracked_frames > 0:
            tr.velocity = 0.5 * tr.velocity + 0.5 * (centre - tr.centre)
        else:
            tr.velocity = np.zeros(2)
            tr.smoother.reset()
        tr.centre = centre
        tr.size = max(x1 - x0, y1 - y0)
        tr.raw = lm
        tr.face_h = face_height(lm)
        if cfg.smoothing:
            smoothed = tr.smoother(lm, t, scale=tr.face_h)
            lag = cfg.max_lag * tr.face_h
            # Keep the rendered face within `max_lag` of the measured one: a lagging hull
            # would uncover the leading edge of a moving face.
            smoothed = lm + np.clip(smoothed - lm, -lag, lag)
            tr.smoother.snap(smoothed, t)
        else:
            smoothed = lm.copy()
        tr.smoothed = smoothed
        tr.last_polygon = region_polygon(smoothed, forehead=BASELINE_FOREHEAD, margin=BASELINE_MARGIN)
        tr.lost = 0
        tr.loss_run = 0
        tr.seen_now = True
        tr.last_evidence = self.frame_index
        tr.stats.tracked_frames += 1
        tr.stats.last_frame = self.frame_index

    def _tracked_face(self, tr: _Track) -> TrackedFace:
        bx = _box_of(tr.smoothed)
        return TrackedFace(
            track_id=tr.id,
            status=TRACKED,
            landmarks=tr.smoothed.copy(),
            raw_landmarks=tr.raw.copy(),
            bbox=(int(np.floor(bx[0])), int(np.floor(bx[1])), int(np.ceil(bx[2])) + 1, int(np.ceil(bx[3])) + 1),
            cover=tr.last_polygon,
        )

    def _lost_cover(self, tr: _Track) -> np.ndarray:
        cfg = self.config
        seconds = tr.lost / self.fps
        grow = min(cfg.lost_growth_max, cfg.lost_growth_per_s * seconds) * tr.face_h
        # Shift along the last known motion, capped at one face, then grow with time.
        shift = tr.velocity * min(tr.lost, max(1.0, self.fps / 4.0))
        return grow_polygon(tr.last_polygon + shift, grow) if grow > 0 else tr.last_polygon + shift

    def _session(self) -> MeshSession:
        if self._spare_sessions:
            session = self._spare_sessions.pop()
            session.reset()
            return session
        return self.models.mesh_session()

    def _associate(self, rgb: np.ndarray, boxes: list[FaceBox], t: float) -> list[FaceBox]:
        """Match detector boxes to tracks; start tracks; return boxes nobody could mesh."""
        leftovers: list[FaceBox] = []
        for fb in sorted(boxes, key=lambda b: -b.score):
            if _area(fb.box) <= 1.0:
                continue
            best, best_overlap = None, 0.0
            for tr in self._tracks:
                region = _box_of(self._lost_cover(tr)) if not tr.seen_now else _box_of(tr.raw)
                overlap = _intersection(fb.box, region) / _area(fb.box)
                if overlap > best_overlap:
                    best, best_overlap = tr, overlap
            if best is not None and best_overlap >= 0.3:
                best.last_evidence = self.frame_index
                if best.seen_now:
                    continue
                best.session.reset()
                lm = self._mesh(best.session, rgb, self._box_crop(fb.box), box=fb.box)
                if lm is not None:
                    self._observe(best, self._prime(best.session, rgb, lm), t)
                else:
                    leftovers.append(fb)
                continue
            if any(_intersection(fb.box, _box_of(tr.raw)) / _area(fb.box) >= 0.3
                   for tr in self._tracks if tr.seen_now):
                continue
            if len(self._tracks) >= self.config.max_faces:
                leftovers.append(fb)
                continue
            session = self._session()
            lm = self._mesh(session, rgb, self._box_crop(fb.box), box=fb.box)
            if lm is None:
                self._spare_sessions.append(session)
                if fb.score > 0.0:
                    leftovers.append(fb)
                continue
            self._start(session, self._prime(session, rgb, lm), t)
        return leftovers

    def _box_crop(self, box: Box) -> tuple[float, float, float]:
        x0, y0, x1, y1 = box
        # Detector boxes run from the brows to the mouth; the landmark box is about 1.3x taller
        # and centred a little higher, so the crop is centred up and sized from the box.
        w, h = x1 - x0, y1 - y0
        side = max(w, h) * 1.3 * self.config.crop_scale
        return (x0 + x1) / 2.0, (y0 + y1) / 2.0 - 0.1 * h, side

    def _prime(self, session: MeshSession, rgb: np.ndarray, lm: np.ndarray) -> np.ndarray:
        """A new track's first landmarks, meshed again on the same frame from crops placed by
        the landmarks themselves (as every later frame is), until MediaPipe's own ROI has
        settled. The first pass starts from the detector's box and MediaPipe's detector; the
        next frames moved by 2-3 % of the inter-ocular distance each while both settled (GRID
        lbax4n, three frames; 0.6-1 % afterwards), and the swap showed it as flicker in the
        first frames of every clip."""
        if self.still:
            return lm
        for _ in range(max(0, self.config.prime_passes)):
            x0, y0, x1, y1 = _box_of(lm)
            crop = ((x0 + x1) / 2.0, (y0 + y1) / 2.0, max(x1 - x0, y1 - y0) * self.config.crop_scale)
            again = self._mesh(session, rgb, crop, box=(x0, y0, x1, y1))
            if again is None:
                break
            lm = again
        return lm

    def _start(self, session: MeshSession, lm: np.ndarray, t: float) -> None:
        x0, y0, x1, y1 = _box_of(lm)
        cfg = self.config
        tr = _Track(
            id=self._next_id,
            session=session,
            smoother=LandmarkSmoother(cfg.min_cutoff, cfg.beta),
            raw=lm,
            smoothed=lm,
            face_h=face_height(lm),
            centre=np.array([(x0 + x1) / 2.0, (y0 + y1) / 2.0]),
            size=max(x1 - x0, y1 - y0),
            velocity=np.zeros(2),
            last_polygon=region_polygon(lm, forehead=BASELINE_FOREHEAD, margin=BASELINE_MARGIN),
            stats=TrackStats(track_id=self._next_id, first_frame=self.frame_index, last_frame=self.frame_index),
        )
        self._next_id += 1
        self._tracks.append(tr)
        self._observe(tr, lm, t)
        log.debug("track %d started at frame %d", tr.id, self.frame_index)

    def _dedupe(self) -> None:
        """Two tracks on one face (a re-detected face next to its lost track): keep the older."""
        seen = [tr for tr in self._tracks if tr.seen_now]
        for i, a in enumerate(seen):
            for b in seen[i + 1:]:
                if b in self._tracks and a in self._tracks and iou(_box_of(a.raw), _box_of(b.raw)) > 0.5:
                    self._end(b if b.id > a.id else a)

    def _end(self, tr: _Track) -> None:
        self._tracks.remove(tr)
        self._ended.append(tr.stats)
        self._spare_sessions.append(tr.session)
        log.debug("track %d ended at frame %d", tr.id, self.frame_index)
