"""The keypoint sets, their point order, and one frame's keypoints.

Point orders are MediaPipe's (mediapipe 0.10.21, legacy solutions): pose 33 landmarks
(`PoseLandmark`), hands 21 landmarks (`HandLandmark`), face mesh with iris refinement 478
landmarks (canonical face mesh topology, 0-467, then the two irises 468-472 and 473-477, each
centre first). They are written out here so that the SR and CSV writers need no MediaPipe import;
a test checks them against MediaPipe's own enums.

Coordinates are pixels of the frame they were measured on: x = column, y = row, origin at the
top-left corner of the top-left pixel (DICOM SCOORD convention; MediaPipe's normalised
coordinates times width and height). z is MediaPipe's relative depth scaled like x (pixels),
towards the camera negative; it is not a position in space.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

POSE_NAMES: tuple[str, ...] = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky",
    "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel",
    "right_heel", "left_foot_index", "right_foot_index",
)

HAND_NAMES: tuple[str, ...] = (
    "wrist", "thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip", "index_finger_mcp",
    "index_finger_pip", "index_finger_dip", "index_finger_tip", "middle_finger_mcp",
    "middle_finger_pip", "middle_finger_dip", "middle_finger_tip", "ring_finger_mcp",
    "ring_finger_pip", "ring_finger_dip", "ring_finger_tip", "pinky_mcp", "pinky_pip",
    "pinky_dip", "pinky_tip",
)

FACE_POINTS = 478
FACE_MESH_POINTS = 468
# Outer eye corners of the face mesh: the inter-ocular distance that normalises face errors.
FACE_EYE_OUTER = (33, 263)

# A documented face subset for reports where the full mesh is too much: the contours of
# MediaPipe's face mesh (FACEMESH_CONTOURS: lips, eyes, eyebrows, face oval), the irises with
# their centres (FACEMESH_IRISES, 468, 473) and the nose tip (1); 139 points, ascending.
FACE_CONTOUR_POINTS: tuple[int, ...] = (
    0, 1, 7, 10, 13, 14, 17, 21, 33, 37, 39, 40, 46, 52, 53, 54, 55, 58, 61, 63, 65, 66, 67, 70,
    78, 80, 81, 82, 84, 87, 88, 91, 93, 95, 103, 105, 107, 109, 127, 132, 133, 136, 144, 145,
    146, 148, 149, 150, 152, 153, 154, 155, 157, 158, 159, 160, 161, 162, 163, 172, 173, 176,
    178, 181, 185, 191, 234, 246, 249, 251, 263, 267, 269, 270, 276, 282, 283, 284, 285, 288,
    291, 293, 295, 296, 297, 300, 308, 310, 311, 312, 314, 317, 318, 321, 323, 324, 332, 334,
    336, 338, 356, 361, 362, 365, 373, 374, 375, 377, 378, 379, 380, 381, 382, 384, 385, 386,
    387, 388, 389, 390, 397, 398, 400, 402, 405, 409, 415, 454, 466, 468, 469, 470, 471, 472,
    473, 474, 475, 476, 477,
)

# Set name -> number of points, in the order the SR and the CSV write them.
SETS: dict[str, int] = {
    "pose": len(POSE_NAMES),
    "left_hand": len(HAND_NAMES),
    "right_hand": len(HAND_NAMES),
    "face": FACE_POINTS,
}


def face_point_name(index: int) -> str:
    if index < FACE_MESH_POINTS:
        return f"mesh_{index}"
    iris = "iris_a" if index < FACE_MESH_POINTS + 5 else "iris_b"
    k = (index - FACE_MESH_POINTS) % 5
    return f"{iris}_{'centre' if k == 0 else k}"


def point_names(set_name: str) -> tuple[str, ...]:
    """Names of the points of one set, in order."""
    if set_name == "pose":
        return POSE_NAMES
    if set_name in ("left_hand", "right_hand"):
        return HAND_NAMES
    if set_name == "face":
        return tuple(face_point_name(i) for i in range(FACE_POINTS))
    raise KeyError(f"unknown keypoint set {set_name!r}; known: {', '.join(SETS)}")


def point_order_text(set_name: str) -> str:
    """The point order of a set as the SR documents it (index: name; ...)."""
    if set_name == "face":
        return (
            "MediaPipe Face Mesh with iris refinement (mediapipe 0.10.21, face_landmark_with_"
            "attention), 478 points in MediaPipe's canonical face mesh index order: 0-467 the "
            "face mesh (canonical_face_model topology; e.g. 1 nose tip, 33 and 263 the outer eye "
            "corners, 61 and 291 the mouth corners, 152 the chin), 468-472 one iris (centre, "
            "then 4 boundary points) and 473-477 the other iris (centre, then 4 boundary points)."
        )
    names = point_names(set_name)
    if set_name == "pose":
        model = "MediaPipe Pose (pose_landmark_full); left and right are the subject's"
    else:
        side = "left" if set_name == "left_hand" else "right"
        model = (f"MediaPipe Hands (hand_landmark_full), the subject's {side} hand (matched to the "
                 "pose wrists, else MediaPipe's handedness label read for an unmirrored image)")
    return f"{model}, {len(names)} points: " + "; ".join(f"{i} {n}" for i, n in enumerate(names))


@dataclass
class FrameKeypoints:
    """Keypoints of one frame in its pixel coordinates; a set is None where it was not found.

    pose: 33 x 3, left_hand / right_hand: 21 x 3 (the subject's left and right), face: 478 x 3,
    each (x, y, z) float32; pose_visibility: 33 MediaPipe visibility scores in [0, 1].
    """

    width: int
    height: int
    pose: np.ndarray | None = None
    pose_visibility: np.ndarray | None = None
    left_hand: np.ndarray | None = None
    right_hand: np.ndarray | None = None
    face: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name, count in SETS.items():
            value = getattr(self, name)
            if value is None:
                continue
            arr = np.asarray(value, dtype=np.float32)
            if arr.ndim != 2 or arr.shape[0] != count or arr.shape[1] not in (2, 3):
                raise ValueError(f"{name} keypoints must be {count} x 3, got {arr.shape}")
            if arr.shape[1] == 2:
                arr = np.concatenate([arr, np.zeros((count, 1), np.float32)], axis=1)
            setattr(self, name, arr)
        if self.pose_visibility is not None:
            vis = np.asarray(self.pose_visibility, dtype=np.float32).reshape(-1)
            if vis.shape[0] != SETS["pose"]:
                raise ValueError(f"pose_visibility must have 33 values, got {vis.shape[0]}")
            self.pose_visibility = vis

    def get(self, set_name: str) -> np.ndarray | None:
        if set_name not in SETS:
            raise KeyError(f"unknown keypoint set {set_name!r}; known: {', '.join(SETS)}")
        return getattr(self, set_name)

    def present(self) -> list[str]:
        """Names of the sets found in this frame, in SR order."""
        return [name for name in SETS if getattr(self, name) is not None]
