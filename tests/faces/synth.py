"""Small test inputs made from skimage's astronaut (a real, public-domain face), with ground
truth: the astronaut's landmarks are measured once on the untouched photo, and every synthetic
frame is an affine warp of it, so its true landmarks are the same warp of those."""

from __future__ import annotations

import functools

import cv2
import numpy as np

from dicom_deid.faces import mesh

BACKGROUND = (96, 110, 120)
FACE_CENTRE = (225.0, 120.0)  # in the 512 x 512 astronaut


@functools.lru_cache(maxsize=1)
def astronaut() -> np.ndarray:
    from skimage import data

    img = data.astronaut()
    img.setflags(write=False)
    return img


@functools.lru_cache(maxsize=1)
def astronaut_landmarks() -> np.ndarray:
    """478 x 3 MediaPipe landmarks of the untouched astronaut (static-image mode)."""
    import mediapipe as mp

    img = astronaut()
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True,
                                         max_num_faces=1) as mesh:
        result = mesh.process(np.ascontiguousarray(img))
    assert result.multi_face_landmarks, "MediaPipe found no face in the astronaut"
    h, w = img.shape[:2]
    pts = np.array([(p.x * w, p.y * h, p.z * w) for p in result.multi_face_landmarks[0].landmark])
    pts.setflags(write=False)
    return pts


def warp_landmarks(landmarks: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    out = np.array(landmarks, dtype=np.float64, copy=True)
    xy1 = np.hstack([out[:, :2], np.ones((len(out), 1))])
    out[:, :2] = xy1 @ np.asarray(matrix, dtype=np.float64).T
    out[:, 2] *= float(np.sqrt(abs(np.linalg.det(np.asarray(matrix)[:, :2]))))
    return out


def scaled(rgb: np.ndarray, landmarks: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """The image resized by ``factor`` (area filter down, cubic up) and its landmarks moved the
    same way (pixel centres, as cv2.resize maps them; z scales like x)."""
    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC
    image = cv2.resize(rgb, None, fx=factor, fy=factor, interpolation=interp)
    lm = np.array(landmarks, dtype=np.float32, copy=True)
    lm[:, :2] = (lm[:, :2] + 0.5) * factor - 0.5
    lm[:, 2] *= factor
    return image, lm


def frame(matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The astronaut warped by a 2 x 3 matrix into a frame of size (width, height)."""
    return cv2.warpAffine(astronaut(), np.asarray(matrix, dtype=np.float64), size,
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=BACKGROUND)


def motion_matrices(n: int, motion: str, size: tuple[int, int] = (320, 320)) -> list[np.ndarray]:
    """Per-frame affine matrices: translate, scale or rotate about the face."""
    w, h = size
    out = []
    for i in range(n):
        f = i / max(1, n - 1)
        if motion == "translate":
            angle, scale, centre = 0.0, 0.55, (w * (0.35 + 0.3 * f), h * (0.42 - 0.08 * f))
        elif motion == "scale":
            angle, scale, centre = 0.0, 0.4 + 0.35 * f, (w * 0.5, h * 0.45)
        elif motion == "rotate":
            angle, scale, centre = -25.0 + 50.0 * f, 0.55, (w * 0.5, h * 0.45)
        elif motion == "still":
            angle, scale, centre = 0.0, 0.55, (w * 0.5, h * 0.45)
        else:
            raise ValueError(motion)
        m = cv2.getRotationMatrix2D(FACE_CENTRE, angle, scale)
        m[:, 2] += np.array(centre) - np.array(FACE_CENTRE)
        out.append(m)
    return out


def sequence(n: int = 16, motion: str = "translate", size: tuple[int, int] = (320, 320)):
    """(frames, true landmarks per frame)."""
    mats = motion_matrices(n, motion, size)
    lm = astronaut_landmarks()
    return [frame(m, size) for m in mats], [warp_landmarks(lm, m) for m in mats]


def hull_mask(landmarks: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Boolean mask of the true landmark hull (no margin: the pixels that must never pass)."""
    from dicom_deid.faces.region import covered_region

    return covered_region(landmarks, shape) > 0


def motion_blur(rgb: np.ndarray, length: int = 31) -> np.ndarray:
    kernel = np.zeros((1, length), np.float32)
    kernel[0, :] = 1.0 / length
    return cv2.filter2D(rgb, -1, kernel)


def eyes_open_to(landmarks: np.ndarray, fraction: float) -> np.ndarray:
    """The landmarks with both eyes at ``fraction`` of their opening, about each lid's
    midline (0: shut)."""
    out = landmarks.copy()
    for upper, lower in mesh.APERTURES[:2]:
        up, lo = list(upper[1:-1]), list(lower[1:-1])
        mid = (landmarks[up] + landmarks[lo]) / 2
        out[up] = mid + (landmarks[up] - mid) * fraction
        out[lo] = mid + (landmarks[lo] - mid) * fraction
    return out
