"""The face models the tracker needs, behind one small interface.

The tracker knows only `FaceModels` (a detector on whole frames and per-track mesh sessions on
square crops). `MediaPipeFaceModels` implements it with MediaPipe's legacy solutions
(mediapipe 0.10.21 ships the models in its wheel); an ONNX implementation of the same Apache-2.0
models can replace it without touching the tracker. Tests wrap it to simulate failures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

LANDMARK_COUNT = 478


@dataclass(frozen=True)
class FaceBox:
    """A detected face: box (x0, y0, x1, y1) in frame pixels, confidence, and the detector's
    six keypoints (eyes, nose tip, mouth, ear tragions) as 6 x 2 pixels when it gives them."""

    box: tuple[float, float, float, float]
    score: float
    keypoints: np.ndarray | None = None


class MeshSession(Protocol):
    """Landmarks of one face followed over time on square crops centred on it."""

    def landmarks(self, crop: np.ndarray) -> np.ndarray | None:
        """478 x 3 landmarks in crop pixels (z scaled like x), or None when no face is found."""

    def reset(self) -> None:
        """Forget the previous frame (after a scene cut or a jump of the crop)."""

    def close(self) -> None: ...


class FaceModels(Protocol):
    def detect(self, rgb: np.ndarray) -> list[FaceBox]:
        """Faces in a whole RGB frame."""

    def mesh_session(self) -> MeshSession: ...

    def close(self) -> None: ...


# A NormalizedLandmark with only x, y and z set, serialised as an entry of a
# NormalizedLandmarkList: field 1 (length-delimited, 15 bytes), then fields 1-3 as float32.
_LANDMARK_RECORD = np.dtype([("key", "u1"), ("size", "u1"), ("kx", "u1"), ("x", "<f4"),
                             ("ky", "u1"), ("y", "<f4"), ("kz", "u1"), ("z", "<f4")])
_LANDMARK_KEYS = {"key": 0x0A, "size": 15, "kx": 0x0D, "ky": 0x15, "kz": 0x1D}


def landmark_array(landmark_list: object) -> np.ndarray:
    """(N, 3) float64 x, y, z of a MediaPipe NormalizedLandmarkList.

    Read from its serialised form in one NumPy call when every entry has exactly x, y and z
    (the face mesh's case): walking 478 protobuf objects in Python costs 0.3 ms a face and
    frame, holding the GIL the other threads need. Any other layout takes that walk.
    """
    data = landmark_list.SerializeToString()  # type: ignore[attr-defined]
    if data and len(data) % _LANDMARK_RECORD.itemsize == 0:
        rec = np.frombuffer(data, dtype=_LANDMARK_RECORD)
        if all(np.all(rec[k] == v) for k, v in _LANDMARK_KEYS.items()):
            return np.stack([rec["x"], rec["y"], rec["z"]], axis=1).astype(np.float64)
    return np.array([(p.x, p.y, p.z) for p in landmark_list.landmark],  # type: ignore[attr-defined]
                    dtype=np.float64).reshape(-1, 3)


class _MediaPipeMesh:
    def __init__(self, min_confidence: float) -> None:
        import mediapipe as mp

        # Tracking mode: MediaPipe reuses the previous frame's landmarks as the next ROI and
        # runs its own detector only when the face-presence score drops; since our crops keep
        # the face near the same place and size, that ROI stays valid from crop to crop.
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=False,
            max_num_faces=1,
            refine_landmarks=True,
            min_detection_confidence=min_confidence,
            min_tracking_confidence=min_confidence,
        )

    def landmarks(self, crop: np.ndarray) -> np.ndarray | None:
        result = self._mesh.process(np.ascontiguousarray(crop))
        faces = result.multi_face_landmarks
        if not faces:
            return None
        h, w = crop.shape[:2]
        pts = landmark_array(faces[0])
        if pts.shape[0] != LANDMARK_COUNT:
            return None
        pts[:, 0] *= w
        pts[:, 1] *= h
        pts[:, 2] *= w
        return pts

    def reset(self) -> None:
        self._mesh.reset()

    def close(self) -> None:
        self._mesh.close()


class MediaPipeFaceModels:
    """MediaPipe face detection (full-range model) and face mesh with iris (478 points)."""

    def __init__(
        self,
        *,
        detection_confidence: float = 0.5,
        mesh_confidence: float = 0.5,
        model_selection: int = 1,
    ) -> None:
        import mediapipe as mp

        # model_selection=1 is the full-range model: at 720p it finds faces from about 60 px
        # wide, where the short-range model needs about 200 px.
        self._detector = mp.solutions.face_detection.FaceDetection(
            model_selection=model_selection, min_detection_confidence=detection_confidence
        )
        self._mesh_confidence = mesh_confidence

    def detect(self, rgb: np.ndarray) -> list[FaceBox]:
        result = self._detector.process(np.ascontiguousarray(rgb))
        h, w = rgb.shape[:2]
        out = []
        for det in result.detections or []:
            rel = det.location_data.relative_bounding_box
            x0, y0 = rel.xmin * w, rel.ymin * h
            box = (x0, y0, x0 + rel.width * w, y0 + rel.height * h)
            kps = np.array(
                [(k.x * w, k.y * h) for k in det.location_data.relative_keypoints], dtype=np.float64
            )
            out.append(FaceBox(box=box, score=float(det.score[0]), keypoints=kps if len(kps) else None))
        return out

    def mesh_session(self) -> MeshSession:
        return _MediaPipeMesh(self._mesh_confidence)

    def close(self) -> None:
        self._detector.close()
