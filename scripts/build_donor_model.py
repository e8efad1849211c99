#!/usr/bin/env python
"""Build models/donor_model.npz: a PCA model of aligned face textures plus the mean face shape.

Input: a folder of frontal face photos with one identity per file (by default the neutral photos
of the Face Research Lab London Set, DeBruine & Jones 2017, CC BY 4.0). Each photo gets
MediaPipe's 478 landmarks; the shapes are aligned by generalised Procrustes analysis into a
canonical frame (outer eye corners 1 apart, x right, y down, z away from the camera); each face
is warped per mesh triangle into a texture layout of the mean shape; PCA over the textures.

Only aggregates are written: the mean texture, the leading components (float16, face pixels
only) and their variances, and the mean shape. Never the images, never per-identity
coefficients. With --check-seeds the script samples donors and verifies with dlib's recogniser
(eval extra) that none matches any identity of the check set (distance >= 0.6); the summary is
stored in the model.

    .venv/bin/python scripts/build_donor_model.py \
        --photos ../shared/data/faces/london/neutral \
        --check ../shared/data/faces/london --check-seeds 200 --output models/donor_model.npz
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dicom_deid.faces import donors, mesh  # noqa: E402

ATTRIBUTION = (
    "Built from the Face Research Lab London Set: DeBruine, L. & Jones, B. (2017), "
    "figshare, doi:10.6084/m9.figshare.5047666.v5, licensed CC BY 4.0 "
    "(https://creativecommons.org/licenses/by/4.0/). The model holds only aggregates over the "
    "identities (mean texture, leading principal components, variances, mean shape); no "
    "photograph is included. Changes: landmarked with MediaPipe face mesh, aligned by "
    "Procrustes analysis, warped per triangle to the mean shape, reduced by PCA."
)
LICENCE = "CC BY 4.0 (derived aggregate of the Face Research Lab London Set)"


def read_rgb(path: Path) -> np.ndarray:
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"{path}: cannot be read as an image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def canonical_frame(shape: np.ndarray) -> np.ndarray:
    """Centre, scale (outer eye corners 1 apart) and rotate a shape into the canonical frame."""
    s = shape - shape[: mesh.MESH_POINTS].mean(axis=0)
    a, b = mesh.OUTER_EYE_CORNERS
    x = s[b] - s[a]
    x /= np.linalg.norm(x)
    y = s[152] - s[10]                      # forehead to chin
    y -= x * (y @ x)
    y /= np.linalg.norm(y)
    z = np.cross(x, y)
    s = s @ np.stack([x, y, z], axis=1)
    return s / np.linalg.norm(s[b, :2] - s[a, :2])


def procrustes_mean(shapes: list[np.ndarray], iterations: int = 10) -> np.ndarray:
    """Generalised Procrustes mean of 3D shapes, in the canonical frame."""
    mean = canonical_frame(shapes[0].astype(np.float64))
    for _ in range(iterations):
        aligned = [mesh.fit_similarity(s, mean).apply(s) for s in shapes]
        new = canonical_frame(np.mean(aligned, axis=0))
        if np.abs(new - mean).max() < 1e-7:
            break
        mean = new
    return mean


BROW_TOP = (70, 63, 105, 66, 107, 336, 296, 334, 293, 300)


def clear_non_skin(texture: np.ndarray, layout: donors.TextureLayout) -> np.ndarray:
    """Replace hair falling over the forehead (a fringe), and background caught at the rim of
    the face, by the face's own skin.

    Such pixels are found as forehead pixels (above the brows) much darker than, or far in
    colour from, the median cheek skin, and rim pixels far from it in lightness or colour; they
    are treated as missing and filled from the skin around them, so that fringes and backdrops
    do not become principal components that every donor then carries.
    """
    import cv2

    lab = cv2.cvtColor(np.clip(texture, 0, 255).astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    mask = layout.face_mask
    brow_y = float(layout.uv[list(BROW_TOP), 1].min())
    rows = np.arange(layout.size)[:, None]
    cheeks = mask & (rows > brow_y + 0.25 * layout.size) & (rows < brow_y + 0.45 * layout.size)
    ref = np.median(lab[cheeks], axis=0)
    dist_ab = np.linalg.norm(lab[..., 1:] - ref[1:], axis=2)
    hair = mask & (rows < brow_y - 2) & ((lab[..., 0] < ref[0] - 14) | (dist_ab > 18))
    hair = cv2.dilate(hair.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    hair &= mask & (rows < brow_y)
    inside = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3)
    rim = mask & (inside < 0.04 * layout.size)
    hair |= rim & ((np.abs(lab[..., 0] - ref[0]) > 20) | (dist_ab > 18))
    if not hair.any():
        return texture
    filled = donors.fill_outside(texture, mask & ~hair)
    return np.where(hair[..., None], filled, texture)


def rigid_points(pairs: list[tuple[np.ndarray, np.ndarray]], keep: float = 0.35) -> np.ndarray:
    """Mesh points that an expression (neutral -> smiling, same person) moves least.

    Each smiling shape is aligned to its neutral shape on the current rigid set (starting with
    all points), the per-point displacement is averaged over identities, and the least-moving
    ``keep`` share becomes the new set; a few rounds settle it.
    """
    idx = np.arange(mesh.MESH_POINTS)
    for _ in range(4):
        moves = []
        for neutral, smiling in pairs:
            n, s = neutral[: mesh.MESH_POINTS], smiling[: mesh.MESH_POINTS]
            fit = mesh.fit_similarity(s[idx], n[idx])
            moved = np.linalg.norm(fit.apply(s) - n, axis=1) / mesh.inter_ocular(n)
            moves.append(moved)
        score = np.mean(moves, axis=0)
        idx = np.sort(np.argsort(score)[: int(keep * mesh.MESH_POINTS)])
    return idx.astype(np.int16)


def dlib_models():
    import dlib
    import face_recognition_models as frm

    return (dlib.get_frontal_face_detector(),
            dlib.shape_predictor(frm.pose_predictor_model_location()),
            dlib.face_recognition_model_v1(frm.face_recognition_model_location()))


def descriptor(models, rgb: np.ndarray, rect=None) -> np.ndarray | None:
    import dlib

    detector, predictor, recogniser = models
    if rect is None:
        found = detector(rgb, 1)
        if not found:
            return None
        rect = max(found, key=lambda r: r.width() * r.height())
    elif not isinstance(rect, dlib.rectangle):
        rect = dlib.rectangle(*[int(v) for v in rect])
    shape = predictor(rgb, rect)
    return np.asarray(recogniser.compute_face_descriptor(rgb, shape), np.float64)


def portrait(texture: np.ndarray, layout: donors.TextureLayout, pad: int = 64) -> np.ndarray:
    """The donor texture as a frontal face on a grey background, for the recogniser check."""
    import cv2

    size = layout.size
    canvas = np.full((size + 2 * pad, size + 2 * pad, 3), 128.0, np.float32)
    alpha = cv2.GaussianBlur(layout.face_mask.astype(np.float32), (0, 0), 1.5)[..., None]
    roi = canvas[pad:pad + size, pad:pad + size]
    canvas[pad:pad + size, pad:pad + size] = alpha * texture + (1 - alpha) * roi
    return np.clip(canvas, 0, 255).astype(np.uint8)


def check_donors(model: donors.DonorModel, check_dir: Path, seeds: int) -> dict:
    """dlib distances between sampled donors and every identity of the check set."""
    models = dlib_models()
    gallery = []
    for path in sorted(check_dir.rglob("*")):
        if path.suffix.lower() not in (".jpg", ".jpeg", ".png"):
            continue
        d = descriptor(models, read_rgb(path))
        if d is not None:
            gallery.append((path.stem.split("_")[0], d))
    ids = sorted({g[0] for g in gallery})
    gal = np.stack([g[1] for g in gallery])
    pad = 64
    uv = model.layout.uv[: mesh.MESH_POINTS] + pad
    rect = (uv[:, 0].min(), uv[:, 1].min(), uv[:, 0].max(), uv[:, 1].max())
    mins, nearest_ids, donor_desc, detected = [], [], [], 0

    for seed in range(seeds):
        img = portrait(model.sample(seed).texture, model.layout, pad)
        found = models[0](img, 1)
        detected += bool(found)
        d = descriptor(models, img, found[0] if found else rect)
        dist = np.linalg.norm(gal - d, axis=1)
        mins.append(float(dist.min()))
        nearest_ids.append(gallery[int(dist.argmin())][0])
        donor_desc.append(d)
    donor_desc = np.stack(donor_desc)
    pair = np.linalg.norm(donor_desc[:, None] - donor_desc[None], axis=2)
    iu = np.triu_indices(len(donor_desc), 1)
    # Each component on its own, pushed 3 standard deviations either way, must not be anybody
    # either: a component dominated by one training identity would show it.
    component_min = []
    for k in range(len(model.variances)):
        for sign in (-3.0, 3.0):
            flat = model.mean_texture.reshape(-1).copy()
            flat[model.face_index] += (sign * np.sqrt(model.variances[k])
                                       * model.components[k].astype(np.float32))
            tex = np.clip(flat.reshape(model.mean_texture.shape), 0, 255)
            d = descriptor(models, portrait(tex, model.layout, pad), rect)
            component_min.append(float(np.linalg.norm(gal - d, axis=1).min()))
    mean_img = portrait(model.mean().texture, model.layout, pad)
    mean_d = descriptor(models, mean_img, rect)
    # Context for the numbers above: how close real people of the check set come to each other
    # (impostors) and to their own other photo (genuine pairs).
    gal_ids = np.array([g[0] for g in gallery])
    between = np.linalg.norm(gal[:, None] - gal[None], axis=2)
    same = gal_ids[:, None] == gal_ids[None]
    impostor_nearest = np.where(same, np.inf, between).min(axis=1)
    genuine = between[np.triu(same, 1)]
    return {
        "check_images": len(gallery),
        "check_identities": len(ids),
        "seeds": seeds,
        "donor_faces_detected": detected,
        "min_distance_to_any_identity": float(np.min(mins)),
        "median_min_distance": float(np.median(mins)),
        "donors_below_0.6": int(np.sum(np.asarray(mins) < 0.6)),
        "distinct_nearest_identities": len(set(nearest_ids)),
        "donor_pair_distance_min": float(pair[iu].min()),
        "donor_pair_distance_median": float(np.median(pair[iu])),
        "component_extremes_min_distance": float(np.min(component_min)),
        "component_extremes_below_0.6": int(np.sum(np.asarray(component_min) < 0.6)),
        "mean_face_min_distance": float(np.linalg.norm(gal - mean_d, axis=1).min()),
        "check_impostor_nearest_median": float(np.median(impostor_nearest)),
        "check_impostor_nearest_below_0.6": float(np.mean(impostor_nearest < 0.6)),
        "check_genuine_distance_median": float(np.median(genuine)) if len(genuine) else None,
        "check_genuine_distance_max": float(genuine.max()) if len(genuine) else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=Path, required=True,
                    help="folder of frontal photos, one identity each")
    ap.add_argument("--output", type=Path, default=REPO / "models" / donors.MODEL_NAME)
    ap.add_argument("--size", type=int, default=192, help="texture size in pixels")
    ap.add_argument("--components", type=int, default=20,
                    help="principal components kept (few: each must mix many identities)")
    ap.add_argument("--spread", type=float, default=1.0,
                    help="sampling spread in standard deviations of each component")
    ap.add_argument("--expression-photos", type=Path,
                    help="the same identities with an expression (file names share the "
                         "identity prefix): used to find the landmarks expressions barely move")
    ap.add_argument("--exclude", default="", help="comma-separated identity prefixes to leave out")
    ap.add_argument("--check", type=Path, help="folder of photos the donors must not match")
    ap.add_argument("--check-seeds", type=int, default=0)
    ap.add_argument("--gate", type=float, default=0.6,
                    help="refuse the model if a sampled donor or a component extreme comes "
                         "closer than this dlib distance to any check identity")
    args = ap.parse_args(argv)

    exclude = {e for e in args.exclude.split(",") if e}
    paths = sorted(p for p in args.photos.iterdir()
                   if p.suffix.lower() in (".jpg", ".jpeg", ".png")
                   and p.stem.split("_")[0] not in exclude)
    if len(paths) < args.components + 1:
        raise SystemExit(f"{args.photos}: {len(paths)} photos, need more than {args.components}")
    images, shapes, kept = [], [], []
    for path in paths:
        rgb = read_rgb(path)
        lm = mesh.landmarks_from_image(rgb)
        if lm is None:
            print(f"{path.name}: no face found, skipped", file=sys.stderr)
            continue
        images.append(rgb)
        shapes.append(lm.astype(np.float64))
        kept.append(path)
    print(f"{len(shapes)} faces landmarked", file=sys.stderr)
    canonical = procrustes_mean(shapes).astype(np.float32)
    rigid = np.zeros(0, np.int16)
    if args.expression_photos:
        by_id = {p.stem.split("_")[0]: s for p, s in zip(kept, shapes, strict=True)}
        pairs = []
        for path in sorted(args.expression_photos.iterdir()):
            ident = path.stem.split("_")[0]
            if ident in by_id and path.suffix.lower() in (".jpg", ".jpeg", ".png"):
                lm = mesh.landmarks_from_image(read_rgb(path))
                if lm is not None:
                    pairs.append((by_id[ident], lm.astype(np.float64)))
        rigid = rigid_points(pairs)
        print(f"rigid points from {len(pairs)} expression pairs: {len(rigid)}", file=sys.stderr)
    layout = donors.make_layout(canonical, args.size)
    textures = np.stack([clear_non_skin(
        donors.align_texture(rgb, lm.astype(np.float32), layout), layout)
        for rgb, lm in zip(images, shapes, strict=True)])
    mask3 = np.repeat(layout.face_mask[..., None], 3, axis=2).reshape(-1)
    face_index = np.nonzero(mask3)[0]
    data = textures.reshape(len(textures), -1)[:, face_index].astype(np.float64)
    mean = data.mean(axis=0)
    _, sing, vt = np.linalg.svd(data - mean, full_matrices=False)
    variances = sing ** 2 / (len(data) - 1)
    k = min(args.components, len(data) - 1)
    explained = float(variances[:k].sum() / variances.sum())
    mean_texture = textures.mean(axis=0).reshape(-1)
    mean_texture[face_index] = mean
    mean_texture = mean_texture.reshape(args.size, args.size, 3)
    mean_texture = donors.fill_outside(mean_texture, layout.face_mask)
    meta = {"identities": len(shapes), "components": k, "explained_variance": explained,
            "texture_size": args.size, "spread": args.spread}
    print(json.dumps(meta), file=sys.stderr)
    fields = dict(
        mean_texture=np.clip(np.round(mean_texture), 0, 255).astype(np.uint8),
        components=vt[:k].astype(np.float16),
        variances=variances[:k].astype(np.float32),
        face_index=face_index.astype(np.int32),
        canonical_shape=canonical,
        rigid_index=rigid,
        texture_size=np.int32(args.size),
        sample_spread=np.float32(args.spread),
        attribution=np.str_(ATTRIBUTION),
        licence=np.str_(LICENCE),
        build=np.str_(json.dumps(meta)),
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=args.output.parent, suffix=".npz.tmp")
    os.close(fd)
    try:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **fields)
        if args.check and args.check_seeds:
            summary = check_donors(donors.DonorModel(Path(tmp)), args.check, args.check_seeds)
            print(json.dumps(summary, indent=1), file=sys.stderr)
            if (summary["min_distance_to_any_identity"] < args.gate
                    or summary["component_extremes_min_distance"] < args.gate):
                raise SystemExit(f"a sampled donor or component extreme comes within {args.gate} "
                                 "of a check identity: model not written")
            summary["gate"] = args.gate
            fields["donor_check"] = np.str_(json.dumps(summary))
            with open(tmp, "wb") as handle:
                np.savez_compressed(handle, **fields)
        os.chmod(tmp, 0o644)
        os.replace(tmp, args.output)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
