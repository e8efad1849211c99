"""Rendering shared by the swap and the digital mask: texture a mesh, paint the eye and mouth
openings, match colour and shading to the frame, and composite with a feathered edge.

Everything works inside a region of interest around the face; per-pixel work is vectorised
(one rasterisation and one `cv2.remap` per face and frame).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from dicom_deid.faces import mesh

# Per-landmark attributes interpolated inside the openings: 0 on the upper lid/lip, 1 on the
# lower one, and how far along the opening (0 at the corners, 1 in the middle).
_OPEN_T = np.full(mesh.LANDMARK_COUNT, 0.5, np.float32)
_ACROSS = np.zeros(mesh.LANDMARK_COUNT, np.float32)
for _upper, _lower in ((mesh.RIGHT_EYE_UPPER, mesh.RIGHT_EYE_LOWER),
                       (mesh.LEFT_EYE_UPPER, mesh.LEFT_EYE_LOWER),
                       (mesh.INNER_LIPS_UPPER, mesh.INNER_LIPS_LOWER)):
    _n = len(_upper)
    for _i, (_u, _l) in enumerate(zip(_upper, _lower, strict=True)):
        _across = float(np.sin(np.pi * _i / (_n - 1)))
        if _u == _l:
            continue
        _OPEN_T[_u], _OPEN_T[_l] = 0.0, 1.0
        _ACROSS[_u] = _ACROSS[_l] = _across
_ATTRS = np.stack([_OPEN_T, _ACROSS], axis=1)


@dataclass(frozen=True)
class Roi:
    """A rectangle of the frame: rows y0:y1, columns x0:x1."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0

    @property
    def empty(self) -> bool:
        return self.x1 <= self.x0 or self.y1 <= self.y0

    @property
    def offset(self) -> np.ndarray:
        return np.array([self.x0, self.y0], np.float32)

    def of(self, image: np.ndarray) -> np.ndarray:
        return image[self.y0:self.y1, self.x0:self.x1]


def roi_around(points_xy: np.ndarray, frame_shape: tuple[int, ...], pad: float) -> Roi:
    rows, cols = frame_shape[:2]
    lo = np.floor(points_xy.min(axis=0) - pad).astype(int)
    hi = np.ceil(points_xy.max(axis=0) + pad).astype(int) + 1
    return Roi(max(int(lo[0]), 0), max(int(lo[1]), 0), min(int(hi[0]), cols),
               min(int(hi[1]), rows))


def hull_mask(points_xy: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """uint8 mask (255 inside) of the convex hull of points given in ROI coordinates."""
    out = np.zeros(shape, np.uint8)
    if len(points_xy) >= 3:
        hull = cv2.convexHull(np.round(points_xy * 16).astype(np.int32))
        cv2.fillConvexPoly(out, hull, 255, lineType=cv2.LINE_8, shift=4)
    return out


@dataclass
class MeshMaps:
    """Where each ROI pixel looks in the texture, per pixel of the ROI."""

    map_xy: np.ndarray    # (rows, cols, 2) float32 texture column and row (a cv2.remap map)
    attrs: np.ndarray     # (rows, cols, 2) float32 opening attributes (open_t, across)
    part: np.ndarray      # (rows, cols) int8 part label, -1 where the mesh does not cover
    covered: np.ndarray   # (rows, cols) uint8, 255 where the mesh covers
    extra: np.ndarray | None = None   # (rows, cols, k) float32 caller's per-vertex values


def mesh_maps(xy: np.ndarray, depth: np.ndarray, tris: np.ndarray, parts: np.ndarray,
              uv: np.ndarray, shape: tuple[int, int], scale: float = 1.0,
              extra: np.ndarray | None = None) -> MeshMaps:
    """Rasterise the mesh into dense lookup maps for `cv2.remap`.

    With ``scale`` < 1 the mesh is rasterised on a coarser grid and the maps are upsampled
    bilinearly: a piecewise-affine warp is continuous, so this is nearly exact while the cost of
    rasterising no longer grows with the face's size. The texture itself is still sampled at
    full resolution. ``extra`` (V, k) per-vertex values are interpolated the same way.
    """
    rows, cols = shape
    if scale < 1.0:
        small = (max(2, int(np.ceil(rows * scale))), max(2, int(np.ceil(cols * scale))))
        sx, sy = small[1] / cols, small[0] / rows
        pts = (xy + 0.5) * np.array([sx, sy], np.float32) - 0.5
    else:
        small, pts = shape, xy
    raster = mesh.rasterize(pts, depth, tris, small)
    values = np.concatenate([uv, _ATTRS] + ([] if extra is None else [extra]), axis=1)
    values = values.astype(np.float32)
    # Scatter through flat pixel indices (one index array instead of two).
    flat = raster.ys * small[1] + raster.xs
    dense = np.zeros(small + (values.shape[1],), np.float32)
    dense.reshape(-1, values.shape[1])[flat] = raster.interpolate(values, tris)
    part = np.full(small, -1, np.int8)
    part.reshape(-1)[flat] = np.take(parts, raster.tri)
    covered = np.zeros(small, np.uint8)
    covered.reshape(-1)[flat] = 255
    if small != shape:
        # Extend the maps past the mesh edge first, so that bilinear upsampling never mixes a
        # texture coordinate with an empty pixel.
        dense = _extend(dense, covered)
        part = cv2.resize(part.view(np.uint8), (cols, rows),
                          interpolation=cv2.INTER_NEAREST).view(np.int8)
        covered = cv2.resize(covered, (cols, rows), interpolation=cv2.INTER_LINEAR)
        covered = cv2.threshold(covered, 127, 255, cv2.THRESH_BINARY)[1]
        part[covered == 0] = -1
    # Texture coordinates, opening attributes and the caller's values in separate contiguous
    # arrays (cv2.remap takes the coordinates as one two-channel map), each upsampled alone.
    planes = [dense[..., 0:2], dense[..., 2:4]] + ([] if extra is None else [dense[..., 4:]])
    if small != shape:
        planes = [cv2.resize(np.ascontiguousarray(p), (cols, rows),
                             interpolation=cv2.INTER_LINEAR) for p in planes]
    planes = [np.ascontiguousarray(p) for p in planes]
    if extra is not None and planes[2].ndim == 2:
        planes[2] = planes[2][..., None]
    return MeshMaps(planes[0], planes[1], part, covered,
                    None if extra is None else planes[2])


def _extend(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Copy each known pixel's value to its unknown neighbours, two pixels deep.

    ``values`` must be zero where ``known`` is not (as `mesh_maps` builds them): the mean of
    the known neighbours is then a plain box blur divided by the blurred mask, taken only at
    the new pixels.
    """
    out = values.copy()
    mask = known > 0
    kernel = np.ones((3, 3), np.uint8)
    for _ in range(2):
        grown = cv2.dilate(mask.view(np.uint8), kernel).view(bool)
        new = grown & ~mask
        ys, xs = np.nonzero(new)
        if not len(ys):
            break
        w = cv2.blur(mask.astype(np.float32), (3, 3))[ys, xs]
        v = cv2.blur(out, (3, 3))[ys, xs]
        out[ys, xs] = v / np.maximum(w, 1e-6)[:, None]
        mask = grown
    return out


def sample_texture(texture: np.ndarray, maps: MeshMaps) -> np.ndarray:
    """The texture seen through the mesh: (rows, cols, 3) float32 (garbage where not covered)."""
    return cv2.remap(texture, maps.map_xy, None, cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def paint_eye(pixels_xy: np.ndarray, attrs: np.ndarray, iris_centre: np.ndarray,
              iris_radius: float, iris_rgb: np.ndarray, brightness: float) -> np.ndarray:
    """Colours of eye-opening pixels: sclera, iris and pupil at the given iris position.

    The eyeball is synthetic (nobody's iris pattern); only the iris position and size, which
    carry gaze, come from the landmarks.
    """
    r = max(float(iris_radius), 1.0)
    d = np.linalg.norm(pixels_xy - iris_centre, axis=1) / r
    open_t, across = attrs[:, 0], attrs[:, 1]
    sclera = np.array([228, 222, 214], np.float32)
    # Shadow under the upper lid and toward the corners, as a real eyeball has.
    shade = (1.0 - 0.35 * np.clip(1.0 - open_t, 0, 1) ** 2) * (0.75 + 0.25 * np.clip(across, 0, 1))
    colour = sclera[None, :] * shade[:, None]
    angle = np.arctan2(pixels_xy[:, 1] - iris_centre[1], pixels_xy[:, 0] - iris_centre[0])
    streaks = 1.0 + 0.08 * np.sin(angle * 23.0) + 0.05 * np.sin(angle * 57.0 + 1.3)
    ring = np.where(d > 0.82, 0.6, 1.0) * np.where(d < 0.55, 0.85, 1.0)
    iris = iris_rgb[None, :] * (streaks * ring * shade)[:, None]
    pupil = np.array([18, 14, 14], np.float32)[None, :] * np.ones((len(d), 1), np.float32)
    # Anti-aliased edges: blend over about one pixel.
    a_iris = np.clip((1.0 - d) * r + 0.5, 0.0, 1.0)[:, None]
    a_pupil = np.clip((0.4 - d) * r + 0.5, 0.0, 1.0)[:, None]
    out = colour * (1 - a_iris) + iris * a_iris
    out = out * (1 - a_pupil) + pupil * a_pupil
    # Catch light, up and to one side of the pupil.
    glint = np.linalg.norm(pixels_xy - (iris_centre + np.array([0.3, -0.3]) * r), axis=1) / r
    a_glint = np.clip((0.14 - glint) * r + 0.5, 0.0, 1.0)[:, None] * 0.8
    out = out * (1 - a_glint) + 245.0 * a_glint
    return out * brightness


def paint_mouth(attrs: np.ndarray, opening: float, brightness: float) -> np.ndarray:
    """Colours of mouth-opening pixels: a dark oral cavity with an upper teeth row."""
    open_t, across = attrs[:, 0], attrs[:, 1]
    cavity = np.array([70, 28, 30], np.float32)[None, :] * (0.55 + 0.45 * open_t[:, None])
    # Teeth show only when the mouth is open enough to see them; a fixed, generic row.
    teeth_band = np.clip((0.38 - open_t) / 0.08, 0.0, 1.0) * np.clip((across - 0.25) / 0.2, 0, 1)
    teeth_band *= np.clip((opening - 0.06) / 0.08, 0.0, 1.0)
    teeth = np.array([214, 204, 188], np.float32)[None, :] * (0.8 + 0.2 * across[:, None])
    out = cavity * (1 - teeth_band[:, None]) + teeth * teeth_band[:, None]
    return out * brightness


def masked_blur(values: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian low-pass of ``values`` over ``mask`` only (normalised convolution).

    Works on a reduced copy when sigma is large: the result is smooth anyway. The reduction
    is by a whole factor, over the part of the image that is a whole number of blocks (OpenCV's
    fast area path, 5x faster than its general one); the few rows and columns beyond repeat
    the last reduced ones.
    """
    rows, cols = mask.shape
    factor = max(1, min(int(sigma // 4), rows, cols))
    m = mask.astype(np.float32)
    v = values * (m if values.ndim == 2 else m[..., None])
    rows_f, cols_f = rows - rows % factor, cols - cols % factor
    if factor > 1:
        small_shape = (cols_f // factor, rows_f // factor)
        v = cv2.resize(v[:rows_f, :cols_f], small_shape, interpolation=cv2.INTER_AREA)
        m = cv2.resize(m[:rows_f, :cols_f], small_shape, interpolation=cv2.INTER_AREA)
    s = sigma / factor
    vb = cv2.GaussianBlur(v, (0, 0), s)
    mb = cv2.GaussianBlur(m, (0, 0), s)
    out = vb / np.maximum(mb, 1e-4) if vb.ndim == 2 else vb / np.maximum(mb, 1e-4)[..., None]
    if factor > 1:
        out = cv2.resize(out, (cols_f, rows_f), interpolation=cv2.INTER_LINEAR)
        if rows_f < rows or cols_f < cols:
            out = cv2.copyMakeBorder(out, 0, rows - rows_f, 0, cols - cols_f, cv2.BORDER_REPLICATE)
    return out


# OpenCV's 8-bit LAB: L * 255 / 100, a + 128, b + 128.
_LAB8_OFFSET = np.array([0.0, 128.0, 128.0], np.float32)
_LAB8_SCALE = np.array([100.0 / 255.0, 1.0, 1.0], np.float32)


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """float32 CIELAB (L 0..100) of an RGB image in 0..255 (any dtype)."""
    return cv2.cvtColor(cv2.multiply(rgb.astype(np.float32, copy=False), 1.0 / 255.0),
                        cv2.COLOR_RGB2LAB)


# Frame pixels of the face region further than this from the face's median colour (a and b, in
# LAB units) or darker than SKIN_DARK robust deviations below its median lightness are hair,
# beard, brows or background, not skin: left out of the colour statistics and the shading.
SKIN_CHROMA = 12.0
SKIN_DARK = 3.0
# Limits of the per-channel contrast gain of the colour match. The frame's face region holds
# the patient's own contrast (beard, wrinkles, hair strands at the temples): copied at up to 2x
# (the limits before), it amplified the donor texture's faint marks into streaks.
GAIN_LIMITS = (0.8, 1.25)


def skin_pixels(lab_image: np.ndarray, region: np.ndarray, eight_bit: bool = True) -> np.ndarray:
    """``region`` (uint8 mask) less the pixels of ``lab_image`` (OpenCV's 8-bit LAB, or float
    LAB with ``eight_bit`` False) that are not skin (see SKIN_CHROMA); ``region`` itself where
    too little would be left."""
    count = cv2.countNonZero(region)
    if count < 64:
        return region
    # The medians from every third pixel in each direction (runs per face and frame: on all
    # pixels it cost 10-15 ms for a 300 px face), the mask itself on every pixel.
    sample = lab_image[::3, ::3][region[::3, ::3] > 0].astype(np.float32)
    if len(sample) < 16:
        sample = lab_image[region > 0].astype(np.float32)
    scale = _LAB8_SCALE if eight_bit else np.ones(3, np.float32)
    med = np.median(sample, axis=0)
    mad = float(np.median(np.abs(sample[:, 0] - med[0]))) * scale[0] * 1.4826 + 1.0
    chroma = SKIN_CHROMA / scale[1]
    lower = (float(med[0] - SKIN_DARK * mad / scale[0]), float(med[1] - chroma),
             float(med[2] - chroma))
    upper = (1e9, float(med[1] + chroma), float(med[2] + chroma))
    ok = cv2.bitwise_and(cv2.inRange(lab_image, lower, upper), region)
    if cv2.countNonZero(ok) < count // 4:
        return region
    return ok


def match_colour_lab(src: np.ndarray, original: np.ndarray, region: np.ndarray,
                     shading_sigma: float | None,
                     gain_limits: tuple[float, float] = GAIN_LIMITS,
                     offset: tuple[float, float, float] | None = None,
                     chroma: float = 1.0,
                     fine: tuple[float, np.ndarray] | None = None,
                     chroma_floor: float | None = None) -> np.ndarray:
    """Give a face rendered in float32 LAB (L 0..100; a texture kept in LAB saves a colour
    conversion per frame) the frame's colour and illumination over ``region``.

    Per-channel mean and standard deviation in LAB, then the frame's low-frequency lightness
    (shading) replaces the rendered one; both taken from the skin of the frame's region only
    (`skin_pixels`). ``offset`` (L, a, b) is added after the match (a donor's own skin tone);
    ``chroma`` scales the frame's mean a and b the face is matched to (its hue stays).
    ``fine`` (sigma, weight per pixel 0..1): the frame's lightness replaces the rendered one
    once more at this finer scale, by that weight (`fine_shading`).
    ``chroma_floor``: the a and b gains are scaled by the frame's skin lightness over the
    rendered skin's, when darker, down to this (None: not at all; swap.CHROMA_FLOOR is the
    product's).
    Returns float32 RGB in 0..255.
    """
    if cv2.countNonZero(region) < 16:
        return cv2.multiply(cv2.cvtColor(src, cv2.COLOR_LAB2RGB), (255.0, 255.0, 255.0, 0.0))
    # The frame's side only gives statistics and a low-pass, so OpenCV's 8-bit LAB (L scaled to
    # 0..255, a and b offset by 128; steps of 0.4 L) serves, at a fraction of the float
    # conversion's cost; its numbers are brought back to float LAB units here.
    ref8 = cv2.cvtColor(np.ascontiguousarray(original), cv2.COLOR_RGB2LAB)
    skin = skin_pixels(ref8, region)
    # Like against like: the rendered face's own skin (without its lips and brows, which the
    # frame's side leaves out too; with them the match tinted the skin grey-green).
    src_skin = skin_pixels(src, region, eight_bit=False)
    mu_s, sd_s = (v.reshape(3).astype(np.float32) for v in cv2.meanStdDev(src, mask=src_skin))
    mu8, sd8 = (v.reshape(3).astype(np.float32) for v in cv2.meanStdDev(ref8, mask=skin))
    mu_r, sd_r = (mu8 - _LAB8_OFFSET) * _LAB8_SCALE, sd8 * _LAB8_SCALE
    gain = np.clip((sd_r + 1e-3) / (sd_s + 1e-3), *gain_limits)
    if chroma_floor is not None:
        # The same reflectance under the same light has its chroma in proportion to its
        # lightness: on a face darker than the donor's, the donor's lips (a +10, b -10 against
        # its skin) kept their full chroma offset and read as magenta lipstick (London 061:
        # rendered lips a +10.4, b -11.4 against the skin; the patient's own +0.2, -5.1).
        gain[1:] *= float(np.clip((mu_r[0] + 1.0) / (mu_s[0] + 1.0), float(chroma_floor), 1.0))
    # The offset moves the target: a and b in the affine, L there too and in the shading's
    # reference (which would otherwise take the lightness back to the frame's); no extra pass.
    shift = np.zeros(3, np.float32) if offset is None else np.asarray(offset, np.float32)
    target = mu_r * np.array([1.0, chroma, chroma], np.float32) + shift
    affine = np.concatenate([np.diag(gain), (target - mu_s * gain)[:, None]], axis=1)
    out = cv2.transform(src, affine.astype(np.float32))
    if shading_sigma:
        low_ref = masked_blur(ref8[..., 0].astype(np.float32), skin, shading_sigma)
        low_ref *= _LAB8_SCALE[0]
        low_out = masked_blur(out[..., 0], region, shading_sigma)
        ratio = np.clip((low_ref + float(shift[0]) + 1.0) / (low_out + 1.0), 0.5, 2.0)
        out[..., 0] *= ratio
    if fine is not None:
        # The donor's skin pixels as the match's statistics took them (its brows and lips
        # left out); the affine keeps which they are.
        fine_shading(out, ref8, skin, src_skin, *fine, float(shift[0]))
    rgb = cv2.cvtColor(out, cv2.COLOR_LAB2RGB)
    return cv2.multiply(rgb, (255.0, 255.0, 255.0, 0.0), dst=rgb)


# Where the frame has less skin than this (the Gaussian-weighted share within the fine scale:
# hair over the forehead), the fine shading fades out.
FINE_SKIN_SHARE = 0.3
# The fine shading moves a and b too (False: lightness only).
FINE_CHROMA = True


def fine_shading(out: np.ndarray, ref8: np.ndarray, ref_skin: np.ndarray,
                 out_skin: np.ndarray, sigma: float, weight: np.ndarray,
                 shift: float = 0.0) -> None:
    """Scale the lightness of ``out`` (float LAB, in place) toward the frame's (``ref8``,
    OpenCV's 8-bit LAB) at the scale ``sigma``, by ``weight`` (0..1 per pixel), both low-passes
    over skin only (``ref_skin``, ``out_skin``); faded out where the frame shows little skin.
    With FINE_CHROMA a and b move to the frame's at that scale too, as an offset.

    At the forehead the face meets the patient's own forehead skin, so any difference in
    lightness between the donor's forehead and the patient's at a scale finer than the
    shading's shows as a step at the top of the face: a lighter patch up to the hairline, and
    the patient's strip above it dark beside it (an arc)."""
    w = np.asarray(weight, np.float32)
    live = np.flatnonzero(w.max(axis=1) > 0)
    if len(live) == 0 or cv2.countNonZero(out_skin) < 16:
        return
    # Only the rows the weight reaches (the upper face) and the blur's reach around them, on a
    # grid reduced to about half the scale: the result is smooth, and at full resolution this
    # cost half as much again as the whole render (GRID, 80 px between the eyes).
    rows, cols = w.shape
    reach = int(np.ceil(3.0 * sigma))
    y0, y1 = max(0, int(live[0]) - reach), min(rows, int(live[-1]) + 1 + reach)
    factor = max(1, int(sigma // 2))
    small = (max(1, cols // factor), max(1, (y1 - y0) // factor))

    def low_pass(lab: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = cv2.compare(mask[y0:y1], 0, cv2.CMP_GT)
        stack = cv2.merge([*cv2.split(lab), np.ones(m.shape, np.float32)])
        stack = cv2.copyTo(stack, m, np.zeros_like(stack))
        stack = cv2.resize(stack, small, interpolation=cv2.INTER_AREA).reshape(
            small[1], small[0], 4)
        stack = cv2.GaussianBlur(stack, (0, 0), sigma / factor).reshape(small[1], small[0], 4)
        share = stack[..., 3]
        return stack[..., :3] / np.maximum(share, 1e-4)[..., None], share

    # The low-pass is linear: the frame's 8-bit LAB is brought to LAB units after it.
    low_ref, share = low_pass(ref8[y0:y1].astype(np.float32), ref_skin)
    low_ref = (low_ref - _LAB8_OFFSET) * _LAB8_SCALE
    low_out, _ = low_pass(out[y0:y1], out_skin)
    ratio = np.clip((low_ref[..., 0] + shift + 1.0) / (low_out[..., 0] + 1.0), 0.5, 2.0)
    change = cv2.merge([ratio - 1.0, low_ref[..., 1] - low_out[..., 1],
                        low_ref[..., 2] - low_out[..., 2],
                        np.clip(share / FINE_SKIN_SHARE, 0.0, 1.0)])
    change = cv2.resize(change, (cols, y1 - y0), interpolation=cv2.INTER_LINEAR).reshape(
        y1 - y0, cols, 4)
    gain, d_a, d_b, fade = cv2.split(change)
    wc = cv2.multiply(np.ascontiguousarray(w[y0:y1]), fade)
    lab = list(cv2.split(out[y0:y1]))
    lab[0] = cv2.add(lab[0], cv2.multiply(lab[0], cv2.multiply(wc, gain)))
    if FINE_CHROMA:
        # The skin's hue there too (a forehead pinker or greyer than the cheeks).
        lab[1] = cv2.add(lab[1], cv2.multiply(wc, d_a))
        lab[2] = cv2.add(lab[2], cv2.multiply(wc, d_b))
    out[y0:y1] = cv2.merge(lab)


def fill_from(image: np.ndarray, known: np.ndarray, levels: int = 5) -> np.ndarray:
    """Extend the pixels of ``image`` under ``known`` smoothly over the rest (push-pull, at half
    resolution: only a smooth continuation is wanted)."""
    from dicom_deid.faces.donors import fill_outside

    rows, cols = known.shape
    if min(rows, cols) < 16:
        return fill_outside(image, known > 0, levels)
    half = (max(1, cols // 2), max(1, rows // 2))
    small = cv2.resize(image, half, interpolation=cv2.INTER_AREA)
    small_known = cv2.resize(known, half, interpolation=cv2.INTER_AREA) >= 255
    filled = fill_outside(small, small_known, levels - 1)
    return cv2.resize(filled, (cols, rows), interpolation=cv2.INTER_LINEAR)


def opening_mask(xy: np.ndarray, contour: tuple[int, ...], part_map: np.ndarray,
                 label: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Pixels (rows, cols index arrays) of one opening (eye or mouth): its contour polygon at
    full resolution, kept only near where the depth-tested mesh shows that opening, so that a
    far eye hidden behind the nose in a profile view stays hidden."""
    pts = xy[list(contour)]
    box = roi_around(pts, part_map.shape, 3)
    if box.empty:
        return None
    out = np.zeros(box.shape, np.uint8)
    poly = np.round((pts - box.offset) * 16).astype(np.int32)
    cv2.fillPoly(out, [poly], 255, lineType=cv2.LINE_8, shift=4)
    near = cv2.dilate((box.of(part_map) == label).astype(np.uint8), np.ones((5, 5), np.uint8))
    ys, xs = np.nonzero(out & (near * 255))
    if len(ys) == 0:
        return None
    return ys + box.y0, xs + box.x0


def composite(frame: np.ndarray, roi: Roi, rendered: np.ndarray, rendered_mask: np.ndarray,
              cover: np.ndarray, feather: float | np.ndarray) -> None:
    """Paste ``rendered`` into ``frame`` (in place) over ``cover`` at full opacity, fading out
    over ``feather`` pixels outside it (a number, or one per pixel of the ROI: `feather_map`).
    Where ``cover`` extends beyond what was rendered, the rendered face is extended smoothly so
    that no original pixel of the covered area survives.
    """
    if not cv2.countNonZero(cover):
        return
    dist = cv2.distanceTransform(cv2.bitwise_not(cover), cv2.DIST_L2, 3)
    if isinstance(feather, np.ndarray):
        alpha = np.clip(1.0 - dist / np.maximum(feather, 1e-3), 0.0, 1.0)
    else:
        alpha = np.clip(1.0 - dist * (1.0 / max(feather, 1e-3)), 0.0, 1.0)
    alpha[cover > 0] = 1.0
    if cv2.countNonZero(cv2.bitwise_and(cv2.compare(alpha, 0, cv2.CMP_GT),
                                        cv2.bitwise_not(rendered_mask))):
        ext = fill_from(rendered, rendered_mask)
        cv2.copyTo(rendered, rendered_mask, ext)
        rendered = ext
    target = roi.of(frame)
    # OpenCV rather than NumPy arithmetic on the whole ROI (about 4x faster; this runs on
    # every face of every frame): alpha * rendered + (1 - alpha) * frame, rounded and
    # saturated to uint8 by convertScaleAbs once negatives are clipped.
    blended = cv2.blendLinear(rendered.astype(np.float32, copy=False),
                              target.astype(np.float32), alpha, 1.0 - alpha)
    target[...] = cv2.convertScaleAbs(cv2.max(blended, 0.0))


def feather_map(shape: tuple[int, int], origin: np.ndarray, down: np.ndarray, wide: float,
                narrow: float, start: float, end: float) -> np.ndarray:
    """Per pixel of a ROI (float32, pixels): ``narrow`` below the line through ``origin``
    (ROI coordinates) across the unit vector ``down`` moved ``start`` pixels along it, ``wide``
    above the line moved ``end`` pixels (end < start), linear between: a face's edge that is
    sharp along the jaw and cheeks (against the background, hair or neck, where a soft skin
    fringe reads as a wider face) and soft at the forehead (skin on both sides)."""
    rows, cols = shape
    xs = np.arange(cols, dtype=np.float32) - np.float32(origin[0])
    ys = np.arange(rows, dtype=np.float32) - np.float32(origin[1])
    along = ys[:, None] * np.float32(down[1]) + xs[None, :] * np.float32(down[0])
    t = np.clip((along - np.float32(end)) / np.float32(max(start - end, 1e-3)), 0.0, 1.0)
    return (np.float32(wide) + np.float32(narrow - wide) * t).astype(np.float32)
