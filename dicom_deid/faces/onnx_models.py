"""`OnnxFaceModels`: MediaPipe's face models on ONNX Runtime, behind the tracker's interface.

The models are MediaPipe 0.10.21's own, converted by scripts/convert_models.py (models/mp_*.onnx);
the steps around them are MediaPipe's (faces/mp_geometry.py):

- detect(): the full-range detector (192 x 192, letterboxed whole frame), as
  `mp.solutions.face_detection.FaceDetection(model_selection=1)`.
- mesh_session(): FaceMesh in tracking mode (static_image_mode=False, one face). The
  short-range detector finds the face on a crop only while no face is followed; otherwise the
  region comes from the previous frame's landmarks. The default refinement runs MediaPipe's
  refined mesh itself (face_landmark_with_attention, its three custom TFLite ops re-done in
  standard ONNX by the conversion): the same 478 points as FaceMesh(refine_landmarks=True).
  "iris" is the plain mesh with iris_landmark on each eye (an approximation, 1.5 % of the
  inter-ocular distance from it), "none" the plain 468 points.
"""

from __future__ import annotations

import numpy as np

from dicom_deid.faces import mp_geometry as geo
from dicom_deid.faces.models import LANDMARK_COUNT, FaceBox, MeshSession
from dicom_deid.onnx_device import BundledModel

FULL_RANGE = "mp_face_detection_full.onnx"
SHORT_RANGE = "mp_face_detection_short.onnx"
FACE_LANDMARK = "mp_face_landmark.onnx"
IRIS_LANDMARK = "mp_iris_landmark.onnx"
ATTENTION_LANDMARK = "mp_face_landmark_attention.onnx"
MODEL_FILES = (FULL_RANGE, SHORT_RANGE, FACE_LANDMARK, IRIS_LANDMARK, ATTENTION_LANDMARK)

# Where the iris model's 71 eye-contour points go in the mesh, for the eye whose corners are
# 33/133 (its crop as is); the other eye (362/263, its crop mirrored) takes the mirrored
# indices. The same tables as MediaPipe's LandmarksRefinement of the attention mesh.
EYE_A = (33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173,
         130, 25, 110, 24, 23, 22, 26, 112, 243, 247, 30, 29, 27, 28, 56, 190,
         226, 31, 228, 229, 230, 231, 232, 233, 244, 113, 225, 224, 223, 222, 221, 189,
         35, 124, 46, 53, 52, 65, 143, 111, 117, 118, 119, 120, 121, 128, 245,
         156, 70, 63, 105, 66, 107, 55, 193)
EYE_B = (263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398,
         359, 255, 339, 254, 253, 252, 256, 341, 463, 467, 260, 259, 257, 258, 286, 414,
         446, 261, 448, 449, 450, 451, 452, 453, 464, 342, 445, 444, 443, 442, 441, 413,
         265, 353, 276, 283, 282, 295, 372, 340, 346, 347, 348, 349, 350, 357, 465,
         383, 300, 293, 334, 296, 336, 285, 417)
LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270,
        409, 78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 191, 80, 81, 82, 13, 312, 311,
        310, 415, 76, 77, 90, 180, 85, 16, 315, 404, 320, 307, 306, 184, 74, 73, 72, 11, 302,
        303, 304, 408, 62, 96, 89, 179, 86, 15, 316, 403, 319, 325, 292, 183, 42, 41, 38, 12,
        268, 271, 272, 407)
# The first 16 of each table are the eye's contour; an iris takes their mean depth.
CONTOUR = 16
# Only the eye contours take the iris model's points: its outer rings and brows (the rest of
# each table) are further from the attention mesh's than face_landmark's own (London photos:
# NME against the attention mesh 1.73 % of the inter-ocular distance with all 71, 1.46 % with 16).
REFINED = CONTOUR
# The iris model names the iris edges of the eye it sees; on the mirrored crop left and right
# edges trade places.
IRIS_MIRROR = [0, 3, 2, 1, 4]
IRIS_A, IRIS_B = 468, 473
EYE_A_CORNERS, EYE_B_CORNERS = (33, 133), (362, 263)
# The same tables as index arrays, made once (a tuple indexes anew at every call): the
# attention mesh's lips and eyes in its output order, and each eye's contour.
_REFINED_XY = np.array(LIPS + EYE_A + EYE_B)
_CONTOUR_A, _CONTOUR_B = np.array(EYE_A[:CONTOUR]), np.array(EYE_B[:CONTOUR])
# FaceLandmarkLandmarksToRoi turns the next region by the line through these two points.
ROI_START, ROI_END = 33, 263
REFINEMENTS = ("attention", "iris", "none")

# One intra-op thread per session, as the leak check's detector: these small networks gain
# little from a second thread, and on a busy CPU (decoder, encoder, other workers) the threads
# wait for each other (benchmarks/onnx_vs_mediapipe.py on 2 shared cores: refined mesh 22.6 ms
# wall with one thread against 39.7 ms with onnxruntime's default of two).
DEFAULT_THREADS = 1

_SHORT_ANCHORS = geo.ssd_anchor_centres(128, (8, 16), (2, 6))
_FULL_ANCHORS = geo.ssd_anchor_centres(192, (4,), (1,))


class _Detector:
    def __init__(self, model: BundledModel, size: int, anchors: np.ndarray, min_score: float) -> None:
        self.model, self.size, self.anchors, self.min_score = model, size, anchors, min_score

    def __call__(self, rgb: np.ndarray) -> geo.Detections:
        """Faces in the whole image, best first, normalised by the image."""
        h, w = rgb.shape[:2]
        rect = geo.letterbox_rect(w, h)
        image = geo.crop(rgb, rect, self.size, zero_border=True)
        raw, logits = self.model(geo.image_tensor(image, -1.0, 1.0))
        dets = geo.decode(raw, logits, self.anchors, float(self.size), self.min_score, 6)
        return geo.project_box(geo.weighted_nms(dets), rect)


class _Shared:
    """The sessions one OnnxFaceModels and all its mesh sessions use (each made on first use)."""

    def __init__(self, device: str, threads: int | None, detection_confidence: float) -> None:
        self.device, self.threads = device, threads
        self.full = _Detector(BundledModel(FULL_RANGE, device, threads), 192, _FULL_ANCHORS,
                              detection_confidence)
        self._models: dict[str, BundledModel] = {}

    def model(self, name: str) -> BundledModel:
        if name not in self._models:
            self._models[name] = BundledModel(name, self.device, self.threads)
        return self._models[name]

    def short(self, min_score: float) -> _Detector:
        return _Detector(self.model(SHORT_RANGE), 128, _SHORT_ANCHORS, min_score)


def _sigmoid(logit: np.ndarray) -> float:
    return 1.0 / (1.0 + float(np.exp(-float(logit.reshape(-1)[0]))))


class OnnxMesh:
    """FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=...) on ONNX.

    refinement "attention": MediaPipe's refined mesh itself (478 points); "iris": the plain
    mesh with the iris model on each eye (478); "none": the plain mesh (468).
    """

    def __init__(self, shared: _Shared, min_confidence: float,
                 refinement: str = "attention") -> None:
        if refinement not in REFINEMENTS:
            raise ValueError(f"refinement must be one of {REFINEMENTS}, got {refinement!r}")
        self._shared = shared
        self._refinement = refinement
        self._detector = shared.short(min_confidence)
        self._min_confidence = float(min_confidence)
        self._rect: geo.Rect | None = None
        # The mesh model's input, written anew each frame (mp_geometry.image_tensor's out)
        self._tensor = np.empty((1, 3, 192, 192) if refinement == "attention" else
                                (1, 192, 192, 3), np.float32)

    def landmarks(self, crop: np.ndarray) -> np.ndarray | None:
        h, w = crop.shape[:2]
        rect = self._rect
        if rect is None:
            dets = self._detector(crop)
            if not len(dets):
                return None
            kps = dets.keypoints[0]
            rect = geo.expand(geo.box_rect(dets.boxes[0], kps[0], kps[1], w, h), w, h, 1.5)
        points = self._mesh(crop, rect)
        if points is None:
            self._rect = None
            return None
        self._rect = geo.expand(geo.points_rect(points, ROI_START, ROI_END, w, h), w, h, 1.5)
        out = self._refine(crop, points) if self._refinement == "iris" else points
        out[:, 0] *= w
        out[:, 1] *= h
        out[:, 2] *= w
        return out

    def _mesh(self, rgb: np.ndarray, rect: geo.Rect) -> np.ndarray | None:
        """The mesh in the image, normalised (468 or, from the attention model, 478)."""
        image = geo.crop(rgb, rect, 192)
        if self._refinement != "attention":
            raw, flag = self._shared.model(FACE_LANDMARK)(
                geo.image_tensor(image, 0.0, 1.0, out=self._tensor))
            if _sigmoid(flag) < self._min_confidence:
                return None
            return geo.project(raw.reshape(-1, 3).astype(np.float64) / 192.0, rect)
        # The attention mesh takes NCHW (scripts/convert_models.py: its input transpose dropped)
        mesh, lips, eye_a, eye_b, iris_a, iris_b, flag = self._shared.model(ATTENTION_LANDMARK)(
            geo.image_tensor(image, 0.0, 1.0, channels_first=True, out=self._tensor))
        if _sigmoid(flag) < self._min_confidence:
            return None
        # LandmarksRefinement: the lips and eyes replace x and y (depth stays the mesh's),
        # each iris takes its eye contour's mean depth.
        out = np.empty((LANDMARK_COUNT, 3), dtype=np.float64)
        out[:468] = mesh.reshape(-1, 3)
        out[_REFINED_XY, :2] = np.concatenate([lips.reshape(-1, 2), eye_a.reshape(-1, 2),
                                               eye_b.reshape(-1, 2)])
        out[IRIS_A:IRIS_A + 5, :2] = iris_a.reshape(-1, 2)
        out[IRIS_B:IRIS_B + 5, :2] = iris_b.reshape(-1, 2)
        out[IRIS_A:IRIS_A + 5, 2] = out[_CONTOUR_A, 2].mean()
        out[IRIS_B:IRIS_B + 5, 2] = out[_CONTOUR_B, 2].mean()
        return geo.project(out / 192.0, rect)

    def _eye(self, rgb: np.ndarray, points: np.ndarray, corners: tuple[int, int],
             mirrored: bool) -> tuple[np.ndarray, np.ndarray]:
        h, w = rgb.shape[:2]
        rect = geo.expand(geo.points_rect(points[list(corners)], 0, 1, w, h), w, h, 2.3)
        image = geo.crop(rgb, rect, 64, flip=mirrored)
        contour, iris = self._shared.model(IRIS_LANDMARK)(geo.image_tensor(image, 0.0, 1.0))
        both = np.concatenate([contour.reshape(-1, 3), iris.reshape(-1, 3)]).astype(np.float64)
        if mirrored:
            both[:, 0] = 64.0 - both[:, 0]
        projected = geo.project(both / 64.0, rect)
        return projected[:71], projected[71:]

    def _refine(self, rgb: np.ndarray, mesh: np.ndarray) -> np.ndarray:
        out = np.empty((LANDMARK_COUNT, 3), dtype=np.float64)
        out[:468] = mesh
        for corners, table, first, mirrored in ((EYE_A_CORNERS, EYE_A, IRIS_A, False),
                                                (EYE_B_CORNERS, EYE_B, IRIS_B, True)):
            contour, iris = self._eye(rgb, mesh, corners, mirrored)
            index = list(table)
            out[index[:REFINED], :2] = contour[:REFINED, :2]        # depth stays the mesh's
            if mirrored:
                iris = iris[IRIS_MIRROR]
            out[first:first + 5, :2] = iris[:, :2]
            out[first:first + 5, 2] = mesh[index[:CONTOUR], 2].mean()
        return out

    def reset(self) -> None:
        self._rect = None

    def close(self) -> None:
        self._rect = None


class OnnxFaceModels:
    """MediaPipe face detection (full range) and face mesh with irises on ONNX Runtime.

    device: auto | cpu | cuda[:N] (dicom_deid.onnx_device); threads: intra-op threads of
    each session (None: onnxruntime's default, one per core).
    """

    def __init__(self, *, detection_confidence: float = 0.5, mesh_confidence: float = 0.5,
                 device: str = "auto", threads: int | None = DEFAULT_THREADS,
                 refinement: str = "attention") -> None:
        if refinement not in REFINEMENTS:
            raise ValueError(f"refinement must be one of {REFINEMENTS}, got {refinement!r}")
        self._shared = _Shared(device, threads, detection_confidence)
        self._mesh_confidence = mesh_confidence
        self._refinement = refinement

    def detect(self, rgb: np.ndarray) -> list[FaceBox]:
        h, w = rgb.shape[:2]
        dets = self._shared.full(np.ascontiguousarray(rgb))
        scale = np.array([w, h], dtype=np.float64)
        out = []
        for box, kps, score in zip(dets.boxes, dets.keypoints, dets.scores, strict=True):
            x0, y0 = float(box[0]) * w, float(box[1]) * h
            x1, y1 = float(box[2]) * w, float(box[3]) * h
            out.append(FaceBox(box=(x0, y0, x1, y1), score=float(score),
                               keypoints=kps.astype(np.float64) * scale))
        return out

    def mesh_session(self, refinement: str | None = None) -> MeshSession:
        """A mesh session; refinement None: this object's (see OnnxMesh)."""
        return OnnxMesh(self._shared, self._mesh_confidence, refinement or self._refinement)

    def close(self) -> None:
        pass
