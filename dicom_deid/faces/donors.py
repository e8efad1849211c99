"""Synthetic donor faces: a PCA model of aligned face textures, sampled from a seed.

The committed model (``models/donor_model.npz``, built by ``scripts/build_donor_model.py``)
holds only aggregates over the training identities: the mean texture, the leading principal
components and their variances, the mean face shape and the texture layout. A donor is
``mean + sum_k z_k * sqrt(var_k) * component_k`` with ``z`` drawn from the seed, so it is a
face of nobody, and each study gets its own (the pipeline derives the seed from the site key).

A site that has consented donor photos puts them in ``models/donors/`` (see its README): then
the donors are those photos, aligned to the same texture layout, and the seed chooses one.

Textures live in a fixed layout: the mean shape seen from the front, scaled into a square
image; ``layout.uv`` gives each of the 478 landmarks its texture position.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dicom_deid.faces import mesh

log = logging.getLogger(__name__)

MODEL_NAME = "donor_model.npz"
DONOR_PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class TextureLayout:
    """Where each landmark sits in the texture, and which texture pixels the face covers."""

    size: int
    uv: np.ndarray           # (478, 2) float32 texture pixel coordinates
    triangles: np.ndarray    # (T, 3) int32, tessellation plus eye and mouth openings
    parts: np.ndarray        # (T,) int8 part label per triangle (mesh.PART_*)
    face_mask: np.ndarray    # (size, size) bool, texture pixels inside the mesh


def make_layout(canonical: np.ndarray, size: int, margin: float = 0.03) -> TextureLayout:
    """A texture layout from a frontal canonical shape (x right, y down)."""
    xy = canonical[:, :2].astype(np.float64)
    lo = xy[: mesh.MESH_POINTS].min(axis=0)
    hi = xy[: mesh.MESH_POINTS].max(axis=0)
    scale = (1.0 - 2 * margin) * size / float((hi - lo).max())
    uv = (xy - (lo + hi) / 2) * scale + size / 2.0
    tris, parts = mesh.full_mesh(uv)
    raster = mesh.rasterize(uv, -canonical[:, 2], tris, (size, size))
    face_mask = raster.mask() > 0
    return TextureLayout(size, uv.astype(np.float32), tris, parts, face_mask)


def align_texture(rgb: np.ndarray, landmarks: np.ndarray, layout: TextureLayout) -> np.ndarray:
    """Warp the face of ``rgb`` into the texture layout, per mesh triangle (float32, 0..255)."""
    import cv2

    raster = mesh.rasterize(layout.uv, np.zeros(len(layout.uv)), layout.triangles,
                            (layout.size, layout.size))
    src = raster.interpolate(landmarks[:, :2].astype(np.float32), layout.triangles)
    map_x = np.full((layout.size, layout.size), -1.0, np.float32)
    map_y = np.full((layout.size, layout.size), -1.0, np.float32)
    map_x[raster.ys, raster.xs] = src[:, 0]
    map_y[raster.ys, raster.xs] = src[:, 1]
    tex = cv2.remap(rgb, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    tex = tex.astype(np.float32)
    return fill_outside(tex, layout.face_mask)


def fill_outside(image: np.ndarray, mask: np.ndarray, levels: int = 6) -> np.ndarray:
    """Extend the pixels under ``mask`` smoothly over the rest of the image (push-pull).

    Bilinear sampling near the edge of the face then never mixes in an undefined colour.
    """
    import cv2

    img = image.astype(np.float32)
    weight = mask.astype(np.float32)
    if img.ndim != 3:
        raise ValueError(f"expected an H x W x C image, got shape {img.shape}")
    channels = img.shape[2]

    def spread(plane: np.ndarray) -> np.ndarray:
        # A weight plane repeated over the channels: OpenCV's element-wise operations do not
        # broadcast, and on these small images they cost about half as much as NumPy's
        # broadcasting ones (this runs for every swapped face of every frame, in `fill_from`).
        # Each is the same single float32 operation, so the result is the same to the bit.
        return cv2.merge([plane] * channels) if channels > 1 else plane[..., None]

    pyramid = [(cv2.multiply(img, spread(weight)).reshape(img.shape), weight)]
    for _ in range(levels):
        v, w = pyramid[-1]
        pyramid.append((cv2.pyrDown(v).reshape(-1, (v.shape[1] + 1) // 2, channels),
                        cv2.pyrDown(w)))
    v, w = pyramid[-1]
    filled = cv2.divide(v, spread(np.maximum(w, np.float32(1e-6)))).reshape(v.shape)
    for v, w in reversed(pyramid[:-1]):
        up = cv2.resize(filled, (v.shape[1], v.shape[0]),
                        interpolation=cv2.INTER_LINEAR).reshape(v.shape)
        known = cv2.divide(v, spread(np.maximum(w, np.float32(1e-6))))
        a = spread(np.clip(w * 4.0, 0.0, 1.0))
        filled = cv2.add(cv2.multiply(a, known), cv2.multiply(1.0 - a, up)).reshape(v.shape)
    out = img.copy()
    cv2.copyTo(filled, np.logical_not(mask).astype(np.uint8), out)
    return out


@dataclass(frozen=True)
class Donor:
    """One synthetic (or consented) face: an aligned texture and an iris colour."""

    texture: np.ndarray      # (size, size, 3) float32 RGB, 0..255, in the model's layout
    iris_rgb: np.ndarray     # (3,) float32
    label: str               # "pca:<seed>" or "photo:<file name>"; never a person's name


# Iris colours (RGB) a donor draws from: browns, hazel, green, grey-blue, blue.
_IRIS_PALETTE = np.array([[72, 45, 28], [96, 62, 38], [58, 38, 26], [110, 88, 52],
                          [88, 104, 70], [92, 112, 128], [70, 100, 140], [45, 30, 22]],
                         dtype=np.float32)


class DonorModel:
    """The committed PCA texture model and the shapes it was built on."""

    def __init__(self, path: Path) -> None:
        try:
            with np.load(path, allow_pickle=False) as data:
                fields = {k: data[k] for k in data.files}
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a readable donor model ({exc})") from exc
        required = ("mean_texture", "components", "variances", "face_index", "canonical_shape",
                    "texture_size", "attribution")
        missing = [k for k in required if k not in fields]
        if missing:
            raise ValueError(f"{path}: donor model lacks {', '.join(missing)}")
        self.path = path
        self.attribution = str(fields["attribution"])
        self.licence = str(fields.get("licence", ""))
        self.canonical = fields["canonical_shape"].astype(np.float32)
        self.size = int(fields["texture_size"])
        self.mean_texture = fields["mean_texture"].astype(np.float32)
        self.components = fields["components"]               # (k, P) float16
        self.variances = fields["variances"].astype(np.float32)
        self.face_index = fields["face_index"].astype(np.int64)  # flat indices into size*size*3
        self.spread = float(fields.get("sample_spread", 1.0))
        # Landmarks that expressions barely move: pose is fitted on these (mask3d).
        rigid = fields.get("rigid_index")
        self.rigid_index = None if rigid is None or len(rigid) < 10 else rigid.astype(np.int64)
        self.layout = make_layout(self.canonical, self.size)
        if self.mean_texture.shape != (self.size, self.size, 3):
            raise ValueError(f"{path}: mean texture shape {self.mean_texture.shape} "
                             f"does not match texture size {self.size}")
        if self.components.shape != (len(self.variances), len(self.face_index)):
            raise ValueError(f"{path}: components {self.components.shape} do not match "
                             f"{len(self.variances)} variances x {len(self.face_index)} pixels")

    def sample(self, seed: int) -> Donor:
        """The donor for ``seed``: a random point of the model, the same for the same seed."""
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x646F6E6F72])  # "donor"
        z = rng.standard_normal(len(self.variances)).astype(np.float32)
        coef = z * np.sqrt(self.variances) * self.spread
        flat = self.mean_texture.reshape(-1).copy()
        flat[self.face_index] += coef @ self.components.astype(np.float32)
        texture = np.clip(flat.reshape(self.mean_texture.shape), 0.0, 255.0)
        texture = fill_outside(texture, self.layout.face_mask)
        iris = _IRIS_PALETTE[int(rng.integers(len(_IRIS_PALETTE)))]
        iris = np.clip(iris * rng.uniform(0.85, 1.15), 0, 255).astype(np.float32)
        return Donor(texture.astype(np.float32), iris, f"pca:{int(seed) & 0xFFFFFFFF}")

    def embed(self, rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The face of ``rgb`` at ``landmarks`` as coefficients of the model's components, in
        standard deviations: the model's own appearance embedding (not a recogniser; swap
        uses it to turn down a donor whose render comes out close to the patient)."""
        tex = align_texture(rgb, landmarks, self.layout).reshape(-1)[self.face_index]
        centred = tex - self.mean_texture.reshape(-1)[self.face_index]
        return (self.components.astype(np.float32) @ centred) / np.sqrt(self.variances)

    def mean(self) -> Donor:
        """The mean texture: an average over all training identities, nobody's face."""
        return Donor(fill_outside(self.mean_texture, self.layout.face_mask),
                     np.array([80, 60, 45], np.float32), "mean")


@functools.cache
def load_model(path: str | None = None) -> DonorModel:
    """The donor model (the committed one unless ``path`` is given), loaded once per process."""
    if path is None:
        from dicom_deid.resources import model_path

        return DonorModel(model_path(MODEL_NAME))
    return DonorModel(Path(path))


def default_donors_dir() -> Path:
    from dicom_deid.resources import models_dir

    return models_dir() / "donors"


def donor_photos(directory: Path) -> list[Path]:
    """Consented donor photos in ``directory``, in a stable order."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir()
                  if p.is_file() and p.suffix.lower() in DONOR_PHOTO_SUFFIXES)


@functools.cache
def _photo_donor(path_str: str, mtime_ns: int, model_path: str | None) -> Donor:
    import cv2

    path = Path(path_str)
    bgr = cv2.imread(path_str, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path}: donor photo cannot be read as an image")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    landmarks = mesh.landmarks_from_image(rgb)
    if landmarks is None:
        raise ValueError(f"{path}: no face found in the donor photo")
    model = load_model(model_path)
    texture = align_texture(rgb, landmarks, model.layout)
    digest = hashlib.sha256(path.name.encode()).digest()
    iris = _IRIS_PALETTE[digest[0] % len(_IRIS_PALETTE)]
    return Donor(texture, iris.copy(), f"photo:{path.name}")


def candidate_seed(seed: int, index: int) -> int:
    """The seed of a study's ``index``-th donor candidate: the study's own seed first, then
    keyed successors of it (nobody without the site key can predict either)."""
    if index == 0:
        return int(seed) & 0xFFFFFFFF
    digest = hashlib.sha256(f"donor candidate {int(seed) & 0xFFFFFFFF} {index}".encode())
    return int.from_bytes(digest.digest()[:4], "big")


DONOR_FALLBACKS = ("farthest", "first", "rank")


def settle_candidate(distance: Callable[[int], float], count: int, min_distance: float,
                     fallback: str = "farthest", reject_closest: int = 0) -> tuple[int, float]:
    """Which of a study's ``count`` donor candidates it keeps: (index, its distance).

    ``distance(index)``: how far candidate ``index``'s render lies from the patient (asked
    lazily, in seed order, at most once per index). The first candidate in seed order at least
    ``min_distance`` away is kept. When none is, ``fallback`` says which: "farthest" (the one
    farthest from the patient), "first" (the study's own first candidate: a choice that does
    not depend on where the patient lies) or "rank": the ``reject_closest`` nearest the patient
    are turned down and the first of the rest in seed order is kept (with min_distance = inf
    this is a rank among the study's own candidates instead of a bar). "farthest" sends every
    study of one patient's fallbacks the same way, away from the patient, which makes its
    donors alike for a recogniser (London: pair z -0.53 against -0.38 with "first");
    "rank" keeps part of that push, and so part of its protection against leaks.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if fallback not in DONOR_FALLBACKS:
        raise ValueError(f"fallback must be one of {DONOR_FALLBACKS}, got {fallback!r}")
    if not 0 <= reject_closest < count:
        raise ValueError(f"reject_closest must be within 0..{count - 1}, got {reject_closest}")
    seen: list[float] = []
    for index in range(count):
        seen.append(float(distance(index)))
        if seen[-1] >= min_distance:
            return index, seen[-1]
    if fallback == "rank":
        # Stable: ties keep seed order, so the choice is a function of the distances alone.
        near = set(sorted(range(count), key=lambda i: (seen[i], i))[:reject_closest])
        index = next(i for i in range(count) if i not in near)
    else:
        index = int(np.argmax(seen)) if fallback == "farthest" else 0
    return index, seen[index]


def choose_donor(seed: int, donors_dir: Path | None = None,
                 model_path: str | None = None) -> Donor:
    """The donor for a study: a consented photo chosen by ``seed`` if the site has any,
    otherwise the PCA model's sample for ``seed``."""
    directory = default_donors_dir() if donors_dir is None else Path(donors_dir)
    photos = donor_photos(directory)
    if photos:
        path = photos[int(seed) % len(photos)]
        log.info("donor: consented photo %s (%d available)", path.name, len(photos))
        return _photo_donor(str(path), path.stat().st_mtime_ns, model_path)
    return load_model(model_path).sample(seed)
