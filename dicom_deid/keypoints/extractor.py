"""`KeypointExtractor`: body pose, hands and face mesh of one frame after another.

MediaPipe 0.10.21's legacy solutions ship their models in the wheel, so nothing is downloaded:
pose is `pose_landmark_full` (model_complexity=1; the lite and heavy models are not in the wheel
and would be fetched at run time) and hands `hand_landmark_full`, run by ONNX Runtime
(keypoints/onnx_pose.py and keypoints/onnx_hands.py, the same models and steps; the default
keypoint engine) or by MediaPipe's Pose and Hands, and the face comes from the face
tracker of dicom_deid.faces (full-range detector + mesh on crops), the same measurement the face
stage makes, so the original and the de-identified frames are measured alike.

Frames must be given in order: pose and hands run in tracking (video) mode, which reuses the
previous frame's landmarks as the next region of interest and runs the detectors only when
tracking is lost; that is what keeps this affordable on a CPU.

concurrent=True (the default) runs the independent parts of a frame at once: the pose (and
the face, when the extractor follows it itself) on worker threads while the hands run on the
caller's, and the ONNX palm detector beside the tracked hands (keypoints/onnx_hands.py).
Each model session keeps its one intra-op thread; onnxruntime, OpenCV and MediaPipe's graphs
release the GIL while they compute, so a free second core takes the other half of the work.
The points are the same as concurrent=False gives (tests/keypoints/test_extractor.py); the
CPU time per frame is not less, only the wall time
(benchmarks/hands_onnx_vs_mediapipe.py, keypoint_stage).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any

import numpy as np

from dicom_deid.keypoints.points import FACE_POINTS, SETS, FrameKeypoints

if TYPE_CHECKING:
    from dicom_deid.faces.tracker import FaceTracker
    from dicom_deid.onnx_device import ModelSettings

# Pose wrists (subject's left, right) and the hand model's wrist: used to tell the hands apart.
_POSE_WRISTS = (15, 16)


def _to_pixels(landmarks: Any, width: int, height: int) -> np.ndarray:
    pts = np.array([(p.x, p.y, p.z) for p in landmarks.landmark], dtype=np.float32)
    pts[:, 0] *= width
    pts[:, 1] *= height
    pts[:, 2] *= width
    return pts


def _largest(faces: Sequence[np.ndarray]) -> np.ndarray | None:
    best, best_area = None, -1.0
    for lm in faces:
        if lm is None:
            continue
        arr = np.asarray(lm, dtype=np.float32)
        if arr.shape != (FACE_POINTS, 3):
            raise ValueError(f"face landmarks must be {FACE_POINTS} x 3, got {arr.shape}")
        span = arr[:, :2].max(axis=0) - arr[:, :2].min(axis=0)
        area = float(span[0] * span[1])
        if area > best_area:
            best, best_area = arr, area
    return best


class KeypointExtractor:
    """Per-frame keypoints: `extract(rgb) -> FrameKeypoints` (pixels, None where absent).

    face=False skips the face set; pose=False / hands=False skip those. One extractor follows
    one video: call `extract` on its frames in order, then `close()` (or use `with`).
    runtime: the device, face engine and keypoint engine (who runs pose and hands: ONNX
    Runtime on that device, or MediaPipe on the CPU). concurrent: run pose, hands and the
    face of a frame at once (the same points; less wall time where a core is free).
    """

    def __init__(self, face: bool = True, *, pose: bool = True, hands: bool = True,
                 fps: float = 25.0, min_confidence: float = 0.5,
                 runtime: ModelSettings | None = None, concurrent: bool = True) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.face = face
        self.fps = float(fps)
        self.frames = 0
        self._min_confidence = min_confidence
        self._pose: Any = None
        self._hands: Any = None
        self._tracker: FaceTracker | None = None
        self._closed = False
        self._runtime = runtime
        self._onnx_pose = self._onnx_hands = False
        settings = runtime
        if settings is None:
            from dicom_deid.onnx_device import ModelSettings

            settings = ModelSettings()
        onnx = settings.resolved_keypoint_engine() == "onnx"
        if pose and onnx:
            from dicom_deid.keypoints.onnx_pose import OnnxPose

            self._pose = OnnxPose(device=settings.device, smooth=True,
                                  min_detection_confidence=min_confidence,
                                  min_tracking_confidence=min_confidence)
            self._onnx_pose = True
        elif pose:
            import mediapipe as mp

            self._pose = mp.solutions.pose.Pose(
                static_image_mode=False, model_complexity=1, smooth_landmarks=True,
                enable_segmentation=False, min_detection_confidence=min_confidence,
                min_tracking_confidence=min_confidence,
            )
        if hands and onnx:
            from dicom_deid.keypoints.onnx_hands import OnnxHands

            self._hands = OnnxHands(device=settings.device, max_num_hands=2,
                                    min_detection_confidence=min_confidence,
                                    min_tracking_confidence=min_confidence,
                                    concurrent=concurrent)
            self._onnx_hands = True
        elif hands:
            import mediapipe as mp

            self._hands = mp.solutions.hands.Hands(
                static_image_mode=False, max_num_hands=2, model_complexity=1,
                min_detection_confidence=min_confidence, min_tracking_confidence=min_confidence,
            )
        # Two workers: the pose and the face; the hands run on the caller's thread.
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="keypoints") \
            if concurrent else None

    def __enter__(self) -> KeypointExtractor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def extract(self, rgb: np.ndarray,
                face_landmarks: np.ndarray | Sequence[np.ndarray] | None = None, *,
                like: FrameKeypoints | None = None) -> FrameKeypoints:
        """Keypoints of the next frame (H x W x 3 uint8 RGB).

        face_landmarks: the face mesh already measured on this frame (FaceReplacer.last.faces[i]
        .landmarks, 478 x 3 pixels), one array or a list of them (the largest face is kept; an
        empty list means no face). None: the extractor measures the face itself.
        like: the keypoints of the original of this frame, when this frame is its de-identified
        version: pose and hands are looked for only where the original has them (the invariance
        check compares nothing else), which saves the detectors' cost on most frames. The face
        is always followed, so that its tracking stays continuous.
        """
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 \
                or rgb.dtype != np.uint8:
            shape = getattr(rgb, "shape", None)
            raise ValueError(f"expected an H x W x 3 uint8 RGB frame, got {shape}")
        if self._closed:
            raise RuntimeError("this KeypointExtractor is closed")
        height, width = rgb.shape[:2]
        frame = np.ascontiguousarray(rgb)
        kp = FrameKeypoints(width=width, height=height)
        want_pose = like is None or like.pose is not None
        want_hands = like is None or like.left_hand is not None or like.right_hand is not None
        pose_job = self._start(self._find_pose, frame) \
            if self._pose is not None and want_pose else None
        face_job = self._start(self._track_face, frame) \
            if self.face and face_landmarks is None else None
        hands: tuple[list[np.ndarray], list[str]] | None = None
        try:
            if self._hands is not None and want_hands:
                hands = self._find_hands(frame)
        finally:
            # Never leave a job running into the next frame (the trackers are sequential).
            for job in (pose_job, face_job):
                if job is not None:
                    wait([job])
        if pose_job is not None:
            found = pose_job.result()
            if found is not None:
                kp.pose, kp.pose_visibility = found
        if hands is not None:
            kp.left_hand, kp.right_hand = self._sides(*hands, kp)
        if face_job is not None:
            kp.face = face_job.result()
        elif self.face and face_landmarks is not None:
            if isinstance(face_landmarks, np.ndarray):
                face_landmarks = [face_landmarks]
            kp.face = _largest(face_landmarks)
        kp.__post_init__()
        self.frames += 1
        return kp

    def _start(self, job: Callable[[np.ndarray], Any], frame: np.ndarray) -> Future[Any]:
        """`job(frame)` on a worker thread, or done now when the extractor is sequential."""
        if self._pool is not None:
            return self._pool.submit(job, frame)
        done: Future[Any] = Future()
        try:
            done.set_result(job(frame))
        except BaseException as exc:  # noqa: BLE001 - re-raised by result(), as a worker's
            done.set_exception(exc)
        return done

    def _find_pose(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(33 x 3 pixels, visibility) of the frame's pose, or None."""
        height, width = frame.shape[:2]
        if self._onnx_pose:
            found = self._pose.process(frame)
            if found is None:
                return None
            return found.landmarks * np.array([width, height, width], np.float32), \
                found.visibility
        result = self._pose.process(frame)
        if result.pose_landmarks is None:
            return None
        return _to_pixels(result.pose_landmarks, width, height), np.array(
            [p.visibility for p in result.pose_landmarks.landmark], dtype=np.float32)

    def _find_hands(self, frame: np.ndarray) -> tuple[list[np.ndarray], list[str]]:
        """The frame's hands (21 x 3 pixels each) and their handedness labels."""
        height, width = frame.shape[:2]
        if self._onnx_hands:
            scale = np.array([width, height, width], np.float32)
            tracked = self._hands.process(frame)
            return [h.landmarks * scale for h in tracked], [h.label for h in tracked]
        result = self._hands.process(frame)
        found = [_to_pixels(h, width, height) for h in result.multi_hand_landmarks or []]
        labels = [h.classification[0].label for h in result.multi_handedness or []]
        return found, labels

    def _sides(self, hands: list[np.ndarray], labels: list[str],
               kp: FrameKeypoints) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(subject's left hand, subject's right hand)."""
        if not hands:
            return None, None
        vis = kp.pose_visibility
        if kp.pose is not None and vis is not None and min(vis[i] for i in _POSE_WRISTS) > 0.3:
            # The pose wrists say which hand is which better than the hand model, whose label
            # also assumes a mirrored (selfie) image.
            wrists = kp.pose[list(_POSE_WRISTS), :2]
            if len(hands) == 1:
                d = np.linalg.norm(wrists - hands[0][0, :2], axis=1)
                return (hands[0], None) if d[0] <= d[1] else (None, hands[0])
            a, b = hands[0][0, :2], hands[1][0, :2]
            straight = np.linalg.norm(wrists[0] - a) + np.linalg.norm(wrists[1] - b)
            crossed = np.linalg.norm(wrists[0] - b) + np.linalg.norm(wrists[1] - a)
            return (hands[0], hands[1]) if straight <= crossed else (hands[1], hands[0])
        left = right = None
        for hand, label in zip(hands, labels, strict=False):
            # MediaPipe labels hands as seen in a mirrored image: "Left" is the subject's right.
            # Otherwise a hand goes to the side still free (two hands with one label).
            if label == "Left" and right is None:
                right = hand
            elif left is None:
                left = hand
            elif right is None:
                right = hand
        return left, right

    def _track_face(self, rgb: np.ndarray) -> np.ndarray | None:
        if self._tracker is None:
            from dicom_deid.faces.tracker import FaceTracker
            from dicom_deid.onnx_device import ModelSettings

            self._tracker = FaceTracker((self._runtime or ModelSettings()).face_models(),
                                        fps=self.fps)
        faces = self._tracker.update(rgb)
        return _largest([f.landmarks for f in faces if f.landmarks is not None])

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for model in (self._pose, self._hands):
            if model is not None:
                model.close()
        if self._tracker is not None:
            self._tracker.close()
        self._pose = self._hands = self._tracker = None
        self._closed = True


__all__ = ["SETS", "FrameKeypoints", "KeypointExtractor"]
