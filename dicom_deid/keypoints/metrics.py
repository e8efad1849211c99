"""Keypoint invariance: how far the de-identified frames' keypoints moved from the originals'.

    metrics = invariance(original_kps, deid_kps, fallback_frames=n, leak_frames=m)

- face landmark NME: per frame where both have a face, the mean 2D distance over the 478
  landmarks divided by the original's inter-ocular distance (outer eye corners 33 and 263),
  in percent; averaged over those frames (max also reported).
- body keypoint displacement: per frame where both have a pose, the mean 2D distance over the
  pose points the original sees (visibility >= 0.5), in pixels and in percent of the frame
  diagonal; averaged over those frames.
- hand displacement: the same over hands found in both, in pixels.
- face detection retention: of the frames with a face in the original, the share that still
  has one after de-identification, in percent.
- fallback and leak frame counts come from the face stage (FacesReport) and are passed through.

A metric with no frame to measure it on is None (the SR leaves it out).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from dicom_deid.keypoints.points import FACE_EYE_OUTER, FrameKeypoints

VISIBLE = 0.5


@dataclass
class InvarianceMetrics:
    frames: int
    face_frames_original: int = 0
    face_frames_both: int = 0
    face_nme_percent: float | None = None
    face_nme_max_percent: float | None = None
    face_retention_percent: float | None = None
    pose_frames_original: int = 0
    pose_frames_both: int = 0
    body_displacement_px: float | None = None
    body_displacement_percent: float | None = None
    hand_frames_both: int = 0
    hand_displacement_px: float | None = None
    fallback_frames: int = 0
    leak_frames: int = 0

    def as_dict(self) -> dict[str, float | int | None]:
        out = asdict(self)
        for k, v in out.items():
            if isinstance(v, float):
                out[k] = round(v, 4)
        return out


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def face_nme(original: np.ndarray, deid: np.ndarray) -> float | None:
    """NME of one face in percent of the original's inter-ocular distance (None if degenerate)."""
    a, b = FACE_EYE_OUTER
    iod = float(np.linalg.norm(original[a, :2] - original[b, :2]))
    if iod <= 1e-6:
        return None
    err = np.linalg.norm(original[:, :2].astype(np.float64) - deid[:, :2], axis=1)
    return float(err.mean() / iod * 100.0)


def invariance(original_kps: Sequence[FrameKeypoints], deid_kps: Sequence[FrameKeypoints], *,
               fallback_frames: int = 0, leak_frames: int = 0) -> InvarianceMetrics:
    """Compare keypoints measured on original frames with those on the de-identified frames."""
    if len(original_kps) != len(deid_kps):
        raise ValueError(
            f"{len(original_kps)} original frames but {len(deid_kps)} de-identified frames")
    m = InvarianceMetrics(frames=len(original_kps), fallback_frames=int(fallback_frames),
                          leak_frames=int(leak_frames))
    nme: list[float] = []
    body_px: list[float] = []
    body_pct: list[float] = []
    hand_px: list[float] = []
    for i, (o, d) in enumerate(zip(original_kps, deid_kps, strict=True)):
        if (o.width, o.height) != (d.width, d.height):
            raise ValueError(f"frame {i + 1}: original is {o.width}x{o.height} but the "
                             f"de-identified frame is {d.width}x{d.height}")
        if o.face is not None:
            m.face_frames_original += 1
            if d.face is not None:
                m.face_frames_both += 1
                value = face_nme(o.face, d.face)
                if value is not None:
                    nme.append(value)
        if o.pose is not None:
            m.pose_frames_original += 1
            if d.pose is not None:
                m.pose_frames_both += 1
                seen = np.ones(len(o.pose), bool) if o.pose_visibility is None \
                    else o.pose_visibility >= VISIBLE
                if seen.any():
                    dist = np.linalg.norm(o.pose[seen, :2].astype(np.float64)
                                          - d.pose[seen, :2], axis=1).mean()
                    body_px.append(float(dist))
                    body_pct.append(float(dist / np.hypot(o.width, o.height) * 100.0))
        both_hands = False
        for side in ("left_hand", "right_hand"):
            a, b = o.get(side), d.get(side)
            if a is not None and b is not None:
                both_hands = True
                hand_px.append(float(np.linalg.norm(a[:, :2].astype(np.float64) - b[:, :2],
                                                    axis=1).mean()))
        m.hand_frames_both += both_hands
    m.face_nme_percent = _mean(nme)
    m.face_nme_max_percent = max(nme) if nme else None
    if m.face_frames_original:
        m.face_retention_percent = 100.0 * m.face_frames_both / m.face_frames_original
    m.body_displacement_px = _mean(body_px)
    m.body_displacement_percent = _mean(body_pct)
    m.hand_displacement_px = _mean(hand_px)
    return m
