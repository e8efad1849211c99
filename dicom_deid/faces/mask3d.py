"""Digital mask: an identity-free 3D face driven by the patient's pose, expression, eyelids and
gaze, rendered over the patient's face.

Per frame and track:

1. Pose: a 3D similarity fit of the expression model's mean shape to the patient's landmarks,
   on the points that expressions barely move (faces/expression.py). The study's resting head
   attitude (its first face's yaw and pitch, within REST_LIMIT_DEGREES) is taken out: the mask
   looks ahead at rest, and turns and nods (within a video, between a study's captures) stay.
2. Expression, separated from identity: the patient's landmarks are taken into the canonical
   frame and `NeutralTracker` gives the expression displacement (against the track's robust
   neutral in video; on a track's first frame, a single image, the fit against the model's
   identity basis), which is added to the study's shape (the mean shape plus a synthetic
   identity drawn from the seed, IDENTITY_SPREAD). The patient's own face shape is left
   out, and so is the patient's resting expression (the lip and eye shape at rest that the
   single-image fit carries): it is estimated from the model's resting-expression statistics
   and replaced by a draw for the study (REST_EXPRESSION_SCALE). The mask's lips part as far as
   the patient's (LIPS_SLACK) and stay together where the patient's are. Eye openness is transferred as a ratio to the patient's usual openness, so a blink
   closes the mask's eyes fully whatever the patient's eye size (optionally, in video, eyes
   that stay narrow but open take the track's median as their usual opening over
   EYE_REFERENCE_FADE frames; off by default); each iris keeps its offset within its eye (gaze).
3. The mask is posed back into the frame, scaled up just enough (smoothly, per track) that it
   covers the patient's whole face hull, and rendered in one flat material (faces/
   mask_surface.py: a tint, painted lips and brows) with Lambert shading from its own posed
   geometry, synthetic eyeballs, lash lines and a mouth cavity with teeth (less its one-pixel
   rim, so closed lips show no dark dot). Beyond the mesh (the forehead, jaw and ear margin
   that is covered too) the same material continues.

Nothing in the covered region comes from the frame: no texture (neither a photo nor a sample of
the donor model), no colour and no exposure; only the geometry follows the patient. Every study
gets the same material (issue 15 item 4: one tint, one light, one eye size; PER_STUDY_DESIGN
brings back the older per-study draw from ``donor_seed``); the shape (a synthetic identity and
a resting expression) is still drawn per study from the seed (PER_STUDY_SHAPE): with one
identical mask for everybody a recogniser links two captures of one person by whatever of the
person still drives it. The person's resting gaze and face size in pixels are taken out at the
source (GAZE_DEAD_ZONE, RENDER_AT_FIXED_SIZE).
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from dataclasses import dataclass

import cv2
import numpy as np

from dicom_deid.faces import mask_surface, mesh, render_mesh
from dicom_deid.faces.donors import load_model
from dicom_deid.faces.expression import NeutralTracker, load_expression_model
from dicom_deid.faces.region import (
    BASELINE_FOREHEAD,
    BASELINE_MARGIN,
    face_height,
    polygon_mask,
    region_polygon,
)
from dicom_deid.faces.swap import RASTER_IOD, check_inputs

MAX_SUPERSAMPLE = 4
# Every face is rendered at the same size (``supersample_iod`` pixels between the outer eye
# corners; larger faces rendered smaller, down to MIN_SUPERSAMPLE times their size) and resampled
# into the frame. With one mask for everybody the face's size in pixels was what a recogniser
# linked captures by: it set the raster's resolution, the lash lines' whole-pixel thickness and
# the edge ramp (London: the eye distance correlates 0.90 between a person's two captures; alone
# it ranks the true pair at 8 of 51 on average). Off: faces of ``supersample_iod`` and more are
# rendered at their own size, smaller ones at a whole multiple.
RENDER_AT_FIXED_SIZE = True
MIN_SUPERSAMPLE = 0.25
# Shade of the material beyond the mesh (about the mesh's own at its edge) and the width,
# in eye distances, over which the mesh fades into it.
FILL_SHADE = 0.8
EDGE_RAMP = 0.15
# Standard deviations of the identity prior the study's synthetic mask shape is drawn with
# (`ExpressionModel.identity_sample`, as swap's donor shape). One mean shape for every study
# left the mask's geometry (head attitude, eye opening, expression fit on the mean face) as
# the thing a recogniser linked two captures of one person by (London, dlib, round 1: rank-1
# 5.9 % on the worst of 3 keys against 2.0 % chance); a shape that changes with the study,
# drawn from the seed alone and nobody's, moves the descriptor far more than tint or design.
IDENTITY_SPREAD = 1.0
# A resting head attitude within this many degrees (yaw, pitch) is replaced by the study's turn
# (`_turned`; the turn is 0: the mask looks straight ahead at rest); movement away from the rest,
# and the part of a larger turn beyond the limit, stay the patient's. How a person holds the head
# (a few degrees of turn or tilt, the same in every capture of a session) is what linked two
# captures of one person through the mask: London, 3 keys, `benchmarks/mask3d_quality.py
# --keys 3`, linkage rank-1 9.8/3.9/5.9 % with the attitude kept, 2.0/2.0/3.9 % replaced.
REST_LIMIT_DEGREES = 8.0
# The pitch's own limit (None: the same as the yaw's).
REST_PITCH_LIMIT_DEGREES: float | None = None
# Whose resting attitude is replaced. "study": the study's first face sets it, and every later
# face of the study (other tracks, other instances rendered by other renderers) is turned by the
# same amount, so that a head's movement within a video and between the captures of one study
# is kept (the rest is one offset, never re-estimated). "track": each track's running median,
# which takes each capture of a study to the front on its own: a smile captured with the head
# lifted loses the lift (held-out expression cosine 0.796 against 0.808 with "study"; GRID eye
# aspect ratio r, mean of 6 clips, 0.876 against 0.940, as the median drifts in a track's first
# frames).
REST_SCOPE = "study"
# The patient's resting expression (the single-image fit of a neutral face: that person's lip and
# eye shape at rest, which the identity basis does not reach) is replaced by a draw for the study
# from the neutral faces' distribution (`ExpressionModel.rest_replaced`); this scales the
# expression variances the rest is told apart from (larger: more of the patient's coefficients
# are taken as expression and kept). None keeps the patient's rest.
REST_EXPRESSION_SCALE: float | None = 3.0
# Lips kept together at rest: the mask's inner-lip gap is scaled by a ramp of the patient's
# (canonical units, outer eye corners 1 apart) from 0 at LIPS_CLOSED to 1 at LIPS_PARTED.
# London neutral captures: median gap 0.001, largest 0.0075; smiles and speech open to 0.04-0.17.
LIPS_CLOSED = 0.006
LIPS_PARTED = 0.02
# The mask's mean inner-lip gap is at most LIPS_GAP_RATIO times the patient's plus LIPS_SLACK.
# Held to the patient's gap +- 0.01, a study whose resting lips are full read back on GRID
# lbax4n (evaluation key 0) with mouth aspect ratio r 0.52 (0.81 without the cap): the cap
# binds only near rest.
LIPS_GAP_RATIO = 2.0
LIPS_SLACK = 0.01
# Frames over which the eyes' reference opening fades from the neutral estimate's to the track's
# median where the track's eyes are narrow but open (GRID lbax4n, glasses, looking down: median
# opening 0.75 of the neutral estimate's, which left the mask's eyes at 2/3 of their size
# throughout). A blink is a dip of a few frames and leaves the median where it is. Off (None) by
# default: the change of reference is a ramp over the track's first frames, and on a clip
# without blinks that ramp is most of the eye aspect ratio's variance (GRID, 50 frames, with 25:
# lbbc2a, whose right eye is as narrow as lbax4n's, EAR r 0.75 -> 0.15; mean of 6 clips 0.92 ->
# 0.81, `metrics_grid_i15mask3_fade25.json`).
EYE_REFERENCE_FADE: int | None = None
# The track's median opening, as a share of the neutral estimate's, from which it counts as an
# open eye (ramp over the next 0.2): below it the eyes are mostly closed in the track, and the
# neutral estimate stays the reference (a clip of closed eyes keeps the mask's eyes closed).
EYE_OPEN_SHARE = 0.4
# ... and up to which it counts as narrow (the fade is full from 0.1 below it). Eyes about as
# open as the neutral estimate keep it: a change of reference is a ramp over the first frames,
# which on a clip without blinks (GRID lbbc2a) was most of the eye aspect ratio's variance.
EYE_NARROW_SHARE = 0.85
# Whether the mask's material (tint, lighting, iris and lip colour, brow and lip proportions, eye
# size) is drawn per study from the seed. Off: one tint, one light and one eye size for everybody
# (issue 15 item 4).
PER_STUDY_DESIGN = False
# Whether the mask's shape (a synthetic identity, IDENTITY_SPREAD, and a resting expression drawn
# from the neutral faces' distribution) is drawn per study from the seed, nobody's. Off as well,
# every study's mask is the mean shape with the mean resting expression: one identical mask, which
# a recogniser linked two captures of one person through by what of the person still drives it
# (London, key 0, `benchmarks/mask3d_quality.py --keys 1` with the gaze and size fixes below:
# linkage rank-1 8 of 51, true pair's mean rank 17.9 of 51; the expression, the lips' and brows'
# shape the rest replacement leaves, carries most of it: 7 of 51 with the eyes and pose fixed).
PER_STUDY_SHAPE = True
# Gaze at rest, in eye widths: where the iris sits within the eye when the person looks ahead is
# partly the shape of that person's eye (London, 102 captures: the iris centre's offset from the
# mean shape's spreads 0.019-0.027 eye widths between people and 0.008-0.012 between one
# person's two captures, correlation 0.75-0.83 between them), and with one mask for everybody it
# linked captures. The track's median offset (a single image's own) is shrunk toward the mean
# shape's by this much (soft threshold per axis); movement away from the median, and a gaze
# held further off than this, stay the patient's.
GAZE_DEAD_ZONE = 0.06
# The expression displacement is kept on the lips, eyes and brows and fades with the distance
# from them (`ExpressionModel.region_weights`, canonical units; None keeps it everywhere).
EXPRESSION_REACH: float | None = None
# An eye whose resting opening (the track's median ratio to its reference; a single image's own)
# falls short of fully open by up to this much is opened by that shortfall; None: off.
EYE_DEAD_ZONE: float | None = None
# What the rest replacement leaves of a person's resting expression is kept only along the
# expression model's directions that resting faces barely use: those whose expression standard
# deviation is at least this many times the neutral faces' (`_expression_only`; None keeps all).
# The rest estimate's statistics come from the model's training identities; on people it has not
# seen, the part of the neutral face it leaves is about twice as large (London odd ids, 0.66 of
# an expression deviation per coefficient against 0.27) and it is that person's lip and brow
# shape at rest, which a recogniser linked two captures by through one identical mask. A smile
# lies along the kept directions (the first expression coefficient alone: 11 times the neutral
# faces' spread on London). In video only the track's rest is filtered: movement from it stays
# whole. Off by default: with 1.1 (and REST_KEEP_OTHER 0.3) the London linkage hits per key did
# not change (evaluate, keys 0-2: 0 / 2 / 1 of 51, as without), the true pair's mean rank moved
# toward chance (key 1: 22.4 -> 23.9 of 26), held-out widening rose (76 -> 86 %), but GRID eye
# aspect ratio r fell (0.938 -> 0.920) and a single image's smile off the model's smile
# direction is mostly lost (tests: the synthetic lip stretch keeps 5 % of its widening against
# 23 %). `metrics_london_i15mask6_keep.json`, `metrics_grid_i15mask6_keep.json`.
REST_KEEP_RATIO: float | None = None
# The share of the leftover kept along the other directions (0: none). Part of a smile lies there
# too (the brows' and lids' share of it, the lips' shape).
REST_KEEP_OTHER = 0.0
# The study's resting attitude by (seed, limits), shared by the study's renderers in a process
# (as swap's settled donor): a study is processed in one worker.
_STUDY_REST: collections.OrderedDict[tuple, tuple[float, float]] = collections.OrderedDict()
_STUDY_REST_LOCK = threading.Lock()
_STUDY_REST_MAX = 1024
_EYES = ((mesh.RIGHT_EYE_UPPER, mesh.RIGHT_EYE_LOWER, mesh.RIGHT_IRIS, (33, 133)),
         (mesh.LEFT_EYE_UPPER, mesh.LEFT_EYE_LOWER, mesh.LEFT_IRIS, (263, 362)))


@dataclass
class _Track:
    expression: NeutralTracker
    openness: collections.deque   # the patient's eye openings (right, left), canonical units
    attitude: collections.deque   # the patient's head (yaw, pitch), radians
    # The patient's single-image expression coefficients, whose median is the track's rest.
    rest: collections.deque = dataclasses.field(default_factory=collections.deque)
    # The patient's iris offsets within the eyes (right x, y, left x, y; eye widths, less the
    # mean shape's), whose median is the track's gaze at rest.
    gaze: collections.deque = dataclasses.field(default_factory=collections.deque)
    # The ratios of each eye's opening to its reference, whose medians are the eyes' rest.
    eye_ratios: tuple = dataclasses.field(
        default_factory=lambda: (collections.deque(maxlen=150), collections.deque(maxlen=150)))
    cover_scale: float = 1.0
    outline_scale: float = 1.0


class Mask3DRenderer:
    """Renders the digital mask; keeps a neutral-shape estimate per track id."""

    def __init__(self, donor_seed: int | None = None, *, model_path: str | None = None,
                 expression_path: str | None = None,
                 history: int = 150, lid_closed: float = 0.3,
                 supersample_iod: float = 96.0,
                 refresh: int = 5, max_tracks: int = 64, feather: float = 0.12,
                 forehead: float = BASELINE_FOREHEAD, margin: float = BASELINE_MARGIN,
                 rest_limit_degrees: float = REST_LIMIT_DEGREES,
                 rest_pitch_limit_degrees: float | None = REST_PITCH_LIMIT_DEGREES,
                 identity_spread: float = IDENTITY_SPREAD,
                 rest_scope: str = REST_SCOPE,
                 rest_expression_scale: float | None = REST_EXPRESSION_SCALE,
                 eye_reference_fade: int | None = EYE_REFERENCE_FADE) -> None:
        self.model = load_model(model_path)
        self.expression = load_expression_model(expression_path)
        self.canonical = self.model.canonical.astype(np.float64)
        layout = self.model.layout
        self.tris, self.parts, self.uv = layout.triangles, layout.parts, layout.uv
        # Only the model's mean shape and layout are used, never a texture of the donor model or
        # a site's donor photos: the surface is one flat material, the same for every study.
        design_seed = donor_seed if PER_STUDY_DESIGN else None
        shape_seed = donor_seed if PER_STUDY_DESIGN or PER_STUDY_SHAPE else None
        self.material = mask_surface.material(design_seed)
        self.texture = mask_surface.texture(layout, self.material)
        self.iris_rgb = self.material.iris
        self.history = history
        self.lid_closed = lid_closed
        self.supersample_iod = supersample_iod
        self.refresh = refresh
        self.max_tracks = max_tracks
        self.feather = feather
        # Growth of the covered region beyond the face hull (fractions of the face height, as
        # in faces/region.py): the hairline and jaw outline are identity cues the mask would
        # otherwise leave for a recogniser to link captures of one person by (London set,
        # dlib linkage rank-1: 0.67 with the bare hull, 0.43 with the baselines' growth).
        self.forehead = forehead
        self.margin = margin
        self.rest_limit = float(np.radians(rest_limit_degrees))
        self.rest_pitch_limit = float(np.radians(
            rest_limit_degrees if rest_pitch_limit_degrees is None else rest_pitch_limit_degrees))
        if rest_scope not in ("track", "study"):
            raise ValueError(f"rest_scope must be 'track' or 'study', got {rest_scope!r}")
        self.rest_scope = rest_scope
        self.seed = donor_seed
        self._rest: tuple[float, float] | None = None
        # The study's mask shape: mean + a synthetic identity drawn from the seed alone.
        self.identity_offset = (np.zeros_like(self.canonical) if shape_seed is None
                                else self.expression.identity_sample(shape_seed, identity_spread))
        # The study's resting expression: a draw from the neutral faces' distribution.
        self.rest_expression_scale = rest_expression_scale
        self.rest_expression = (None if rest_expression_scale is None
                                else self.expression.rest_sample(shape_seed))
        self.eye_reference_fade = (None if eye_reference_fade is None
                                   else max(int(eye_reference_fade), 1))
        self._tracks: collections.OrderedDict[int, _Track] = collections.OrderedDict()
        self._skin_tris = self.tris[self.parts == mesh.PART_SKIN]

    def reset(self, track_id: int | None = None) -> None:
        """Forget the neutral estimate of one track (or of all)."""
        if track_id is None:
            self._tracks.clear()
        else:
            self._tracks.pop(track_id, None)

    def _track(self, track_id: int) -> _Track:
        track = self._tracks.get(track_id)
        if track is None:
            track = _Track(NeutralTracker(self.expression, self.history, self.refresh),
                           collections.deque(maxlen=self.history),
                           collections.deque(maxlen=self.history),
                           collections.deque(maxlen=self.history),
                           collections.deque(maxlen=self.history))
            self._tracks[track_id] = track
            while len(self._tracks) > self.max_tracks:
                self._tracks.popitem(last=False)
        else:
            self._tracks.move_to_end(track_id)
        return track

    def mask_geometry(self, landmarks: np.ndarray, track_id: int = 0) -> np.ndarray:
        """The mask's 478 points in frame pixels for these landmarks (updates the track)."""
        patient, pose = self.expression.to_canonical(landmarks)
        track = self._track(track_id)
        # The patient's expression against the track's neutral (on a track's first frame,
        # a single image, the fit against the identity basis): the patient's shape cancels.
        d = track.expression.update(patient)
        if self.rest_expression is not None and self.rest_expression_scale is not None:
            # The person's rest is judged on the median coefficients of the track's last
            # `history` frames (on a single image, the image's own): the correction is one
            # slowly changing offset, so the patient's movement (speech, blinks) is kept whole. Judged frame by frame it shrank the
            # movement too (GRID mouth aspect ratio r 0.90 -> 0.80, lbax4n 0.43).
            track.rest.append(self.expression.coefficients(patient)[1])
            own = np.median(np.asarray(track.rest), axis=0)
            d = self.expression.rest_replaced(d, self.rest_expression,
                                              self.rest_expression_scale, own=own)
            if REST_KEEP_RATIO is not None:
                d = d - self._rest_left(own, REST_KEEP_RATIO)
        if EXPRESSION_REACH is not None:
            d = d * self.expression.region_weights(EXPRESSION_REACH)[:, None]
        shape = self.canonical + self.identity_offset + d
        self._transfer_eyes(shape, patient, track)
        self._keep_mouth_closed_order(shape)
        self._close_lips_at_rest(shape, patient)
        return pose.apply(self._turned(shape, pose.rotation, track))

    def _rest_left(self, own: np.ndarray, ratio: float) -> np.ndarray:
        """The displacement of the part of the person's resting expression (coefficients
        ``own``) that `ExpressionModel.rest_replaced` keeps along directions where resting faces
        vary more than ``ratio`` times less than expressions do: the part to take out.

        rest_replaced keeps (I - G)(own - rest mean) of the person's rest (G its gain); along a
        direction that neutral faces use about as much as expressions, that is the person's own
        lip and brow shape at rest more than any expression.
        """
        model = self.expression
        assert model.rest_mean is not None and model.rest_covariance is not None
        assert self.rest_expression_scale is not None
        gain, _ = model._rest_filter(self.rest_expression_scale)
        left = (np.eye(len(gain)) - gain) @ (np.asarray(own, np.float64) - model.rest_mean)
        spread = np.sqrt(model.expression_variances / np.diag(model.rest_covariance))
        return model.displacement(np.where(spread >= ratio, 0.0, (1.0 - REST_KEEP_OTHER) * left))

    def _turned(self, shape: np.ndarray, rotation: np.ndarray, track: _Track) -> np.ndarray:
        """The shape turned (about its centre, in the canonical frame) so that, once posed, its
        yaw and pitch are the patient's movement plus the study's resting attitude.

        How a person holds the head at rest (a few degrees of turn or tilt, the same in every
        capture) is a habit a recogniser picks up even through an identical mask: within
        ``rest_limit`` the resting attitude (the study's, or with ``rest_scope="track"`` the
        track's median) is replaced by the study's turn; movement away from it, and the part
        of a larger turn beyond the limit, stay the patient's.
        """
        roll, yaw, pitch = _euler(rotation)
        limit = np.array([self.rest_limit, self.rest_pitch_limit])
        if self.rest_scope == "study":
            rest = np.asarray(self._study_rest(yaw, pitch, limit))
        else:
            track.attitude.append((yaw, pitch))
            rest = np.clip(np.median(np.asarray(track.attitude), axis=0), -limit, limit)
        turn = np.asarray(self.material.turn)
        target = _rotation(roll, yaw - rest[0] + turn[0], pitch - rest[1] + turn[1])
        change = rotation.T @ target
        centre = shape[: mesh.MESH_POINTS].mean(axis=0)
        return (shape - centre) @ change.T + centre

    def _study_rest(self, yaw: float, pitch: float, limit: np.ndarray) -> tuple[float, float]:
        """The study's resting (yaw, pitch): its first face's, within the limits; the same
        for every later face of this renderer and of the study's other renderers."""
        if self._rest is not None:
            return self._rest
        key = (self.seed, float(limit[0]), float(limit[1]))
        with _STUDY_REST_LOCK:
            known = _STUDY_REST.get(key) if self.seed is not None else None
            if known is None:
                y, p = np.clip([yaw, pitch], -limit, limit)
                known = (float(y), float(p))
                if self.seed is not None:
                    _STUDY_REST[key] = known
                    while len(_STUDY_REST) > _STUDY_REST_MAX:
                        _STUDY_REST.popitem(last=False)
        self._rest = known
        return known

    def _transfer_eyes(self, shape: np.ndarray, patient: np.ndarray, track: _Track) -> None:
        """Eye openness as a ratio to the patient's usual openness; gaze as the iris offset.

        The usual openness is the larger of the track's median opening (what this patient's
        open eye looks like) and the neutral estimate's (the frame with its fitted expression
        taken out: on a single image of closed eyes the median alone would call them open).
        """
        mean = self.canonical + self.identity_offset     # the study's mask shape
        neutral = track.expression.neutral
        now = []
        for upper, lower, _, _ in _EYES:
            up, lo = list(upper[1:-1]), list(lower[1:-1])
            now.append(float(np.linalg.norm(patient[lo, :2] - patient[up, :2], axis=1).sum()))
        track.openness.append(now)
        usual = np.median(np.asarray(track.openness), axis=0)
        # How far into the track the reference has faded to the median (0 on a single image).
        settled = (0.0 if self.eye_reference_fade is None
                   else min(1.0, (len(track.openness) - 1) / self.eye_reference_fade))
        for k, (upper, lower, _, _) in enumerate(_EYES):
            up, lo = list(upper[1:-1]), list(lower[1:-1])
            open_neutral = float(np.linalg.norm(neutral[lo, :2] - neutral[up, :2], axis=1).sum())  # type: ignore[index]
            reference = max(usual[k], open_neutral, 1e-6)
            # Eyes narrower than the neutral estimate all through the track but plainly open
            # are this patient's open eyes (glasses, looking down): the median becomes the
            # reference, so the mask's eyes are not left half shut. Eyes mostly closed in the
            # track keep the neutral estimate as reference.
            share = usual[k] / max(open_neutral, 1e-6)
            fade = settled * float(np.clip((share - EYE_OPEN_SHARE) / 0.2, 0.0, 1.0)
                                   * np.clip((EYE_NARROW_SHARE - share) / 0.1, 0.0, 1.0))
            reference = (1.0 - fade) * reference + fade * max(usual[k], 1e-6)
            ratio = now[k] / reference
            if EYE_DEAD_ZONE is not None:
                # The track's resting ratio (a single image's own) within EYE_DEAD_ZONE of fully
                # open is taken as open: how far a person's open eye falls short of the model's
                # neutral is partly the shape of that eye. Movement from the rest stays.
                history = track.eye_ratios[k]
                history.append(ratio)
                rest = float(np.median(np.asarray(history)))
                ratio += max(0.0, min(1.0 - rest, EYE_DEAD_ZONE))
            ratio = float(np.clip((ratio - self.lid_closed) / (1.0 - self.lid_closed), 0.0, 1.6))
            mid = (shape[up] + shape[lo]) / 2
            # The open eye's size is the study's: the patient's usual opening, measured
            # against the model's neutral, is partly the shape of that person's eyes.
            half = (mean[lo] - mean[up]) / 2 * ratio * self.material.eye_opening
            shape[up] = mid - half
            shape[lo] = mid + half
        # Gaze: the iris keeps its place within the eye, measured between the eye corners, less
        # the person's resting gaze (GAZE_DEAD_ZONE).
        offsets = []
        for _, _, iris, (a, b) in _EYES:
            p_width = max(float(np.linalg.norm(patient[a, :2] - patient[b, :2])), 1e-6)
            m_width = max(float(np.linalg.norm(mean[a, :2] - mean[b, :2])), 1e-6)
            offsets.append((patient[iris[0], :2] - (patient[a, :2] + patient[b, :2]) / 2) / p_width
                           - (mean[iris[0], :2] - (mean[a, :2] + mean[b, :2]) / 2) / m_width)
        gaze = np.concatenate(offsets)
        track.gaze.append(gaze)
        rest = np.median(np.asarray(track.gaze), axis=0)
        kept = np.sign(rest) * np.maximum(np.abs(rest) - GAZE_DEAD_ZONE, 0.0)
        gaze = gaze - rest + kept
        for k, (_, _, iris, (a, b)) in enumerate(_EYES):
            m_centre = (shape[a] + shape[b]) / 2
            m_width = float(np.linalg.norm(shape[a, :2] - shape[b, :2]))
            iris_shape = mean[list(iris)] - (mean[a] + mean[b]) / 2
            offset = iris_shape[0].copy()
            offset[:2] = (iris_shape[0, :2] / max(float(np.linalg.norm(mean[a, :2] - mean[b, :2])),
                                                  1e-6) + gaze[2 * k: 2 * k + 2]) * m_width
            # Iris size stays the mean's; only the centre moves with the patient's gaze.
            shape[list(iris)] = m_centre + offset + (iris_shape - iris_shape[0])

    @staticmethod
    def _keep_mouth_closed_order(shape: np.ndarray) -> None:
        up = list(mesh.INNER_LIPS_UPPER[1:-1])
        lo = list(mesh.INNER_LIPS_LOWER[1:-1])
        crossed = shape[lo, 1] < shape[up, 1]
        if crossed.any():
            mid = (shape[lo, 1] + shape[up, 1]) / 2
            shape[np.array(up)[crossed], 1] = mid[crossed]
            shape[np.array(lo)[crossed], 1] = mid[crossed]

    @staticmethod
    def _close_lips_at_rest(shape: np.ndarray, patient: np.ndarray) -> None:
        """The mask's lips together where the patient's are (a ramp from LIPS_CLOSED to
        LIPS_PARTED) and parted at most LIPS_GAP_RATIO times the patient's gap plus LIPS_SLACK.
        The study's resting expression alone parted the mask's lips by up to 0.07 eye distances
        (London 113, whose own are 0.02 apart)."""
        up = list(mesh.INNER_LIPS_UPPER[1:-1])
        lo = list(mesh.INNER_LIPS_LOWER[1:-1])
        gap = float((patient[lo, 1] - patient[up, 1]).mean())
        keep = float(np.clip((gap - LIPS_CLOSED) / (LIPS_PARTED - LIPS_CLOSED), 0.0, 1.0))
        own = float((shape[lo, 1] - shape[up, 1]).mean())
        target = keep * min(own, LIPS_GAP_RATIO * max(gap, 0.0) + LIPS_SLACK)
        if own > 1e-9 and target < own:
            mid = (shape[up] + shape[lo]) / 2
            half = (shape[lo] - shape[up]) / 2 * (target / own)
            shape[up] = mid - half
            shape[lo] = mid + half

    def render(self, rgb: np.ndarray, landmarks: np.ndarray, track_id: int = 0, *,
               inplace: bool = False) -> np.ndarray:
        """A new frame with the face of ``landmarks`` covered by the mask (with ``inplace``,
        ``rgb`` itself, changed)."""
        lm = check_inputs(rgb, landmarks)
        iod = mesh.inter_ocular(lm)
        factor = float(np.clip(self.supersample_iod / max(iod, 1.0), MIN_SUPERSAMPLE,
                               MAX_SUPERSAMPLE))
        if not RENDER_AT_FIXED_SIZE:
            factor = float(max(np.ceil(factor), 1.0))
        if abs(factor - 1.0) < 1e-3:
            return self._render(rgb, lm, track_id, inplace)
        return self._render_supersampled(rgb, lm, track_id, factor, inplace)

    def _render_supersampled(self, rgb: np.ndarray, lm: np.ndarray, track_id: int,
                             factor: float, inplace: bool) -> np.ndarray:
        """Render the face at ``factor`` times its size and resample back to the frame.

        A small face's eye is a few pixels tall: rendered at frame resolution, the lid edge
        snaps to whole pixels and a lid that moves by a fraction of one does not show at all
        (GRID clips, 360 x 288: the eye aspect ratio read back from the mask followed the
        mask's own at r 0.41 on a clip without blinks). Averaged down from a finer render,
        the edge moves smoothly, as a camera would have seen it. With RENDER_AT_FIXED_SIZE a
        large face is rendered smaller (``factor`` below 1) and every face at the same size.
        """
        h = face_height(lm)
        grow = (self.forehead + self.margin + 0.6) * h
        x0, y0 = np.floor(lm[:, :2].min(axis=0) - grow).astype(int)
        x1, y1 = np.ceil(lm[:, :2].max(axis=0) + grow).astype(int) + 1
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, rgb.shape[1]), min(y1, rgb.shape[0])
        if x1 - x0 < 2 or y1 - y0 < 2:  # the face is off the frame: nothing to refine
            return self._render(rgb, lm, track_id, inplace)
        crop = rgb[y0:y1, x0:x1]
        w, hh = x1 - x0, y1 - y0
        bw, bh = max(int(round(w * factor)), 2), max(int(round(hh * factor)), 2)
        fx, fy = bw / w, bh / hh
        big = cv2.resize(crop, (bw, bh), interpolation=cv2.INTER_LINEAR if factor > 1
                         else cv2.INTER_AREA)
        # cv2.resize maps pixel centres: x_big = (x + 0.5) * fx - 0.5.
        lm_big = lm.astype(np.float32).copy()
        lm_big[:, 0] = (lm[:, 0] - x0 + 0.5) * fx - 0.5
        lm_big[:, 1] = (lm[:, 1] - y0 + 0.5) * fy - 0.5
        lm_big[:, 2] = lm[:, 2] * (fx + fy) / 2
        done = self._render(big, lm_big, track_id, False)
        changed = np.any(done != big, axis=2).astype(np.float32)
        down = cv2.INTER_AREA if factor > 1 else cv2.INTER_LINEAR
        small = cv2.resize(done, (w, hh), interpolation=down).astype(np.float32)
        weight = np.clip(cv2.resize(changed, (w, hh), interpolation=down), 0.0, 1.0)[..., None]
        out = rgb if inplace else rgb.copy()
        # Pixels the mask did not touch stay exactly the frame's.
        mixed = weight * small + (1.0 - weight) * crop.astype(np.float32)
        out[y0:y1, x0:x1] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
        return out

    def _render(self, rgb: np.ndarray, lm: np.ndarray, track_id: int,
                inplace: bool = False) -> np.ndarray:
        geo = self.mask_geometry(lm, track_id)
        track = self._tracks[track_id]
        pts = mesh.MESH_POINTS
        track.cover_scale = _containing_scale(geo[:pts, :2], lm[:pts, :2], track.cover_scale)
        centre = geo[:pts].mean(axis=0)
        geo = (centre + (geo - centre) * track.cover_scale).astype(np.float32)
        iod = max(mesh.inter_ocular(geo), 4.0)
        feather = self.feather * iod
        grown = None
        if self.forehead > 0 or self.margin > 0:
            # The covered outline is the mask's own (its mean shape grown), enlarged until it
            # holds the patient's grown outline: drawn around the patient's face instead, the
            # edge of the mask traced that face's outline for a recogniser to compare.
            grown = region_polygon(geo, forehead=self.forehead, margin=self.margin)
            patient = region_polygon(lm, forehead=self.forehead, margin=self.margin)
            track.outline_scale = _containing_scale(grown, patient, track.outline_scale)
            middle = grown.mean(axis=0)
            grown = middle + (grown - middle) * track.outline_scale
        extent = [lm[:, :2], geo[:, :2]] + ([] if grown is None else [grown])
        roi = render_mesh.roi_around(np.concatenate(extent).astype(np.float32), rgb.shape,
                                     feather + 2)
        out = rgb if inplace else rgb.copy()
        if roi.empty:
            return out
        xy = geo[:, :2] - roi.offset
        shade = self._shading(geo)
        maps = render_mesh.mesh_maps(xy, -geo[:, 2], self.tris, self.parts, self.uv,
                                     roi.shape, min(1.0, RASTER_IOD / iod), shade[:, None])
        rendered = render_mesh.sample_texture(self.texture, maps)
        rendered *= maps.extra
        brightness = 1.0
        for label, contour, iris in ((mesh.PART_RIGHT_EYE, mesh.RIGHT_EYE, mesh.RIGHT_IRIS),
                                     (mesh.PART_LEFT_EYE, mesh.LEFT_EYE, mesh.LEFT_IRIS),
                                     (mesh.PART_MOUTH, mesh.INNER_LIPS, None)):
            sel = render_mesh.opening_mask(xy, contour, maps.part, label)
            if sel is None:
                continue
            if iris is None:
                sel = _inside_rim(sel)
                if sel is None:
                    continue
            attrs = maps.attrs[sel]
            if iris is None:
                opening = float(np.linalg.norm(geo[13, :2] - geo[14, :2])) / iod
                rendered[sel] = render_mesh.paint_mouth(attrs, opening, brightness)
                continue
            pix = np.stack([sel[1], sel[0]], axis=1).astype(np.float32)
            centre_xy = xy[iris[0]]
            radius = float(np.linalg.norm(xy[list(iris[1:])] - centre_xy, axis=1).mean())
            rendered[sel] = render_mesh.paint_eye(pix, attrs, centre_xy, radius, self.iris_rgb,
                                                  brightness)
        _draw_lashes(rendered, xy, iod, brightness)
        cover = render_mesh.hull_mask(lm[:, :2] - roi.offset, roi.shape) | maps.covered
        if grown is not None:
            cover |= polygon_mask(grown - roi.offset, roi.shape)
        canvas = self._extend_surface(rendered, maps.covered, iod)
        # The canvas covers the whole ROI: nothing for `composite` to extend.
        render_mesh.composite(out, roi, canvas, np.full(roi.shape, 255, np.uint8), cover,
                              feather)
        return out

    def _extend_surface(self, rendered: np.ndarray, covered: np.ndarray,
                        iod: float) -> np.ndarray:
        """The mask's material over the whole ROI: beyond the mesh (the grown forehead, jaw
        and ear margin) one flat shade of the skin, the mesh fading into it near its edge.

        A continuation of the rendered pixels (push-pull) runs out of levels over a deep
        forehead margin and left a black cap above the mask.
        """
        canvas = np.empty_like(rendered)
        canvas[...] = self.material.skin * FILL_SHADE
        ramp = max(EDGE_RAMP * iod, 1.5)
        dist = cv2.distanceTransform(covered, cv2.DIST_L2, 3)
        alpha = cv2.min(dist * (1.0 / ramp), 1.0)
        return cv2.blendLinear(rendered, canvas, alpha, 1.0 - alpha)

    def _shading(self, geo: np.ndarray) -> np.ndarray:
        """Per-vertex Lambert shading of the posed mask, light from the material's direction
        (about the camera's, from above)."""
        p = geo[: mesh.MESH_POINTS].astype(np.float64)
        t = self._skin_tris
        n = np.cross(p[t[:, 1]] - p[t[:, 0]], p[t[:, 2]] - p[t[:, 0]])
        normals = np.zeros_like(p)
        for k in range(3):
            np.add.at(normals, t[:, k], n)
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-9)
        # Orient toward the camera (negative z is nearer in MediaPipe's convention).
        if normals[:, 2].mean() > 0:
            normals = -normals
        light = self.material.light
        lambert = np.clip(normals @ light, 0.0, 1.0)
        shade = np.ones(mesh.LANDMARK_COUNT, np.float32)
        shade[: mesh.MESH_POINTS] = 0.6 + 0.45 * lambert
        return shade


# Lash lines: (contour, opacity). The upper lid's lashes are what marks a closed eye as closed:
# without them the closed mask eye is a pale seam that a landmark model reads as a narrowed,
# still open eye (GRID blinks: eye aspect ratio 0.21 read back where the patient's was 0.05).
_LASHES = ((mesh.RIGHT_EYE_UPPER, 0.85), (mesh.LEFT_EYE_UPPER, 0.85),
           (mesh.RIGHT_EYE_LOWER, 0.3), (mesh.LEFT_EYE_LOWER, 0.3))
_LASH_RGB = np.array([38, 28, 24], np.float32)


_LASH_FINE = 4   # lash lines are drawn this many times finer, for a thickness in quarter pixels


def _draw_lashes(rendered: np.ndarray, xy: np.ndarray, iod: float, brightness: float) -> None:
    # The thickness follows the face's size smoothly: rounded to whole pixels it stepped with
    # the face's size (a cue a recogniser can compare between captures).
    fine = max(_LASH_FINE, int(round(0.035 * iod * _LASH_FINE)))
    thickness = int(np.ceil(fine / _LASH_FINE))
    colour = _LASH_RGB * min(brightness, 1.0)
    rows, cols = rendered.shape[:2]
    for contour, opacity in _LASHES:
        pts = xy[list(contour)]
        pad = thickness + 2
        x0, y0 = np.maximum(np.floor(pts.min(axis=0)).astype(int) - pad, 0)
        x1 = min(int(np.ceil(pts[:, 0].max())) + pad + 1, cols)
        y1 = min(int(np.ceil(pts[:, 1].max())) + pad + 1, rows)
        if x1 <= x0 or y1 <= y0:
            continue
        big = np.zeros(((y1 - y0) * _LASH_FINE, (x1 - x0) * _LASH_FINE), np.uint8)
        # Pixel centres: x_fine = (x + 0.5) * fine - 0.5.
        fixed = np.rint(((pts - (x0, y0) + 0.5) * _LASH_FINE - 0.5) * 16).astype(np.int32)
        cv2.polylines(big, [fixed], False, 255, fine, cv2.LINE_AA, shift=4)
        line = cv2.resize(big, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
        a = line.astype(np.float32)[..., None] * (opacity / 255.0)
        patch = rendered[y0:y1, x0:x1]
        patch *= 1.0 - a
        patch += a * colour


def _inside_rim(sel: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
    """The pixels of an opening less its one-pixel rim (None if nothing is left).

    The mouth's contour polygon is filled with its outline, so closed lips (a polygon of no
    area) still painted a line of cavity pixels, a dark dot or stroke at the corner of a
    closed mouth; the rim stays the lips' colour.
    """
    ys, xs = sel
    y0, x0 = int(ys.min()), int(xs.min())
    area = np.zeros((int(ys.max()) - y0 + 3, int(xs.max()) - x0 + 3), np.uint8)
    area[ys - y0 + 1, xs - x0 + 1] = 1
    inner = cv2.erode(area, np.ones((3, 3), np.uint8))
    iy, ix = np.nonzero(inner)
    if len(iy) == 0:
        return None
    return iy + y0 - 1, ix + x0 - 1


def _rotation(roll: float, yaw: float, pitch: float) -> np.ndarray:
    """Rz(roll) @ Ry(yaw) @ Rx(pitch)."""
    cr, sr, cy, sy, cp, sp = (np.cos(roll), np.sin(roll), np.cos(yaw), np.sin(yaw),
                              np.cos(pitch), np.sin(pitch))
    return (np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
            @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
            @ np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]]))


def _euler(rotation: np.ndarray) -> tuple[float, float, float]:
    """(roll, yaw, pitch) with ``_rotation(roll, yaw, pitch) == rotation``."""
    r = np.asarray(rotation, np.float64)
    yaw = float(np.arcsin(np.clip(-r[2, 0], -1.0, 1.0)))
    pitch = float(np.arctan2(r[2, 1], r[2, 2]))
    roll = float(np.arctan2(r[1, 0], r[0, 0]))
    return roll, yaw, pitch


def _containing_scale(outline: np.ndarray, points: np.ndarray, previous: float) -> float:
    """How much the convex hull of ``outline`` must grow about the mean of ``outline`` to hold
    every one of ``points`` (x, y).

    Grows at once when needed, shrinks back slowly, so the mask does not pulse from frame to
    frame.
    """
    m = np.asarray(outline, np.float64)[:, :2]
    c = m.mean(axis=0)
    hull = cv2.convexHull(m.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    edges = np.roll(hull, -1, axis=0) - hull
    normals = np.stack([edges[:, 1], -edges[:, 0]], axis=1)
    offset = np.einsum("ij,ij->i", normals, hull - c)
    normals[offset < 0] *= -1
    offset = np.abs(offset)
    valid = offset > 1e-9
    pts = np.asarray(points, np.float64)[:, :2] - c
    gauge = (pts @ normals[valid].T) / offset[valid]
    needed = float(max(1.0, gauge.max())) * 1.01
    return max(needed, 0.97 * previous + 0.03 * needed, 1.0)

