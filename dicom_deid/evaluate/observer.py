"""What the independent models see on one frame: dlib (box, 68 landmarks, descriptor),
MediaPipe face mesh (478), CenterFace boxes, and optionally MediaPipe pose and hands.

Face landmarks are measured on each frame independently; pose and hands (optional) run in
MediaPipe's tracking mode within a capture, so originals and outputs each get their own
Observer. The heavy models are shared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dicom_deid.evaluate.embeddings import DlibFaces
from dicom_deid.faces.models import LANDMARK_COUNT

# CenterFace runs on frames downscaled to this longer side (the leak check's own setting is
# 416; a little more here so the evaluation is at least as sensitive as the pipeline's check).
CENTERFACE_MAX_SIDE = 640
CENTERFACE_THRESHOLD = 0.5


@dataclass
class FrameObs:
    index: int
    dlib_box: tuple[int, int, int, int] | None = None
    dlib68: np.ndarray | None = None
    descriptor: np.ndarray | None = None
    described: bool = False                  # a descriptor was asked for on this frame
    mesh: np.ndarray | None = None           # 478 x 3, the largest face
    meshes: list[np.ndarray] = field(default_factory=list)     # every face, largest first
    dlib68s: list[np.ndarray] = field(default_factory=list)    # every dlib face, largest first
    centerface: list[tuple[float, float, float, float]] = field(default_factory=list)
    pose: np.ndarray | None = None           # 33 x 2, NaN where not visible
    hands: dict[str, np.ndarray] = field(default_factory=dict)   # "Left"/"Right" -> 21 x 2


class StaticMesh:
    """MediaPipe face mesh with iris (478 points), each frame on its own.

    The evaluation measures every frame independently (static image mode): in tracking mode
    the landmarks of a frame depend on the frames before it (on six identical frames they
    move by about 1% of the inter-ocular distance), which would add the tracker's history to
    both NME and jitter. Same model and settings as dicom_deid/faces/models.py otherwise.
    """

    def __init__(self, min_confidence: float = 0.5, max_faces: int = 4) -> None:
        import mediapipe as mp

        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=max_faces, refine_landmarks=True,
            min_detection_confidence=min_confidence,
        )

    def landmarks(self, rgb: np.ndarray) -> list[np.ndarray]:
        """478 x 3 pixels (z scaled like x) for every face found, largest first."""
        result = self._mesh.process(np.ascontiguousarray(rgb))
        h, w = rgb.shape[:2]
        faces = []
        for face in result.multi_face_landmarks or []:
            pts = np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float64)
            if pts.shape[0] != LANDMARK_COUNT:
                continue
            pts[:, 0] *= w
            pts[:, 1] *= h
            pts[:, 2] *= w
            faces.append(pts)
        return sorted(faces, key=lambda p: -float(np.prod(np.ptp(p[:, :2], axis=0))))

    def close(self) -> None:
        self._mesh.close()


class Models:
    """The models shared by every Observer of a run (loaded once)."""

    def __init__(self, *, body: bool = False, upsample: int | None = None) -> None:
        from dicom_deid.faces.centerface import CenterFace

        self.dlib = DlibFaces()
        self.upsample = upsample
        self.mesh = StaticMesh()
        # The float model: the measurement stays the same whichever model the product uses.
        self.centerface = CenterFace(precision="float")
        self.body = body

    def dlib_upsample(self, rgb: np.ndarray) -> int:
        # dlib's HOG detector finds faces from about 80 px; small frames get one 2x upsample
        # (4x the cost) so that faces in 360x288 clips are found.
        if self.upsample is not None:
            return self.upsample
        return 1 if max(rgb.shape[:2]) <= 400 else 0

    def close(self) -> None:
        self.mesh.close()


class Observer:
    def __init__(self, models: Models) -> None:
        self.models = models
        # MediaPipe's solutions (untyped); None without the body models.
        self._pose: Any = None
        self._hands: Any = None
        if models.body:
            import mediapipe as mp

            self._pose = mp.solutions.pose.Pose(static_image_mode=False, model_complexity=1)
            self._hands = mp.solutions.hands.Hands(static_image_mode=False, max_num_hands=2)

    def start(self) -> None:
        """A new capture begins: forget the previous frame's tracking state (pose, hands)."""
        if self._pose is not None:
            self._pose.reset()
            self._hands.reset()

    def observe(self, rgb: np.ndarray, index: int, *, descriptor: bool, landmarks: bool = True,
                centerface: bool = False) -> FrameObs:
        rgb = np.ascontiguousarray(rgb)
        obs = FrameObs(index=index, described=descriptor)
        if descriptor or landmarks:
            dl = self.models.dlib
            dl.upsample = self.models.dlib_upsample(rgb)
            faces = dl.analyse_all(rgb, descriptor=descriptor)
            if faces:
                obs.dlib_box, obs.dlib68, obs.descriptor = (
                    faces[0].box, faces[0].landmarks68, faces[0].descriptor)
                obs.dlib68s = [f.landmarks68 for f in faces]
        if landmarks:
            obs.meshes = self.models.mesh.landmarks(rgb)
            obs.mesh = obs.meshes[0] if obs.meshes else None
        if centerface:
            dets = self.models.centerface.detect(rgb, threshold=CENTERFACE_THRESHOLD,
                                                 max_side=CENTERFACE_MAX_SIDE)
            obs.centerface = [d.box for d in dets]
        if self._pose is not None and landmarks:
            self._body(rgb, obs)
        return obs

    def _body(self, rgb: np.ndarray, obs: FrameObs) -> None:
        h, w = rgb.shape[:2]
        res = self._pose.process(rgb)
        if res.pose_landmarks:
            pts = np.array([(p.x * w, p.y * h, p.visibility) for p in res.pose_landmarks.landmark])
            pose = pts[:, :2].copy()
            pose[pts[:, 2] < 0.5] = np.nan
            obs.pose = pose
        res = self._hands.process(rgb)
        for lms, handed in zip(res.multi_hand_landmarks or [], res.multi_handedness or [],
                               strict=False):
            label = handed.classification[0].label
            obs.hands[label] = np.array([(p.x * w, p.y * h) for p in lms.landmark])

    def close(self) -> None:
        if self._pose is not None:
            self._pose.close()
            self._hands.close()

