"""Expression separated from identity: a linear model of MediaPipe's 478-point mesh.

In the canonical frame (the donor model's mean shape: outer eye corners 1 apart, x right, y
down; similarity-aligned on the points that expressions barely move) a face is

    shape = mean + identity_basis @ a + expression_basis @ b + residual

The committed model (``models/expression_model.npz``, built by
``scripts/build_expression_model.py`` from a training split of the London Set and GRID) holds the
mean shape, the two bases and their variances. For one image the coefficients are fitted jointly
(regularised least squares, a Gaussian prior on each coefficient), so that a wide mouth that is
the person's anatomy goes to ``a`` and a smile goes to ``b``; `ExpressionModel.expression` returns
only ``expression_basis @ b``: identity and the unexplained residual are dropped.

In video, `NeutralTracker` keeps a robust per-track neutral: the per-point median of each
frame's neutral estimate (the frame minus its fitted expression). The displacement is the frame
minus that neutral, so it carries the patient's whole movement (the person's own shape cancels
within a track), and on the first frame it equals the single-image fit.

A person's resting face is part of what the single-image fit puts into ``b`` (lip and eye shape
at rest that 12 identity components from 27 faces do not reach). `ExpressionModel.rest_replaced`
takes it out for mask3d: the model also holds the mean and covariance of neutral faces'
coefficients (fitted with identity bases that never saw those faces), the part of ``b`` that is
the person's rest is estimated from them (the posterior mean of rest given rest + expression)
and replaced by a draw for the study.

Eyelid opening and gaze are not taken from here: the renderers transfer them from the patient
directly (as ratios and offsets), which a linear basis would smooth.
"""

from __future__ import annotations

import collections
import functools
from pathlib import Path

import numpy as np

from dicom_deid.faces import mesh

MODEL_NAME = "expression_model.npz"
_EYE_IRIS = ((mesh.RIGHT_EYE, mesh.RIGHT_IRIS), (mesh.LEFT_EYE, mesh.LEFT_IRIS))
# Where expressions show: the lips (outer and inner contour), eyes and brows. A transferred
# displacement far from them is mostly the patient's shape that the identity basis missed.
_BROWS = (70, 63, 105, 66, 107, 55, 65, 52, 53, 46,
          300, 293, 334, 296, 336, 285, 295, 282, 283, 276)
_OUTER_LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291,
               185, 40, 39, 37, 0, 267, 269, 270, 409)
EXPRESSION_REGIONS = tuple(sorted(set(mesh.RIGHT_EYE + mesh.LEFT_EYE + mesh.INNER_LIPS
                                      + _OUTER_LIPS + _BROWS)))


def canonical_transform(landmarks: np.ndarray, reference: np.ndarray,
                        index: np.ndarray | None = None) -> mesh.Similarity:
    """The 3D similarity taking ``reference`` (canonical) onto ``landmarks`` (image), fitted on
    the points ``index`` (all mesh points if None). ``inverse_apply`` goes to the canonical
    frame, ``apply`` back to the image."""
    idx = np.arange(mesh.MESH_POINTS) if index is None else np.asarray(index)
    return mesh.fit_similarity(np.asarray(reference, np.float64)[idx],
                               np.asarray(landmarks, np.float64)[idx])


class ExpressionModel:
    """Mean shape, identity and expression bases; fits and separates expressions."""

    def __init__(self, path: Path) -> None:
        try:
            with np.load(path, allow_pickle=False) as data:
                fields = {k: data[k] for k in data.files}
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a readable expression model ({exc})") from exc
        required = ("mean_shape", "identity_basis", "identity_variances", "expression_basis",
                    "expression_variances", "noise_variance", "rigid_index", "attribution")
        missing = [k for k in required if k not in fields]
        if missing:
            raise ValueError(f"{path}: expression model lacks {', '.join(missing)}")
        self.path = path
        self.attribution = str(fields["attribution"])
        self.mean = fields["mean_shape"].astype(np.float64)
        id_basis = fields["identity_basis"].astype(np.float64)
        exp_basis = fields["expression_basis"].astype(np.float64)
        id_var = fields["identity_variances"].astype(np.float64)
        exp_var = fields["expression_variances"].astype(np.float64)
        dims = 3 * mesh.MESH_POINTS
        if self.mean.shape != (mesh.LANDMARK_COUNT, 3) or id_basis.shape[1:] != (dims,) \
                or exp_basis.shape[1:] != (dims,) or len(id_var) != len(id_basis) \
                or len(exp_var) != len(exp_basis):
            raise ValueError(f"{path}: expression model arrays have inconsistent shapes")
        self.rigid = fields["rigid_index"].astype(np.int64)
        self.expression_basis = exp_basis
        self.identity_basis = id_basis
        self.identity_variances = id_var
        self.expression_variances = exp_var
        self.noise = float(fields["noise_variance"])
        self.k_id = len(id_basis)
        # The resting-expression statistics (optional: a model built before them has none).
        self.rest_mean: np.ndarray | None = None
        self.rest_covariance: np.ndarray | None = None
        if "rest_mean" in fields and "rest_covariance" in fields:
            rest_mean = fields["rest_mean"].astype(np.float64)
            rest_cov = fields["rest_covariance"].astype(np.float64)
            if rest_mean.shape != exp_var.shape or rest_cov.shape != (len(exp_var),) * 2:
                raise ValueError(f"{path}: resting-expression statistics have wrong shapes")
            self.rest_mean, self.rest_covariance = rest_mean, rest_cov
        # Regularised least squares with a Gaussian prior: (A'A + noise * diag(1/var)) c = A'x.
        # The solve is folded into one (k, 1404) matrix, so a fit is a single product per frame.
        a = np.concatenate([id_basis, exp_basis]).T
        prior = self.noise / np.concatenate([id_var, exp_var])
        self._solve = np.linalg.solve(a.T @ a + np.diag(prior), a.T)

    def to_canonical(self, landmarks: np.ndarray) -> tuple[np.ndarray, mesh.Similarity]:
        """The landmarks (478, 3) in the canonical frame, and the transform back to the image."""
        lm = np.asarray(landmarks, np.float64)
        if lm.shape != (mesh.LANDMARK_COUNT, 3):
            raise ValueError(f"landmarks must be {mesh.LANDMARK_COUNT}x3, got {lm.shape}")
        transform = canonical_transform(lm, self.mean, self.rigid)
        return transform.inverse_apply(lm), transform

    @staticmethod
    def from_canonical(points: np.ndarray, transform: mesh.Similarity) -> np.ndarray:
        """Canonical points posed back into the image by `to_canonical`'s transform."""
        return transform.apply(np.asarray(points, np.float64))

    @functools.cache  # noqa: B019 - one model object lives for the process
    def _solve_with(self, identity_scale: float) -> np.ndarray:
        """The fit's solve with the identity prior's variances times ``identity_scale``."""
        if identity_scale == 1.0:
            return self._solve
        if not identity_scale > 0:
            raise ValueError(f"identity_scale must be > 0, got {identity_scale}")
        a = np.concatenate([self.identity_basis, self.expression_basis]).T
        prior = self.noise / np.concatenate([self.identity_variances * identity_scale,
                                             self.expression_variances])
        return np.linalg.solve(a.T @ a + np.diag(prior), a.T)

    def coefficients(self, canonical: np.ndarray,
                     identity_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """(identity, expression) coefficients of a canonical shape, fitted jointly.
        ``identity_scale`` < 1 narrows the identity prior, so that the identity basis takes
        less of the shape (and of an expression along it)."""
        x = (np.asarray(canonical, np.float64)[: mesh.MESH_POINTS]
             - self.mean[: mesh.MESH_POINTS]).reshape(-1)
        coef = self._solve_with(float(identity_scale)) @ x
        return coef[: self.k_id], coef[self.k_id:]

    def expression(self, canonical: np.ndarray, identity_scale: float = 1.0) -> np.ndarray:
        """The expression displacement (478, 3) of one canonical shape, identity left out
        (``identity_scale``: `coefficients`).

        The iris points move with their eye's contour (gaze is the renderer's business).
        """
        _, b = self.coefficients(canonical, identity_scale)
        return self.displacement(b)

    def private_expression(self, canonical: np.ndarray, threshold: float = 0.0,
                           reach: float | None = None,
                           identity_scale: float = 1.0) -> np.ndarray:
        """`expression` with less of the person's shape in it, for single images.

        ``threshold``: each expression coefficient is shrunk toward 0 by this many of its prior
        standard deviations (soft threshold): a neutral face's small fitted coefficients are
        mostly shape the identity basis missed, a smile's are large and survive.
        ``reach``: the displacement is kept on `EXPRESSION_REGIONS` and fades with the distance
        from them (Gaussian, this many canonical units, outer eye corners 1 apart); None keeps
        it everywhere.
        """
        _, b = self.coefficients(canonical, identity_scale)
        if threshold > 0:
            sd = np.sqrt(self.expression_variances)
            z = b / sd
            b = np.sign(z) * np.maximum(np.abs(z) - threshold, 0.0) * sd
        d = self.displacement(b)
        if reach is not None:
            d *= self.region_weights(reach)[:, None]
        return d

    @functools.cache  # noqa: B019 - one model object lives for the process (load_expression_model)
    def region_weights(self, reach: float) -> np.ndarray:
        """Per-point weights (478,): 1 on `EXPRESSION_REGIONS`, a Gaussian of the distance from
        them (in the mean shape's x, y; ``reach`` its standard deviation) elsewhere."""
        xy = self.mean[:, :2]
        anchors = xy[list(EXPRESSION_REGIONS)]
        dist = np.min(np.linalg.norm(xy[:, None, :] - anchors[None, :, :], axis=2), axis=1)
        return np.exp(-0.5 * (dist / max(float(reach), 1e-6)) ** 2)

    def identity_sample(self, seed: int, spread: float = 1.0) -> np.ndarray:
        """A synthetic identity offset (478, 3) for ``seed``, to add to a mean shape: the identity
        basis with coefficients drawn from its Gaussian prior (``spread`` standard deviations),
        nobody's shape. The iris points move with their eye's contour."""
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x7368617065])  # "shape"
        z = rng.standard_normal(self.k_id) * float(spread)
        offset = np.zeros((mesh.LANDMARK_COUNT, 3))
        offset[: mesh.MESH_POINTS] = ((z * np.sqrt(self.identity_variances))
                                      @ self.identity_basis).reshape(-1, 3)
        for eye, iris in _EYE_IRIS:
            offset[list(iris)] = offset[list(eye)].mean(axis=0)
        return offset

    @functools.cache  # noqa: B019 - one model object lives for the process
    def _rest_filter(self, expression_scale: float) -> tuple[np.ndarray, np.ndarray]:
        """(gain, Cholesky factor of the rest covariance). The gain takes coefficients (less
        the rest mean) to the estimate of their resting part: C_rest (C_rest + s C_exp)^-1,
        C_exp the expression basis' own variances times ``expression_scale`` (s)."""
        if self.rest_mean is None or self.rest_covariance is None:
            raise ValueError(f"{self.path}: the expression model has no resting-expression "
                             "statistics (rebuild it with scripts/build_expression_model.py)")
        c_rest = self.rest_covariance
        c_exp = np.diag(self.expression_variances * float(expression_scale))
        gain = c_rest @ np.linalg.inv(c_rest + c_exp)
        return gain, np.linalg.cholesky(c_rest)

    def rest_sample(self, seed: int | None, spread: float = 1.0) -> np.ndarray:
        """Expression coefficients of a synthetic resting face for ``seed``: a draw from the
        neutral faces' distribution (``spread`` standard deviations); None gives its mean."""
        _, chol = self._rest_filter(1.0)
        assert self.rest_mean is not None
        if seed is None:
            return self.rest_mean.copy()
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x72657374])  # "rest"
        return self.rest_mean + chol @ rng.standard_normal(len(self.rest_mean)) * float(spread)

    def rest_replaced(self, displacement: np.ndarray, rest: np.ndarray,
                      expression_scale: float = 1.0, own: np.ndarray | None = None
                      ) -> np.ndarray:
        """``displacement`` (478, 3) with the person's resting expression replaced by ``rest``
        (coefficients, e.g. `rest_sample`).

        The displacement's coefficients c are taken as rest + expression, two Gaussians; the
        resting part is estimated as m + G (c - m) (m the rest mean, G the gain of
        `_rest_filter`) and swapped for ``rest``. Where neutral faces differ more than
        expressions do, most of c goes (the person's lip and eye shape at rest); along a smile,
        which no resting face has, it stays. Movement outside the basis is kept as it is.
        ``own``: the coefficients to judge the person's rest on (in video, the track's median
        single-image fit), instead of the displacement's own; the correction is then the same
        for every frame, and movement is kept whole.
        """
        gain, _ = self._rest_filter(expression_scale)
        assert self.rest_mean is not None
        d = np.array(displacement, np.float64)
        flat = d[: mesh.MESH_POINTS].reshape(-1)
        c = self.expression_basis @ flat if own is None else np.asarray(own, np.float64)
        own_rest = self.rest_mean + gain @ (c - self.rest_mean)
        change = np.asarray(rest, np.float64) - own_rest
        d[: mesh.MESH_POINTS] += (change @ self.expression_basis).reshape(-1, 3)
        for eye, iris in _EYE_IRIS:
            d[list(iris)] = d[list(eye)].mean(axis=0)
        return d

    def displacement(self, expression_coefficients: np.ndarray) -> np.ndarray:
        """The (478, 3) displacement of expression coefficients."""
        d = np.zeros((mesh.LANDMARK_COUNT, 3))
        d[: mesh.MESH_POINTS] = (expression_coefficients @ self.expression_basis).reshape(-1, 3)
        for eye, iris in _EYE_IRIS:
            d[list(iris)] = d[list(eye)].mean(axis=0)
        return d


@functools.cache
def load_expression_model(path: str | None = None) -> ExpressionModel:
    """The expression model (the committed one unless ``path`` is given), loaded once."""
    if path is None:
        from dicom_deid.resources import model_path

        return ExpressionModel(model_path(MODEL_NAME))
    return ExpressionModel(Path(path))


class NeutralTracker:
    """The expression displacement of one face track, against its robust neutral.

    Each frame's neutral estimate is the canonical shape minus its single-image expression fit;
    the track's neutral is the per-point median of the recent estimates (recomputed every
    ``refresh`` frames). Someone who smiles throughout a clip still gets a neutral face as
    neutral, because each estimate has the smile taken out; someone who talks gets their own
    mouth at rest, because the median sees more rest than any one mouth position. With
    ``glide`` the neutral moves to each new median over that many frames instead of at once.
    """

    def __init__(self, model: ExpressionModel | None = None, history: int = 150,
                 refresh: int = 5, glide: int = 0, identity_scale: float = 1.0) -> None:
        if history < 1 or refresh < 1 or glide < 0:
            raise ValueError("history and refresh must be at least 1, glide at least 0")
        self.model = model if model is not None else load_expression_model()
        self.identity_scale = float(identity_scale)
        self.refresh = refresh
        self.glide = glide
        self._estimates: collections.deque[np.ndarray] = collections.deque(maxlen=history)
        self._neutral: np.ndarray | None = None
        self._from: np.ndarray | None = None
        self._target: np.ndarray | None = None
        self._since = 0
        self.frames = 0

    @property
    def neutral(self) -> np.ndarray | None:
        """The track's current neutral shape (canonical frame), None before the first frame."""
        return self._neutral

    def update(self, canonical: np.ndarray) -> np.ndarray:
        """This frame's expression displacement (478, 3) in the canonical frame."""
        shape = np.asarray(canonical, np.float64)
        estimate = shape - self.model.expression(shape, self.identity_scale)
        self._estimates.append(estimate.astype(np.float32))
        if self._neutral is None or self.frames % self.refresh == 0:
            median = np.median(np.stack(self._estimates), axis=0).astype(np.float64)
            if self._neutral is None or self.glide == 0:
                self._neutral = median
            self._from, self._target, self._since = self._neutral, median, 0
        if self.glide and self._target is not None and self._from is not None:
            # A new median moves the whole rendered face at once (the first refresh on GRID:
            # 0.5 % of the inter-ocular distance in one frame against 0.2 % of the patient's
            # own movement); gliding to it over ``glide`` frames keeps the face still.
            self._since += 1
            share = min(1.0, self._since / self.glide)
            self._neutral = self._from + (self._target - self._from) * share
        self.frames += 1
        d = shape - self._neutral
        # Gaze is transferred by the renderer as an offset within the eye: the iris points here
        # follow their eye contour, as in the single-image fit.
        for eye, iris in _EYE_IRIS:
            d[list(iris)] = d[list(eye)].mean(axis=0)
        return d
