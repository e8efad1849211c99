"""A donor texture cleaned for rendering: a neutral forehead and a clean rim.

A sample of the PCA texture model (donors.py) carries what its training photos had where the
face mesh meets the head: hair strands and hair shadow at the temples and along the forehead
top (rendered as dark arcs at the temples and a brown band at the hairline), background at the
jaw and cheek outline (a pale halo), and the training faces' forehead wrinkles and frown lines
(vertical streaks, a scowl the patient does not make). None of it is identity the donor needs:
its identity is in the eyes, nose, mouth and cheeks, and the expression is the patient's
geometry. So before rendering:

- the rim (within ``RIM`` of the mesh outline) takes the donor's own smooth skin colour,
  continued outward from the inner face, with the mean texture's fine detail;
- the forehead (above the brows, and the glabella between them) keeps the donor's skin colour
  at low frequency only, with the mean texture's fine detail (smooth, without wrinkles).

Distances are in the texture's inter-ocular distance (outer eye corners).
"""

from __future__ import annotations

import numpy as np

from dicom_deid.faces.donors import TextureLayout, fill_outside

# Band along the mesh outline that takes the inner face's smooth colour: starts this far in
# and is fully the donor's own texture at RIM_START + RIM.
RIM_START = 0.03
RIM = 0.2
# Pixels farther than this from the outline give the rim and forehead their skin colour.
INNER = 0.2
# Low-pass of the skin colour continued over the rim and the forehead.
SKIN_SIGMA = 0.1
# Inner-face pixels darker than the skin's median by this many robust deviations (brows,
# lashes, pupils, nostrils) give no skin colour: blurred in, the brows darkened the forehead
# continued above them toward the hairline, a dark arc where the face meets the patient's
# forehead.
SKIN_DARK = 2.0
# Limits of the rim's shading relative to the inner skin: darker toward the outline, never
# lighter (a lighter rim reads as a halo).
RIM_SHADE = (0.85, 1.0)
# The donor's own rim and forehead colour, where some of it is kept (`clean_texture`'s
# keep_own), is low-passed at this scale: its hairline shading and colour, not its strands.
OWN_SIGMA = 0.06
# Fine detail (wrinkles, pores, strands) is what lies above this low-pass.
DETAIL_SIGMA = 0.03
# clean_texture's edge_detail and nearest_fill act only above the eyes: fully this far (IOD)
# above the outer eye corners' line.
UPPER_RAMP = 0.2
OUTER_EYES = (33, 263)
# The forehead ramps in over this height above the brow line; how much of the donor's own
# detail it keeps.
FOREHEAD_RAMP = 0.2
FOREHEAD_DETAIL = 0.15
# The brow line, right to left across the face: upper brow points, dipping to the nose bridge
# (168) between the brows so that the glabella counts as forehead.
BROW_LINE = (70, 63, 105, 66, 107, 168, 336, 296, 334, 293, 300)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def clean_weights(layout: TextureLayout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per texture pixel: how much of the donor's own low-frequency colour is kept (0 on the
    rim), how much of its fine detail (0 on the rim, FOREHEAD_DETAIL on the forehead), and the
    inner-face mask the skin colour is taken from."""
    import cv2

    iod = float(np.linalg.norm(layout.uv[33] - layout.uv[263]))
    dist = cv2.distanceTransform(layout.face_mask.astype(np.uint8), cv2.DIST_L2, 5)
    keep_low = _smoothstep((dist - RIM_START * iod) / (RIM * iod))
    brow = layout.uv[list(BROW_LINE)].astype(np.float64)
    brow = brow[np.argsort(brow[:, 0])]
    cols = np.arange(layout.size, dtype=np.float64)
    brow_y = np.interp(cols, brow[:, 0], brow[:, 1])
    rows = np.arange(layout.size, dtype=np.float64)[:, None]
    forehead = _smoothstep((brow_y[None, :] - rows) / (FOREHEAD_RAMP * iod)).astype(np.float32)
    keep_detail = keep_low * (1.0 - (1.0 - FOREHEAD_DETAIL) * forehead)
    inner = dist > INNER * iod
    # The forehead's colour comes from the smooth skin too (its low frequencies carry the
    # frown and the hair shadow at the top).
    keep_low = keep_low * (1.0 - forehead)
    return keep_low.astype(np.float32), keep_detail.astype(np.float32), inner


def clean_texture(texture: np.ndarray, mean_texture: np.ndarray,
                  layout: TextureLayout, keep_own: float = 0.0, *,
                  edge_detail: float = 0.0, nearest_fill: bool = False) -> np.ndarray:
    """``texture`` (size, size, 3 float32, 0..255, in ``layout``) with its rim and forehead
    replaced by its own smooth skin colour and the mean texture's fine detail.

    ``keep_own`` (0..1): how much of the donor's own colour there comes back, low-passed at
    OWN_SIGMA (its rim and forehead shading without the strands and wrinkles): donors then
    differ where cleaning made them alike; 0 is the fully cleaned texture.
    ``edge_detail`` (IOD): above the eyes, the mean texture's fine detail fades out over this
    distance from the mesh outline (0: kept up to it). ``nearest_fill``: above the eyes, the
    skin colour is continued from the nearest inner pixel with the dark features left out
    (False: the push-pull fill from all of the inner face). The product's settings are
    swap.DONOR_EDGE_DETAIL and swap.DONOR_NEAREST_FILL."""
    if not 0.0 <= keep_own <= 1.0:
        raise ValueError(f"keep_own must be within 0..1, got {keep_own}")
    import cv2

    keep_low, keep_detail, inner = clean_weights(layout)
    iod = float(np.linalg.norm(layout.uv[33] - layout.uv[263]))
    tex = texture.astype(np.float32)
    mean = mean_texture.astype(np.float32)
    s = DETAIL_SIGMA * iod
    low = cv2.GaussianBlur(tex, (0, 0), s)
    detail = tex - low
    mean_detail = mean - cv2.GaussianBlur(mean, (0, 0), s)
    # Above the eyes, where the rendered face meets the patient's own skin (forehead and
    # temples) rather than hair and background.
    eye_y = float(layout.uv[list(OUTER_EYES), 1].mean())
    rows = np.arange(layout.size, dtype=np.float32)[:, None]
    upper = _smoothstep((eye_y - rows) / (UPPER_RAMP * iod)) * np.ones((1, layout.size))
    if edge_detail > 0:
        # The mean texture's own outline (its training photos' hair and background edge) is in
        # its fine detail as a dark line (-5.5 grey on the outermost texel, -1 on the third),
        # drawn along the rendered face's edge: a thin arc over the forehead and temples. Only
        # above the eyes, where the face meets the patient's skin: along the cheeks and jaw it
        # meets hair and background, and the dark line softens that edge (GRID, 5 clips x 3
        # donors: boundary contrast 1.57 -> 1.64 with the line gone everywhere).
        dist = cv2.distanceTransform(layout.face_mask.astype(np.uint8), cv2.DIST_L2, 5)
        fade = 1.0 - upper * (1.0 - _smoothstep(dist / (edge_detail * iod)))
        mean_detail *= fade[..., None]
    skin = _inner_skin(tex, inner, iod, upper if nearest_fill else None)
    # The rim keeps the shading of a face turning away from the light (the mean texture's
    # lightness there against its own inner skin, an average over the training faces, so
    # nobody's hair): without it the outline is flat and a landmarker finds the jaw less well
    # (astronaut NME at shape 0: 1.8-2.1 % with, 2.1 % without; MediaPipe reads one photo
    # differently from call to call by about 0.2).
    mean_skin = _inner_skin(mean, inner, iod, upper if nearest_fill else None)
    mean_low = cv2.GaussianBlur(mean, (0, 0), s)
    shade = (mean_low.mean(axis=2) + 1.0) / (mean_skin.mean(axis=2) + 1.0)
    skin = skin * np.clip(shade, RIM_SHADE[0], RIM_SHADE[1])[..., None]
    if keep_own > 0:
        own = cv2.GaussianBlur(tex, (0, 0), OWN_SIGMA * iod)
        skin = (1.0 - keep_own) * skin + keep_own * own
    a, d = keep_low[..., None], keep_detail[..., None]
    out = a * low + (1.0 - a) * skin + d * detail + (1.0 - d) * mean_detail
    return np.clip(out, 0.0, 255.0).astype(np.float32)


def dark_features(tex: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """Pixels of the inner face darker than its skin by SKIN_DARK robust deviations: brows,
    lashes, pupils, nostrils."""
    grey = tex.mean(axis=2)
    values = grey[inner]
    if values.size < 16:
        return np.zeros(inner.shape, bool)
    med = float(np.median(values))
    mad = float(np.median(np.abs(values - med))) * 1.4826 + 1.0
    return grey < med - SKIN_DARK * mad


def _inner_skin(tex: np.ndarray, inner: np.ndarray, iod: float,
                nearest: np.ndarray | None = None) -> np.ndarray:
    """The low-pass of ``tex`` over the inner face only (normalised convolution), continued
    outward: a skin colour without the rim's hair and background. ``nearest`` (0..1 per
    pixel): where the continuation is the nearest inner pixel's colour rather than the
    push-pull fill's."""
    import cv2

    m = (inner if nearest is None else inner & ~dark_features(tex, inner)).astype(np.float32)
    blurred = cv2.GaussianBlur(tex * m[..., None], (0, 0), SKIN_SIGMA * iod)
    weight = cv2.GaussianBlur(m, (0, 0), SKIN_SIGMA * iod)
    skin = blurred / np.maximum(weight, 1e-4)[..., None]
    known = weight > 0.2
    pushed = fill_outside(skin, known)
    if nearest is None:
        return pushed
    # Each pixel outside takes its nearest known pixel's colour, smoothed: the push-pull fill
    # drifts with distance toward the whole face's mean, darker than a forehead, so the
    # continued forehead darkened toward the hairline (19 texels out: 177 -> 159 grey).
    _, labels = cv2.distanceTransformWithLabels((~known).astype(np.uint8), cv2.DIST_L2, 5,
                                                labelType=cv2.DIST_LABEL_PIXEL)
    ys, xs = np.nonzero(known)
    lut = np.zeros((labels.max() + 1, skin.shape[2]), np.float32)
    lut[labels[ys, xs]] = skin[ys, xs]
    near = lut[labels]
    near = cv2.GaussianBlur(near, (0, 0), SKIN_SIGMA * iod)
    # Along the cheeks and jaw the push-pull colour stays: there the face meets hair and
    # background, and the nearest cheek colour made the outline lighter against them (GRID
    # boundary contrast up on lbbc2a, 1.64 -> 1.77).
    w = np.asarray(nearest, np.float32)[..., None]
    continued = w * near + (1.0 - w) * pushed
    return np.where(known[..., None], skin, continued).astype(np.float32)
