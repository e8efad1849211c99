#!/usr/bin/env python
"""Build models/expression_model.npz: a linear identity + expression model of MediaPipe's mesh.

Inputs (../shared/data by default), a training split only, so that the other identities measure
the model honestly:
- London Set neutral/smiling pairs (DeBruine & Jones 2017, CC BY 4.0) of the even-numbered
  identities: the neutral shapes give the identity basis (PCA around their mean), each smiling
  shape minus its own neutral, both in the canonical frame, gives an expression direction;
  the neutral shapes' own expression coefficients, each fitted with an identity basis that was
  learned without that person (5-fold cross-fitting), give the resting-expression mean and
  covariance (mask3d replaces a person's resting expression with a draw from it);
- GRID clips (Cooke et al. 2006, CC BY 4.0) of speakers A, B, D and one clip of C: every frame
  minus its clip's robust neutral (the per-point median over the clip) gives speech and blink
  directions.

Shapes are put in the canonical frame of the donor model's mean shape (outer eye corners 1
apart, x right, y down) by a 3D similarity fitted on the points that expressions barely move
(the donor model's ``rigid_index``). The expression basis is the PCA of the pooled expression
displacements, with the smile pairs and the video frames weighted equally as two sources.

Only aggregates are written: mean shape, basis vectors and their variances, the residual noise
level, the resting-expression mean and covariance and the list of identities / clips used; never
a per-identity shape or coefficient.

    .venv/bin/python scripts/build_expression_model.py [--output models/expression_model.npz]

With the default settings the output is byte-identical from run to run (numpy writes fixed zip
timestamps); the committed file's sha256 is
55b4b1bacc0280a5f5f865159f31a0537421c011009430a3dfec42fa94aad862 (models/README.md).
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
from dicom_deid.faces.expression import (  # noqa: E402
    MODEL_NAME,
    canonical_transform,
)

DATA = Path(os.environ.get("DICOM_DEID_SHARED", REPO.parent / "shared")) / "data"
# Training clips: speakers A, B, D and the C clip id2_vcd_swwp2s; E (lbbc2a) and C's pwij3p are
# held out.
TRAIN_CLIPS = ("bbaf2n.mpg", "brbk7n.mpg", "lbax4n.mpg", "id2_vcd_swwp2s.mpg")
ATTRIBUTION = (
    "Built from the Face Research Lab London Set: DeBruine, L. & Jones, B. (2017), figshare, "
    "doi:10.6084/m9.figshare.5047666.v5, CC BY 4.0; and the GRID audio-visual speech corpus: "
    "Cooke, M., Barker, J., Cunningham, S. & Shao, X. (2006), CC BY 4.0 "
    "(https://creativecommons.org/licenses/by/4.0/). Only aggregates over the training "
    "identities are stored (mean shape, principal directions of identity and expression, their "
    "variances); no photograph, frame or per-person shape. Changes: landmarked with MediaPipe "
    "face mesh, similarity-aligned, reduced by PCA."
)
LICENCE = "CC BY 4.0 (derived aggregate of the London Set and GRID)"


def read_rgb(path: Path) -> np.ndarray:
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"{path}: cannot be read as an image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def london_pairs(folder: Path, parity: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(identity, neutral landmarks, smiling landmarks) of the identities with id % 2 == parity."""
    out = []
    for neutral in sorted((folder / "neutral").glob("*_03.jpg")):
        ident = neutral.name.split("_")[0]
        smiling = folder / "smiling" / f"{ident}_08.jpg"
        if int(ident) % 2 != parity or not smiling.is_file():
            continue
        a = mesh.landmarks_from_image(read_rgb(neutral))
        b = mesh.landmarks_from_image(read_rgb(smiling))
        if a is None or b is None:
            print(f"london {ident}: no face found, skipped", file=sys.stderr)
            continue
        out.append((ident, a.astype(np.float64), b.astype(np.float64)))
    return out


def clip_landmarks(path: Path, max_frames: int) -> np.ndarray:
    """Landmarks of every frame of a clip where MediaPipe (video mode) finds a face."""
    import mediapipe as mp

    from dicom_deid.faces.media import read_video

    shapes = []
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, refine_landmarks=True,
                                         max_num_faces=1) as fm:
        for i, rgb in enumerate(read_video(path)):
            if i >= max_frames:
                break
            res = fm.process(np.ascontiguousarray(rgb))
            if not res.multi_face_landmarks:
                continue
            rows, cols = rgb.shape[:2]
            lm = res.multi_face_landmarks[0].landmark
            shapes.append([(p.x * cols, p.y * rows, p.z * cols) for p in lm])
    return np.asarray(shapes, np.float64)


def pca(data: np.ndarray, keep: int, weights: np.ndarray | None = None
        ) -> tuple[np.ndarray, np.ndarray]:
    """Leading ``keep`` directions (rows) of uncentred, optionally weighted rows, and variances."""
    w = np.ones(len(data)) if weights is None else weights
    w = w / w.sum()
    _, sing, vt = np.linalg.svd(data * np.sqrt(w)[:, None], full_matrices=False)
    return vt[:keep], sing[:keep] ** 2


def rest_statistics(neutral: np.ndarray, mean: np.ndarray, exp_basis: np.ndarray,
                    exp_var: np.ndarray, k_id: int, prior_scale: float, folds: int = 5,
                    shrink: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Mean (k,) and covariance (k, k) of the expression coefficients of neutral faces.

    A neutral face's single-image expression fit is what the person's resting face (lip and eye
    shape at rest) puts into the expression basis. Each fold's neutrals are fitted with an
    identity basis learned from the other folds, as a new patient's face is fitted with a basis
    that never saw them: fitted with their own basis, the training faces' coefficients came out
    smaller than a stranger's. The covariance is shrunk halfway toward its diagonal (27 faces
    for 30 coefficients do not make a full-rank estimate).
    """
    pts = mesh.MESH_POINTS
    rows = (neutral - mean)[:, :pts].reshape(len(neutral), -1)
    coefs = []
    order = np.arange(len(rows))
    for f in range(folds):
        test = order[f::folds]
        train = np.setdiff1d(order, test)
        # As the model's own basis: around the mean of all training neutrals.
        id_basis, id_var = pca(rows[train], min(k_id, len(train) - 1))
        id_var = id_var * len(train) / (len(train) - 1)
        resid = rows[train] - (rows[train] @ id_basis.T) @ id_basis
        noise = float((resid ** 2).mean()) * prior_scale
        a = np.concatenate([id_basis, exp_basis]).T
        prior = noise / np.concatenate([id_var, exp_var])
        solve = np.linalg.solve(a.T @ a + np.diag(prior), a.T)
        coefs.append((solve @ rows[test].T).T[:, len(id_basis):])
    b = np.concatenate(coefs)
    centre = b.mean(axis=0)
    cov = np.cov(b, rowvar=False)
    cov = (1.0 - shrink) * cov + shrink * np.diag(np.diag(cov))
    return centre, cov


def mirror_index(mean: np.ndarray) -> np.ndarray:
    """For each mesh point, its left-right counterpart on the (nearly symmetric) mean shape."""
    pts = mean[: mesh.MESH_POINTS, :2]
    centre = pts[:, 0].mean()
    flipped = np.stack([2 * centre - pts[:, 0], pts[:, 1]], axis=1)
    dist = np.linalg.norm(flipped[:, None] - pts[None], axis=2)
    return dist.argmin(axis=1)


def mirrored(displacements: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Displacements (N, 468, 3) of the mirror-image face: points swapped, x negated."""
    out = displacements[:, index].copy()
    out[..., 0] *= -1
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", type=Path, default=REPO / "models" / MODEL_NAME)
    ap.add_argument("--identity-components", type=int, default=12)
    ap.add_argument("--expression-components", type=int, default=30)
    ap.add_argument("--clip-frames", type=int, default=75)
    ap.add_argument("--mirror", action="store_true",
                    help="add the mirror image of each expression displacement (cross-validated "
                    "cosine 0.85 with it, 0.87 without: off by default)")
    ap.add_argument("--prior-scale", type=float, default=1.0,
                    help="multiplies the noise level that weighs the coefficient prior")
    ap.add_argument("--exclude", default="", help="comma-separated training identities to leave "
                    "out (cross-validation of the settings within the training split)")
    ap.add_argument("--cache", type=Path, help="keep the raw training landmarks here (never "
                    "commit it: it holds per-person shapes) and reuse them on the next run")
    args = ap.parse_args(argv)

    base = donors.load_model()
    reference = base.canonical.astype(np.float64)
    rigid = base.rigid_index if base.rigid_index is not None else np.arange(mesh.MESH_POINTS)

    if args.cache and args.cache.is_file():
        with np.load(args.cache) as c:
            ids = [str(x) for x in c["ids"]]
            neutral_raw, smiling_raw = c["neutral"], c["smiling"]
            clips = {name: c[f"clip_{name}"] for name in TRAIN_CLIPS if f"clip_{name}" in c}
    else:
        pairs = london_pairs(DATA / "faces" / "london", parity=0)
        ids = [p[0] for p in pairs]
        neutral_raw = np.stack([p[1] for p in pairs])
        smiling_raw = np.stack([p[2] for p in pairs])
        clips = {name: clip_landmarks(DATA / "video" / "grid" / name, args.clip_frames)
                 for name in TRAIN_CLIPS}
        if args.cache:
            np.savez_compressed(args.cache, ids=np.array(ids), neutral=neutral_raw,
                                smiling=smiling_raw,
                                **{f"clip_{k}": v for k, v in clips.items()})

    exclude = {e for e in args.exclude.split(",") if e}
    keep = [i for i, ident in enumerate(ids) if ident not in exclude]
    ids = [ids[i] for i in keep]
    neutral_raw, smiling_raw = neutral_raw[keep], smiling_raw[keep]

    def canon(shape: np.ndarray, ref: np.ndarray) -> np.ndarray:
        return canonical_transform(shape, ref, rigid).inverse_apply(shape)

    # Mean of the training neutrals, iterated a few times (generalised Procrustes on the rigid
    # points), started from the donor model's mean so that both share one canonical frame.
    mean = reference.copy()
    for _ in range(5):
        neutral = np.stack([canon(s, mean) for s in neutral_raw])
        mean = neutral.mean(axis=0)
        mean = canonical_transform(mean, reference, rigid).inverse_apply(mean)
    neutral = np.stack([canon(s, mean) for s in neutral_raw])
    # Each smile against its own neutral (aligned on the rigid points to it, then expressed in
    # the neutral's canonical frame), so that the smile displacement carries no identity.
    smile = []
    for n_raw, s_raw, n_can in zip(neutral_raw, smiling_raw, neutral, strict=True):
        to_neutral = canonical_transform(s_raw, n_raw, rigid)
        s_in_n = to_neutral.inverse_apply(s_raw)
        back = canonical_transform(n_raw, mean, rigid)
        smile.append(back.inverse_apply(s_in_n) - n_can)
    smile = np.stack(smile)
    speech = []
    for name, frames in clips.items():
        if len(frames) < 10:
            print(f"grid {name}: {len(frames)} frames with a face, skipped", file=sys.stderr)
            continue
        can = np.stack([canon(f, mean) for f in frames])
        robust = np.median(can, axis=0)
        speech.append(can - robust)
        print(f"grid {name}: {len(frames)} frames", file=sys.stderr)
    speech = np.concatenate(speech)

    pts = mesh.MESH_POINTS
    flat = slice(0, 3 * pts)
    id_dirs = (neutral - mean)[:, :pts].reshape(len(neutral), -1)
    k_id = min(args.identity_components, len(neutral) - 1)
    id_basis, id_var = pca(id_dirs, k_id)
    id_var = id_var * len(neutral) / (len(neutral) - 1)
    residual = id_dirs - (id_dirs @ id_basis.T) @ id_basis
    noise = float((residual ** 2).mean()) * args.prior_scale
    smile, speech = smile[:, :pts], speech[:, :pts]
    if args.mirror:
        # A smile or a blink of the left side is as likely as of the right: the mirror images
        # double the few smiles and keep the basis from learning one person's asymmetry.
        flip = mirror_index(mean)
        smile = np.concatenate([smile, mirrored(smile, flip)])
        speech = np.concatenate([speech, mirrored(speech, flip)])
    exp_rows = np.concatenate([smile.reshape(len(smile), -1),
                               speech.reshape(len(speech), -1)])
    weights = np.concatenate([np.full(len(smile), 0.5 / len(smile)),
                              np.full(len(speech), 0.5 / len(speech))])
    k_exp = min(args.expression_components, len(exp_rows) - 1)
    exp_basis, exp_var = pca(exp_rows, k_exp, weights)
    rest_mean, rest_cov = rest_statistics(neutral, mean, exp_basis, exp_var, k_id,
                                          args.prior_scale)
    explained = float(exp_var.sum() / (exp_rows ** 2 * weights[:, None] / weights.sum()).sum())
    meta = {"london_identities": len(ids), "london_parity": "even", "grid_clips": list(clips),
            "grid_frames": int(len(speech)), "identity_components": int(k_id),
            "expression_components": int(k_exp), "expression_explained": explained,
            "noise": noise, "mirror": args.mirror, "prior_scale": args.prior_scale}
    print(json.dumps(meta), file=sys.stderr)
    fields = dict(
        mean_shape=mean.astype(np.float32),
        identity_basis=id_basis[:, flat].astype(np.float32),
        identity_variances=id_var.astype(np.float32),
        expression_basis=exp_basis[:, flat].astype(np.float32),
        expression_variances=exp_var.astype(np.float32),
        noise_variance=np.float32(noise),
        rest_mean=rest_mean.astype(np.float32),
        rest_covariance=rest_cov.astype(np.float32),
        rigid_index=np.asarray(rigid, np.int16),
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
        os.chmod(tmp, 0o644)
        os.replace(tmp, args.output)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
