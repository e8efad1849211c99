"""dlib's face detector, 68-point predictor and ResNet recogniser: the independent attacker.

The de-identification never uses dlib, so what dlib still recognises on its output is a fair
estimate of what an outside party could. dlib is imported here only (it is in the `eval` extra;
the node installs without it), and the models come from the face_recognition_models package
(offline, no download).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dicom_deid.errors import DeidError

# dlib's documented operating point: two descriptors closer than this are the same person
# (99.38% on LFW).
MATCH_THRESHOLD = 0.6


class EvaluationDependencyError(DeidError, RuntimeError):
    """dlib or its models are missing (install the `eval` extra)."""


@dataclass
class DlibFace:
    box: tuple[int, int, int, int]          # x0, y0, x1, y1
    landmarks68: np.ndarray                 # 68 x 2 pixels
    descriptor: np.ndarray | None           # 128-d, None when not computed


class DlibFaces:
    """Largest face per frame: box, 68 landmarks, and (optionally) the 128-d descriptor."""

    def __init__(self, upsample: int = 1) -> None:
        try:
            import dlib
            import face_recognition_models as frm
        except ImportError as exc:
            raise EvaluationDependencyError(
                f"dicom-deid evaluate needs dlib and face_recognition_models ({exc}); "
                "install the eval extra: pip install 'dicom-deid[eval]'"
            ) from exc
        self._dlib = dlib
        self.upsample = int(upsample)
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(frm.pose_predictor_model_location())
        self._recogniser = dlib.face_recognition_model_v1(frm.face_recognition_model_location())

    def detect(self, rgb: np.ndarray) -> list[tuple[int, int, int, int]]:
        rects = self._detector(np.ascontiguousarray(rgb), self.upsample)
        return [(r.left(), r.top(), r.right(), r.bottom()) for r in rects]

    def analyse(self, rgb: np.ndarray, *, descriptor: bool = True) -> DlibFace | None:
        """The largest face dlib finds, or None when it finds none."""
        faces = self.analyse_all(rgb, descriptor=descriptor)
        return faces[0] if faces else None

    def analyse_all(self, rgb: np.ndarray, *, descriptor: bool = True) -> list[DlibFace]:
        """Every face dlib finds, largest first, each with its 68 landmarks; the descriptor
        (the costly part, about 0.1 s) only for the largest."""
        rgb = np.ascontiguousarray(rgb)
        rects = sorted(self._detector(rgb, self.upsample), key=lambda r: -r.width() * r.height())
        faces = []
        for k, rect in enumerate(rects):
            shape = self._predictor(rgb, rect)
            pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
            desc = None
            if descriptor and k == 0:
                desc = np.array(self._recogniser.compute_face_descriptor(rgb, shape),
                                dtype=np.float64)
            faces.append(DlibFace((rect.left(), rect.top(), rect.right(), rect.bottom()), pts, desc))
        return faces


def mean_descriptor(descriptors: list[np.ndarray]) -> np.ndarray | None:
    """A clip's descriptor: the mean of its frames' descriptors (None when no frame had one)."""
    found = [d for d in descriptors if d is not None]
    if not found:
        return None
    return np.mean(np.stack(found), axis=0)
