"""The digital mask's material: one uniform surface for everybody, with painted lips and brows.

The mask is nobody's face: its texture is not a photo nor a sample of the donor model, but a
flat albedo over the whole face with three painted features a landmark model needs to read an
expression back (lips, brows, lash lines drawn by the renderer) and synthetic eyeballs. Shading
comes from the mask's own posed geometry (Lambert), not from the frame.

By default (mask3d.PER_STUDY_DESIGN off) every study gets `material(None)`: one grey-beige
tint, one light, one lip and brow design and one eye size, the same mask for everybody (issue 15
item 4). `material(seed)` draws a study's own tint, iris colour, lip tone and proportions from
its seed alone (derived from the site key and the study, as swap's donor), the older design: its
variation drowned the residual cues of the patient that drive the mask, which mask3d now removes
at their source instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from dicom_deid.faces.donors import TextureLayout

# MediaPipe face-mesh contours of the painted features (subject's right first).
OUTER_LIPS = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291,
              375, 321, 405, 314, 17, 84, 181, 91, 146)
RIGHT_BROW = (46, 53, 52, 65, 55, 107, 66, 105, 63, 70)
LEFT_BROW = (276, 283, 282, 295, 285, 336, 296, 334, 293, 300)

# Skin-like tints, CIE L*a*b* (light to dark skin, and two neutral greys): a study's tint is
# drawn around one of these. None of them is measured from anybody.
_TINTS_LAB = np.array([
    [78.0, 10.0, 16.0], [72.0, 13.0, 20.0], [64.0, 15.0, 22.0], [55.0, 16.0, 24.0],
    [46.0, 15.0, 20.0], [70.0, 3.0, 6.0], [60.0, 2.0, 4.0],
], np.float32)
_IRIS_PALETTE = np.array([[72, 45, 28], [96, 62, 38], [58, 38, 26], [110, 88, 52],
                          [88, 104, 70], [92, 112, 128], [70, 100, 140], [45, 30, 22]],
                         np.float32)
DEFAULT_SKIN_LAB = (70.0, 10.0, 15.0)
# A per-study turn of the mask (yaw and pitch, up to this many degrees), meant to hide a
# person's head-pose habit with mask3d.REST_LIMIT_DEGREES (which now does that alone). Off: with
# the per-study synthetic shape (mask3d.IDENTITY_SPREAD) a 4-degree turn and 6-degree rest
# replacement gave London rank-1 0/3.9/2.0 % and linkage 3.9/2.0/9.8 % on 3 keys, 1 dlib leak and held-out expression
# cosine 0.78, against 0/2.0/2.0 %, 9.8/3.9/5.9 %, 0 leaks and 0.82 without
# (benchmarks/mask3d_quality.py --keys 3, round 2).
TURN_DEGREES = 0.0
# The open eye's height per study, times the mean shape's (uniform). The mean shape's eye is
# narrow: at 0.8-1.2 a small face's lid (GRID, 360 x 288) moved by a fraction of a pixel over a
# clip without blinks and a landmark model read the mask's eye aspect ratio back from noise
# (GRID lbbc2a, evaluation key 0: read-back against the mask's own geometry r 0.66, against the
# patient 0.60, while the geometry followed the patient at r 0.89; the study's resting
# expression changed only which noise). At 1.04-1.56 the read-back follows at r 0.82 (patient
# 0.73) and the eyes look open rather than slit (glasses, looking down: GRID lbax4n).
EYE_OPENING_RANGE = (1.04, 1.56)
DEFAULT_EYE_OPENING = 1.3


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """float32 RGB 0..255 of one CIE L*a*b* colour."""
    px = np.asarray(lab, np.float32).reshape(1, 1, 3)
    return np.clip(cv2.cvtColor(px, cv2.COLOR_LAB2RGB).reshape(3) * 255.0, 0, 255)


@dataclass(frozen=True)
class Material:
    """Colours of one mask (RGB, 0..255)."""

    skin: np.ndarray
    lips: np.ndarray
    brows: np.ndarray
    iris: np.ndarray
    label: str
    light: np.ndarray = field(default_factory=lambda: _unit([0.0, -0.35, -1.0]))
    # Yaw and pitch (radians) the mask is turned by on top of the patient's pose.
    turn: tuple[float, float] = (0.0, 0.0)
    brow_thickness: float = 1.0    # times the layout's brow
    brow_lift: float = 0.0         # eye distances, up
    lip_fullness: float = 1.0      # times the layout's lip height
    eye_opening: float = DEFAULT_EYE_OPENING   # the open eye's height, times the mean shape's


def _unit(v) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def material(seed: int | None) -> Material:
    """The material of a study's mask: drawn from ``seed`` alone (None: the default grey-beige)."""
    extra: dict = {}
    if seed is None:
        skin_lab = np.array(DEFAULT_SKIN_LAB, np.float32)
        iris = np.array([80, 60, 45], np.float32)
        lip_shift = np.array([-12.0, 16.0, 4.0], np.float32)
        label = "default"
    else:
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x6D61736B])  # "mask"
        base = _TINTS_LAB[int(rng.integers(len(_TINTS_LAB)))]
        skin_lab = base + rng.uniform([-6, -4, -5], [6, 4, 5]).astype(np.float32)
        iris = _IRIS_PALETTE[int(rng.integers(len(_IRIS_PALETTE)))]
        iris = np.clip(iris * rng.uniform(0.85, 1.15), 0, 255).astype(np.float32)
        lip_shift = np.array([rng.uniform(-16, -8), rng.uniform(12, 22), rng.uniform(0, 8)],
                             np.float32)
        label = f"mask:{int(seed) & 0xFFFFFFFF}"
        # The design of the mask varies per study too, within what a mask maker would vary:
        # lighting, a slight turn, brow and lip proportions, how wide the eyes open. These, not the tint, are what
        # move a recogniser's descriptor; without them two captures of one person stay
        # linkable by their head pose and eye openness alone (the mask's geometry, rendered
        # on a blank frame: 10 of 20 London pairs linked).
        extra = dict(
            light=_unit([rng.uniform(-0.6, 0.6), rng.uniform(-0.7, 0.0), -1.0]),
            turn=(float(np.radians(rng.uniform(-TURN_DEGREES, TURN_DEGREES))),
                  float(np.radians(rng.uniform(-TURN_DEGREES, TURN_DEGREES)))),
            brow_thickness=float(rng.uniform(0.8, 1.3)),
            brow_lift=float(rng.uniform(-0.03, 0.03)),
            lip_fullness=float(rng.uniform(0.75, 1.35)),
            eye_opening=float(rng.uniform(*EYE_OPENING_RANGE)),
        )
    skin = lab_to_rgb(skin_lab)
    lips = lab_to_rgb(skin_lab + lip_shift)
    # Brows: the skin much darker and less saturated, so they read as hair at any tint.
    brows = lab_to_rgb(np.array([max(skin_lab[0] * 0.45, 18.0), skin_lab[1] * 0.4,
                                 skin_lab[2] * 0.6], np.float32))
    return Material(skin, lips, brows, iris, label, **extra)


def texture(layout: TextureLayout, mat: Material) -> np.ndarray:
    """The mask's albedo in the donor model's texture layout, (size, size, 3) float32 RGB.

    Features are painted on the layout's landmark positions, so they move with the posed mesh
    (a smile widens the lips, a raised brow lifts the brows) and with nothing else.
    """
    size = layout.size
    uv = layout.uv.astype(np.float64)
    out = np.empty((size, size, 3), np.float32)
    out[...] = mat.skin
    scale = float(np.linalg.norm(uv[33] - uv[263]))  # outer eye corners, texture pixels
    for contour, colour, soft, stretch, lift in (
            (OUTER_LIPS, mat.lips, 0.012, mat.lip_fullness, 0.0),
            (RIGHT_BROW, mat.brows, 0.02, mat.brow_thickness, mat.brow_lift),
            (LEFT_BROW, mat.brows, 0.02, mat.brow_thickness, mat.brow_lift)):
        alpha = np.zeros((size, size), np.uint8)
        pts = uv[list(contour)].copy()
        middle = pts.mean(axis=0)
        pts[:, 1] = middle[1] + (pts[:, 1] - middle[1]) * stretch - lift * scale
        pts = np.rint(pts * 16).astype(np.int32)
        cv2.fillPoly(alpha, [pts], 255, lineType=cv2.LINE_AA, shift=4)
        a = alpha.astype(np.float32) / 255.0
        a = cv2.GaussianBlur(a, (0, 0), max(soft * scale, 0.5))[..., None]
        out = out * (1.0 - a) + colour[None, None, :] * a
    return np.ascontiguousarray(out, dtype=np.float32)
