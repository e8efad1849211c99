"""Synthetic-identity face swap: a donor texture rendered onto the patient's own face geometry.

The donor (a sample of the PCA texture model, or a site's consented photo; see donors.py) is
warped per triangle of MediaPipe's face mesh onto the patient's 478 landmarks, so the landmarks
stay where they were; eyelids and lips follow because the mesh does. The eye openings get a
synthetic eyeball with the iris at the patient's iris landmarks, the mouth opening a synthetic
cavity. Colour and low-frequency shading are matched to the frame and the edge is feathered
outside the face hull, which is covered completely.

``shape`` (0..1) blends the patient's geometry toward the model's mean shape carrying the
patient's expression (faces/expression.py), trading landmark fidelity for privacy: at 1.0 the
donor's identity shape (the mean shape) smiles, talks and blinks as the patient does. The
expression is the displacement fitted against the identity basis for one image, and against the
track's robust neutral in video (``track_id``), so the patient's own face shape is left out.
"""

from __future__ import annotations

import collections
import logging
import threading
from pathlib import Path

import numpy as np

from dicom_deid.faces import eyes, lips, mesh, mouth, render_mesh
from dicom_deid.faces.donor_texture import clean_texture
from dicom_deid.faces.donors import (
    DONOR_FALLBACKS,
    Donor,
    candidate_seed,
    choose_donor,
    load_model,
    settle_candidate,
)
from dicom_deid.faces.expression import ExpressionModel, NeutralTracker, load_expression_model
from dicom_deid.faces.eyes import lid_margin_bands
from dicom_deid.faces.shrink import shrink

log = logging.getLogger(__name__)

# Rasterise the mesh on a grid where the eyes are about this many pixels apart; the dense warp
# maps are upsampled from there (see render_mesh.mesh_maps).
RASTER_IOD = 48.0
# A face whose eyes are farther apart than this is rendered at this size and scaled up. The
# donor texture's own eyes are 97 px apart, so a larger render adds no texture, only per-pixel
# work that grows with the face's area (7 ms at 61 px, 12 ms at 121, about 35 at 300). Above
# every London photo's face (117-175 px), so the measured privacy and utility are unchanged.
MAX_RENDER_IOD = 180.0
# The donor's synthetic shape fades out over this distance from the face outline (canonical
# units, outer eye corners 1 apart). On London (landmarks only, 51 ids x 3 donors) the mean
# distance of the rendered geometry from the patient's landmarks was 3.55 % of the IOD with
# the shape everywhere at 1.5 SD and 1.98 % with the bare mean shape; 3.01 % with this fade at
# 1.75 SD, while a landmark-only linkage attack stays near chance (2.9 % vs 2.0 %; 19.6 % with
# the bare mean shape).
DONOR_OUTLINE_REACH = 0.2
DONOR_SHAPE_SPREAD = 1.75
# The single-image expression is kept on the lips, eyes and brows and fades with the distance
# from them (canonical units): elsewhere it is mostly the patient's shape that the identity
# basis missed. Costs nothing measurable on the held-out expression (cosine 0.942 vs 0.943).
# A soft threshold on the coefficients (0.3 prior SD) was tried: widening kept fell to 73 %.
EXPRESSION_REACH: float | None = 0.3
EXPRESSION_THRESHOLD = 0.0
# The identity prior's variances in the expression fit are scaled by this (1: as the model was
# built). The joint fit lets the identity basis take part of a smile: on the held-out London
# pairs the expression basis alone reproduces the displacement with cosine 0.961 (the raw
# displacement 0.965), the joint fit 0.881 (drawn geometry without openings, lips or lids;
# benchmarks/swap_expression_loss.py's data). Narrowing the identity prior gives the expression
# more of it: drawn geometry 0.862 -> 0.870 at 0.25, 0.881 at 0.1, 0.923 at 0.01, with a
# landmark-only linkage proxy (51 ids, random donors) 9.2 / 7.8 / 7.2 / 10.5 %. At 0.1 with
# OUTLINE_CLIP 0 (evaluate, London 3 keys, stop 30): held-out output cosine 0.849 -> 0.857,
# recogniser linkage 3.9 % pooled / 5.9 % worst key either way, rank-1 1.3 %, 0 leaks; GRID NME
# 3.04 -> 2.94 % MediaPipe, 4.72 -> 4.58 % dlib-68, EAR r 0.928 -> 0.939, MAR r 0.950 -> 0.948
# (metrics_{london,grid}_stop30_ip01.json against metrics_{london,grid}_i15nme6_clip0.json).
EXPRESSION_IDENTITY_PRIOR = 0.1
# Donor rejection (`SwapRenderer._settle_donor`): how many candidates a study may try, and the
# distance in the donor model's appearance embedding (standard deviations over its 20
# components) a render must keep from the patient. On London renders (5 identities x 8 donors)
# the renders that dlib put within 0.6 of their patient were at 4.4-4.8 (median of all 5.5),
# but one of the evaluation's leaks (key 2, 020 smiling, dlib 0.50-0.57) rendered at 5.86:
# at 6.0 about half the first candidates are turned down.
# With the cleaned donor texture (donor_texture.py) and the skin-only colour match, renders
# come out nearer their patient in this embedding (first three candidates of 30 London photos:
# median 4.79 against 5.15 before, 10th-90th percentile 3.64-6.35 against 3.68-6.71), and at 6.0
# only 14 % of candidates passed against 31 % before, and most studies fell back to the
# farthest of 8. 5.45 keeps the share of candidates passing as before; the three renders that
# had leaked (020, 092, 113 smiling, key 2) stay at dlib 0.73-0.88 from their patient. London
# linkage was 7.2 % at 6.0 and is 7.2 % at 5.45 (main 3.3 %): what raises it is the cleaned
# texture itself (4.6 % with clean_donor=False, but then 020's leak is back).
DONOR_CANDIDATES = 8
DONOR_MIN_DISTANCE = 5.45
# When no candidate reaches DONOR_MIN_DISTANCE (`donors.settle_candidate`): "farthest", "first",
# or "rank" (the DONOR_REJECT_CLOSEST nearest turned down, the first of the rest in seed order).
# "farthest" sends the fallbacks of every study of one patient the same way, away from the
# patient, and makes its donors alike for a recogniser (London replay of 8 forced candidates,
# benchmarks/swap_donor_candidates.py, keys 0-2: pair z -0.53 against -0.38 with "first"), but
# "first" lets leak-prone patients through (1-5 leaks). "rank" with 5 of 8 turned down keeps a
# push away from the patient without taking the extreme: replay linkage 8/153 against 10 and
# 0 leaks; evaluate (keys 0-2): linkage 4.6 % pooled (5.9/3.9/3.9) against 5.2 %, rank-1 0,
# 0 leaks.
DONOR_FALLBACK = "rank"
DONOR_REJECT_CLOSEST = 5
# A study's settled donor, by its seed and the rejection settings, so that the study's later
# instances (other renderers in this process) keep the donor its first face settled on: one
# study, one donor, and the expression across its captures is measured on one donor shape.
_SETTLED: collections.OrderedDict[tuple, int] = collections.OrderedDict()
_SETTLED_LOCK = threading.Lock()
_SETTLED_MAX = 1024
# Frames over which a track's neutral moves to each new estimate (NeutralTracker's refresh is
# every 5 frames), so that the face does not jump when it is re-estimated.
NEUTRAL_GLIDE = 5
# Each rendered lip's mean thickness is the patient's, within these bounds of the mean
# shape's (lips.keep_lip_thickness); None renders the donor's lips as they are (the behaviour
# before). The narrow bounds carry less of the patient's lips and keep the same gain.
# GRID (benchmarks/evaluate_shared.py, 1 key, 50 frames): MAR r 0.891 -> 0.944 (0.944 with
# 0.8-1.25 too; lbax4n 0.69 -> 0.94), NME 4.03 -> 3.95 %. London (3 keys): linkage 7.2 % pooled
# before and with these bounds (11 hits of 153 both; 7.8 % with 0.8-1.25), worst key 7.8 ->
# 9.8 % (5 hits of 51 where there were 4; the keys' hits moved, 4/3/4 -> 5/3/3), NME and
# held-out expression unchanged. The constants here are read when a renderer is made, so a
# benchmark can set them (evaluate_shared.py --swap-knob).
LIP_THICKNESS: tuple[float, float] | None = (0.9, 1.15)
# Whose lip profile along the mouth the thickness is applied to (`lips.keep_lip_thickness`):
# "mean", the mean shape's (the patient's thickness within LIP_THICKNESS of the mean shape's),
# or "rendered", the geometry's own before the mouth takes the patient's opening (the donor's
# lips with the patient's expression), scaled to the patient's thickness within LIP_THICKNESS
# of their own. The mean shape's profile is the same for every expression, so it undoes part
# of what the expression fit does to the lips (a smile stretches and thins them). Held-out
# London pairs (benchmarks/swap_expression_loss.py, 24 pairs x 3 keys, median cosine against
# the original's displacement): the drawn geometry 0.866 with "mean", 0.880 with "rendered".
# But what a landmarker reads on the output did not follow: key 0, "rendered" with bounds
# 0.6-1.15, geometry 0.864 -> 0.880 and output 0.816 -> 0.823; with 0.9-1.15 the donor's own
# lips (its identity sample, up to twice the mean shape's thickness) stay thick and the output
# fell on some pairs (London 039, 061). Off until evaluate shows a gain.
LIP_PROFILE = "mean"
# How much of the donor's own low-frequency rim and forehead colour the cleaned texture keeps
# (`donor_texture.clean_texture`'s keep_own; 0 the fully cleaned texture, the behaviour before).
# Off: at 0.5 the dark temple arcs showed again in renders of London 135 and 092.
DONOR_OWN_RIM = 0.0
# A per-study skin tone: the matched face is shifted in CIELAB by up to these (L, a, b)
# amounts, drawn from the donor's seed (the study's and site key's, never a name); zeros keep
# the frame's own skin colour (the behaviour before). Off: at (5, 3, 4) London linkage was
# 7.8 % alone (main 7.2 %) and 6.5 % with the lips kept (7.8 % without the tone), so no
# measurable gain, while the face-neck colour difference rose 5.2 -> 5.9 dE00 and a dark-skinned
# face came out greyer than its neck.
DONOR_TONE: tuple[float, float, float] = (0.0, 0.0, 0.0)
# How the donor's shape (with the patient's expression) is posed on the patient's face.
# "rigid": by the similarity fitted on the points expressions barely move (the expression
# model's rigid points: eyes, nose), the behaviour before. The donor's face then keeps its own
# size and place around the patient's eyes and nose, and a landmarker finds the whole outline,
# brows and mouth off by the donor's difference in size: on GRID the rendered geometry was
# 3 % smaller than the patient's on bbaf2n and pwij3p. "all": one more similarity, fitted in
# the canonical frame on all mesh points, places the donor's face over the patient's whole face
# (least squares). Nothing of the patient's shape is added, only where and how large the
# donor's face sits: the output is the same shape up to a similarity, which a recogniser's or a
# landmark attacker's alignment removes (landmark-only linkage on London, 3 keys x 51: 3.9 /
# 2.0 / 3.9 % "rigid", 5.9 / 2.0 / 3.9 % "all", with the attacker aligning on the rigid points;
# identical when it aligns on all points). GRID NME (1 key, 50 frames): 3.95 -> 3.42 %
# MediaPipe, 5.72 -> 5.60 % dlib. London (3 keys): NME 2.88 -> 2.54 %, recogniser linkage
# 7.2 -> 5.2 % pooled (11 -> 8 hits of 153, within noise), worst key 9.8 -> 5.9 %.
POSE_FIT = "all"
# The patient's own face outline kept (0: not at all): each point takes the patient's place with
# a weight that is 1 on the face oval and falls off as a Gaussian of its distance from it (this
# many canonical units). Off: see the note of branch i15nme4 for what it costs in linkage.
OUTLINE_KEEP = 0.0
# The donor's synthetic shape kept near the features (lips, eyes, brows) and faded with the
# distance from them (canonical units, `ExpressionModel.region_weights`); None: everywhere.
DONOR_FEATURE_REACH: float | None = None
# With POSE_FIT "all": the donor face's width and height fitted apart to the patient's, their
# ratio's square root within 1/ASPECT..ASPECT (1: not at all, the same scale both ways). Off:
# the face's proportion is a strong landmark cue. GRID geometry NME (3 donors per clip) 2.92 ->
# 2.32 % at 1.03, 2.25 % unbounded, but landmark-only linkage on London (6 keys x 51) went
# 3.9 -> 7.5 % (rigid-aligned attacker) and 4.2 -> 6.9 % (all-point aligned) at 1.03. The GRID
# evaluation at 1.03: NME 3.42 -> 2.88 % MediaPipe, 5.60 -> 5.14 % dlib, EAR r 0.93 -> 0.91,
# linkage 0/6 -> 1/6. London (3 keys) at 1.03: recogniser linkage 5.2 -> 7.2 % pooled (8 -> 11
# hits of 153), worst key 5.9 -> 7.8 %, rank-1 0 %, 0 leaks (branch i15nme5).
ASPECT = 1.0
# The face's edge fades out over `SwapRenderer.feather` (0.12 inter-ocular distances) outside the
# covered face. Below the eyes, where the face meets the background, hair, ears and neck, that
# soft fringe of rendered skin over the background reads as a wider face: dlib places the jaw's
# upper points (0-3, 13-16) 12-14 % of the IOD outside the original's on GRID (MediaPipe's oval
# sides 6 %): the jaw is 45 % of the dlib-68 NME there. With this set (inter-ocular distances), the
# fade is this narrow below the eye line and widens to the full feather over OUTLINE_FEATHER_RAMP
# (IODs above the eye line), so the forehead, where the face's top meets the patient's skin,
# keeps its soft edge (a narrow one there shows as an arc). None: the feather everywhere (the
# behaviour before). GRID (evaluate_shared.py, 1 key, 50 frames): NME 3.42 -> 3.23 % MediaPipe,
# 5.60 -> 5.07 % dlib-68; EAR r, MAR r, blinks, flicker and leaks as before. London (3 keys):
# recogniser linkage 5.2 -> 5.9 % pooled (8 -> 9 hits of 153), worst key 5.9 -> 7.8 %, rank-1 0 %,
# 0 leaks; no shape of the patient's is added (the covered hull is replaced as before).
OUTLINE_FEATHER: float | None = 0.05
OUTLINE_FEATHER_RAMP = (0.0, 0.4)
# Below the eye line the covered face is the union of the patient's hull and the rendered
# geometry's, so where the donor's outline lies outside the patient's (the mean shape is wider
# than a narrow face) rendered skin is painted over the background, and both landmarkers read
# the output's jaw that much wider (GRID: dlib's jaw sides 9-12 % of the IOD outward after
# OUTLINE_FEATHER). With this set (inter-ocular distances), the rendered face is cut off this
# far outside the patient's hull, from OUTLINE_CLIP_ABOVE IODs above the rendered eye line
# down; the patient's hull is still replaced completely. None: not cut (the behaviour before).
# Nothing of the patient's is drawn that the union did not already show (the patient's outline
# where it lies outside the donor's), but the output's outline below the eyes becomes the
# patient's everywhere. GRID (evaluate_shared.py, 1 key, 50 frames) at 0: NME 3.23 -> 3.04 %
# MediaPipe, 5.07 -> 4.72 % dlib-68 (jaw 7.9 -> 6.5 % IOD); EAR r 0.933 -> 0.928, MAR r 0.950,
# 7/7 blinks, flicker 0.87x, 0 leaks (branch i15nme6). Where the jaw is still read outward
# (lbax4n, brbk7n: 8-9 % IOD at the sides) the rendered geometry is within 1 % of the
# patient's: dlib places the original's jaw inside its low-contrast silhouette and the
# output's on the rendered face's edge. London (3 keys) at 0: recogniser linkage 4.6 -> 3.9 %
# pooled (7 -> 6 hits of 153), worst key 5.9 %, rank-1 0.7 -> 1.3 % (chance 2.0 %), 0 leaks,
# NME 2.46 -> 2.39 % MediaPipe, 3.76 -> 3.61 % dlib-68, held-out expression cosine 0.842 ->
# 0.849. On by default.
OUTLINE_CLIP: float | None = 0.0
OUTLINE_CLIP_ABOVE = 0.0
# How much of the patient's brow height above the eyes (in IODs, across the eye line) the
# rendered brows take (0: the donor's, the behaviour before; 1: the patient's): brow height is
# expression (raised, lowered) as much as identity. The brows and the skin within BROW_REACH
# canonical units of them move together; the eyes and irises stay where they are.
# Off: with OUTLINE_CLIP 0, BROW_KEEP 1 took GRID NME 3.04 -> 3.02 % MediaPipe, 4.72 -> 4.60 %
# dlib-68 (bbaf2n's brows 9.0 -> 5.9 % IOD), EAR r 0.928 -> 0.909, but London (3 keys)
# recogniser linkage 3.9 -> 5.9 % pooled (6 -> 9 hits of 153), worst key 5.9 -> 7.8 %, rank-1
# 0.7 %, 0 leaks; held-out expression cosine 0.849 -> 0.854 (branch i15nme6). Brow height is
# identity too.
BROW_KEEP = 0.0
BROW_REACH = 0.08
# MediaPipe's brow points (upper and lower edge), the subject's right then left.
_BROWS = ((70, 63, 105, 66, 107, 46, 53, 52, 65, 55),
          (300, 293, 334, 296, 336, 276, 283, 282, 295, 285))
# A per-study skin tone along the skin-tone locus instead: one number per study, uniform within
# +-DONOR_TONE_LOCUS CIELAB L units, darkens (or lightens) the matched face and saturates (or
# desaturates) its a and b in proportion to the frame's own skin chroma, as tanning does
# (TONE_CHROMA_PER_L per L unit), so the hue stays the skin's and no face turns grey; 0 is off.
# Off: greying the face's colour or setting every face's mean LAB (or only its mean L) to one
# value before dlib left London swap linkage where it was (key 0: 5 of 51 hits each; mean rank
# of the true identity 18.7, 18.3, 18.4; benchmarks/swap_linkage_regions.py), so the skin tone
# is not what links two captures and shifting it cannot unlink them.
DONOR_TONE_LOCUS = 0.0
# The frame's low-frequency lightness replaces the rendered face's at this scale (inter-ocular
# distances; `render_mesh.match_colour_lab`): the frame's light on the donor face. It also
# carries the patient's own shading (nose, eye sockets, cheekbones) at that scale.
SHADING_SIGMA = 0.35
# Appearance fixes of issue 15 item 3 (the forehead arc, a lighter forehead patch, lipstick on
# darker faces; branch i15look7). The forehead and rim ones are off here (the behaviour before)
# because London linkage rose with them, within the evaluation's noise but above the 5 % target
# (CHROMA_FLOOR, the lips, is on: it alone left linkage where it was):
# benchmarks/evaluate_shared.py (London 3 keys; GRID 1 key, 50 frames), stop 30 -> all four on:
# London linkage 3.9 -> 7.2 % pooled (6 -> 11 hits of 153), worst key 5.9 -> 7.8 %, rank-1
# 1.3 %, 0 leaks, held-out cosine 0.857 -> 0.861, boundary contrast 1.378 -> 1.420, face-neck
# dE00 5.12 -> 5.17; without FOREHEAD_SIGMA 5.2 % (8 hits), worst 5.9 %; FOREHEAD_SIGMA alone
# 5.2 % (8 hits), worst 7.8 %; the texture ones alone 5.2 % (8 hits). GRID all on: NME 2.94 ->
# 2.91 % MediaPipe, 4.58 -> 4.59 % dlib-68, EAR r 0.939 -> 0.950, MAR r 0.948 -> 0.949, 7/7
# blinks, flicker 0.87x, 0 leaks, boundary contrast 1.710 -> 1.725, face-neck dE00 16.19 ->
# 15.72 (metrics_{london,grid}_i15look7*.json of 2026-12-08).
#
# Above the brows the frame's lightness replaces the rendered face's once more at this finer
# scale (inter-ocular distances; 0: not at all, the behaviour before), ramping in between
# FOREHEAD_RAMP IODs above the eye line (`render_mesh.fine_shading`). The face's top meets the
# patient's forehead there: at SHADING_SIGMA alone a donor forehead lighter than the patient's
# (relative to the rest of the face) was a lighter patch up to the hairline with the patient's
# own strip above it reading as a dark arc (GRID lbax4n: rendered forehead 75 L against the
# frame's 66). At 0.1 the rendered face along its upper edge is 3.5-5.5 L from the patient's on
# 4 GRID clips x 4 donors, against 6.8-8.4 without (tests/faces/test_swap_seams.py's measure).
FOREHEAD_SIGMA = 0.0
FOREHEAD_RAMP = (0.35, 0.6)
# And along the face's upper edge (the temples, where it meets the patient's temple skin or
# hair): within this many IODs of the rendered face's edge, above the eye line (ramping in over
# FOREHEAD_EDGE_RAMP). On lbax4n the patient's left temple is lit (77 L) where the donor's
# was 64: the dark curve of the arc.
FOREHEAD_EDGE = 0.3
FOREHEAD_EDGE_RAMP = (0.05, 0.25)
# The colour match's a and b gains follow the frame's skin lightness when it is darker than
# the donor's, down to this factor (`render_mesh.match_colour_lab`'s chroma_floor; None: not
# at all, the behaviour before): on a darker face the donor's lips kept their full chroma
# against the skin and read as lipstick (London 061: rendered lips a +10.4, b -11.4 against the
# skin, the patient's own +0.2, -5.1; at 0.4: +5.5, -6.0). On: London (3 keys, this alone)
# linkage 3.9 % pooled (the same 3/2/1 hits as stop 30), worst key 5.9 %, rank-1 1.3 %, 0
# leaks, held-out cosine 0.857, widening 91 %, corner lift 80 %, NME 2.33 / 3.55 %, boundary
# contrast 1.379 (1.378), face-neck dE00 5.12 -> 5.06 (metrics_london_i15look7_lipsonly.json).
CHROMA_FLOOR: float | None = 0.4
# The donor texture's cleaning (`donor_texture.clean_texture`), above the eyes: the mean
# texture's fine detail faded out over this distance from the outline (0: kept, the behaviour
# before; its training photos' outline is a dark line there, a thin arc on the render), and
# the skin colour continued from the nearest inner skin without the brows (False: the push-pull
# fill, the behaviour before, whose forehead darkened toward the hairline, 177 -> 159 grey).
DONOR_EDGE_DETAIL = 0.0
DONOR_NEAREST_FILL = False
TONE_CHROMA_PER_L = 0.025


def check_inputs(rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Validate a frame and its landmarks; the landmarks as (478, 3) float32."""
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 \
            or rgb.dtype != np.uint8:
        raise ValueError(f"frame must be an HxWx3 uint8 RGB array, got "
                         f"{getattr(rgb, 'shape', None)} {getattr(rgb, 'dtype', None)}")
    lm = np.asarray(landmarks, dtype=np.float32)
    if lm.ndim != 2 or lm.shape[0] != mesh.LANDMARK_COUNT or lm.shape[1] not in (2, 3):
        raise ValueError(f"landmarks must be {mesh.LANDMARK_COUNT}x3 (face mesh with iris), "
                         f"got {lm.shape}")
    if not np.isfinite(lm).all():
        raise ValueError("landmarks contain NaN or infinite values")
    if lm.shape[1] == 2:
        lm = np.concatenate([lm, np.zeros((len(lm), 1), np.float32)], axis=1)
    return lm


def donor_identity_shape(canonical: np.ndarray, expression: ExpressionModel, seed: int,
                         spread: float, outline_reach: float = 0.0,
                         feature_reach: float | None = None) -> np.ndarray:
    """The donor's neutral shape: ``canonical`` plus the expression model's identity sample for
    ``seed`` at ``spread`` standard deviations, faded out toward the face outline (a Gaussian
    rise over ``outline_reach`` canonical units from the oval; 0 = everywhere). The outline is
    where the frame's hair, ears and background meet the face, and where a landmarker reads the
    jaw: moving it costs landmark fidelity (NME) more than it hides identity."""
    offset = expression.identity_sample(seed, spread)
    if outline_reach > 0:
        offset = offset * (1.0 - outline_weights(canonical, outline_reach))[:, None]
    if feature_reach is not None:
        offset = offset * expression.region_weights(feature_reach)[:, None]
    return canonical.astype(np.float64) + offset


def blend_toward_mean(landmarks: np.ndarray, canonical: np.ndarray, amount: float,
                      expression: ExpressionModel | None = None,
                      displacement: np.ndarray | None = None,
                      private: tuple[float, float | None] | tuple[float, float | None, float]
                      = (0.0, None),
                      pose_fit: str = "rigid", outline_keep: float = 0.0,
                      aspect: float = 1.0, openings: bool = True) -> np.ndarray:
    """Move the face geometry ``amount`` of the way to the mean shape posed like the patient.

    With ``expression`` the target is the mean shape plus the patient's expression displacement
    (``displacement`` in the canonical frame, or the model's single-image fit when None), posed
    by a similarity fitted on the points expressions barely move (``private``: the threshold
    and reach of `ExpressionModel.private_expression` for the single-image fit), refitted on all
    mesh points with ``pose_fit`` "all" (`POSE_FIT`; ``aspect``: `fit_pose_all`) and with the
    patient's outline kept with ``outline_keep`` > 0 (`OUTLINE_KEEP`); without it,
    the bare mean
    shape posed by a fit on all mesh points (the expression is lost). The blend happens in the
    aligned frame; eyelid and lip openings and each iris's offset within its eye stay the
    patient's (`keep_openings`; ``openings`` False leaves that to the caller).
    """
    if amount <= 0.0:
        return landmarks.copy()
    if expression is None:
        pts = mesh.MESH_POINTS
        sim = mesh.fit_similarity(canonical[:pts], landmarks[:pts])
        mean_posed = sim.apply(canonical).astype(np.float32)
        out = (1.0 - amount) * landmarks + amount * mean_posed
    else:
        patient, pose = expression.to_canonical(landmarks)
        d = expression.private_expression(patient, *private) if displacement is None \
            else displacement
        target = canonical.astype(np.float64) + d
        if pose_fit == "all":
            target = fit_pose_all(target, patient, aspect)
        if outline_keep > 0:
            w = outline_weights(canonical, outline_keep)[:, None]
            target = (1.0 - w) * target + w * patient
        out = expression.from_canonical((1.0 - amount) * patient + amount * target, pose)
        out = out.astype(np.float32)
    if openings:
        keep_openings(out, landmarks)
    return out.astype(np.float32)


def keep_openings(out: np.ndarray, landmarks: np.ndarray) -> None:
    """Give ``out`` (changed in place) the patient's eyelid and lip openings and each iris's
    offset within its eye."""
    # The mean shape has open eyes and a closed mouth: blended as it is, blinks and speech would
    # fade with `amount` (GRID EAR r 0.75 -> 0.49 at 0.7, no blink left). The apertures are
    # expression, not identity, so they stay the patient's.
    for upper, lower in mesh.APERTURES:
        _keep_aperture(out, landmarks, upper, lower)
    for eye, iris in ((mesh.RIGHT_EYE, mesh.RIGHT_IRIS), (mesh.LEFT_EYE, mesh.LEFT_IRIS)):
        eye, iris = list(eye), list(iris)  # type: ignore[assignment]
        before = landmarks[eye].mean(axis=0)
        after = out[eye].mean(axis=0)
        width_before = mesh.inter_ocular(landmarks) or 1.0
        width_after = mesh.inter_ocular(out) or 1.0
        out[iris] = after + (landmarks[iris] - before) * (width_after / width_before)


def brow_weights(canonical: np.ndarray, reach: float) -> list[np.ndarray]:
    """Per brow (right, left), per point (478,): 1 on the brow, a Gaussian of the distance from
    it elsewhere (canonical units), 0 on the eye contours and irises."""
    xy = np.asarray(canonical, np.float64)[:, :2]
    fixed = list(mesh.RIGHT_EYE) + list(mesh.LEFT_EYE) + list(mesh.RIGHT_IRIS) \
        + list(mesh.LEFT_IRIS)
    out = []
    for brow in _BROWS:
        dist = np.min(np.linalg.norm(xy[:, None, :] - xy[list(brow)][None, :, :], axis=2), axis=1)
        w = np.exp(-0.5 * (dist / reach) ** 2)
        w[fixed] = 0.0
        out.append(w)
    return out


def keep_brow_height(out: np.ndarray, landmarks: np.ndarray, canonical: np.ndarray,
                     keep: float, reach: float | None = None) -> None:
    """Move each brow of ``out`` (in place) across its eye line by ``keep`` of the difference
    between the patient's brow height above that eye and its own (both in IODs)."""
    weights = brow_weights(canonical, BROW_REACH if reach is None else reach)

    def heights(points: np.ndarray) -> tuple[np.ndarray, float, list[float]]:
        a, b = (points[i, :2].astype(np.float64) for i in mesh.OUTER_EYE_CORNERS)
        iod = float(np.hypot(*(b - a))) or 1.0
        up = np.array([(b - a)[1], -(b - a)[0]]) / iod
        if np.dot(points[1, :2] - (a + b) / 2.0, up) > 0:
            up = -up  # away from the nose tip
        return up, iod, [float(np.dot(points[list(brow), :2].mean(axis=0)
                                      - points[list(eye), :2].mean(axis=0), up)) / iod
                         for brow, eye in zip(_BROWS, (mesh.RIGHT_EYE, mesh.LEFT_EYE),
                                              strict=True)]

    _, _, want = heights(landmarks)
    up, iod, have = heights(out)
    for w, h_want, h_have in zip(weights, want, have, strict=True):
        shift = keep * (h_want - h_have) * iod * w
        out[:, :2] += (shift[:, None] * up[None, :]).astype(out.dtype)


def fit_pose_all(target: np.ndarray, patient: np.ndarray, aspect: float = 1.0) -> np.ndarray:
    """``target`` (canonical frame) moved by the least-squares similarity onto ``patient`` over
    all mesh points. With ``aspect`` > 1 its width and height are then scaled apart by the
    least-squares factors, their ratio's square root clipped to 1/aspect..aspect (the face's
    width-to-height proportion taken from the patient within those bounds)."""
    pts = mesh.MESH_POINTS
    placed = mesh.fit_similarity(target[:pts], patient[:pts]).apply(target)
    if aspect <= 1.0:
        return placed
    centre, patient_centre = placed[:pts].mean(axis=0), patient[:pts].mean(axis=0)
    a, b = placed[:pts, :2] - centre[:2], patient[:pts, :2] - patient_centre[:2]
    sx, sy = ((a * b).sum(axis=0) / np.maximum((a * a).sum(axis=0), 1e-12)).tolist()
    if sx <= 0 or sy <= 0:
        return placed
    mean, ratio = np.sqrt(sx * sy), float(np.clip(np.sqrt(sx / sy), 1 / aspect, aspect))
    scale = np.array([mean * ratio, mean / ratio, mean])
    return centre + (placed - centre) * scale + (patient_centre - centre)


def outline_weights(canonical: np.ndarray, reach: float) -> np.ndarray:
    """Per point (478,): 1 on the face oval, a Gaussian of the distance from it elsewhere."""
    xy = np.asarray(canonical, np.float64)[:, :2]
    oval = xy[list(mesh.FACE_OVAL)]
    dist = np.min(np.linalg.norm(xy[:, None, :] - oval[None, :, :], axis=2), axis=1)
    return np.exp(-0.5 * (dist / reach) ** 2)


def _keep_aperture(out: np.ndarray, landmarks: np.ndarray, upper: tuple[int, ...],
                   lower: tuple[int, ...]) -> None:
    """Give the contour points of ``out`` the patient's distance from the corner line.

    Distances are measured across the line through the two corners, in units of the corner
    distance, so the opening is the patient's while its width and position are the blend's.
    """
    a, b = upper[0], upper[-1]

    def frame(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        along = points[b, :2] - points[a, :2]
        width = float(np.hypot(*along))
        if width < 1e-6:
            return points[a, :2], np.zeros(2, np.float32), 0.0
        across = np.array([-along[1], along[0]], np.float32) / width
        return (points[a, :2] + points[b, :2]) / 2.0, across, width

    o_pat, n_pat, w_pat = frame(landmarks)
    o_out, n_out, w_out = frame(out)
    if w_pat == 0.0 or w_out == 0.0:
        return
    idx = list(upper[1:-1]) + list(lower[1:-1])
    want = (landmarks[idx, :2] - o_pat) @ n_pat / w_pat * w_out
    have = (out[idx, :2] - o_out) @ n_out
    out[idx, :2] += np.outer(want - have, n_out)


def _eye_line(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The midpoint of the outer eye corners of ``xy`` and the unit normal pointing down the
    face from the line through them; None when the corners coincide."""
    a, b = (xy[i] for i in mesh.OUTER_EYE_CORNERS)
    axis = b - a
    length = float(np.hypot(*axis))
    if length < 1e-6:
        return None
    return (a + b) / 2.0, np.array([-axis[1], axis[0]]) / length


class SwapRenderer:
    """Renders one donor identity onto faces; stateless across frames.

    ``eyes`` / ``mouth``: "synthetic" paints the openings (default), "patient" keeps the
    frame's pixels there (measured alternative; the patient's iris and teeth stay visible).
    ``neutral_glide``: frames over which a track's neutral glides to each new estimate (0: at
    once, the behaviour before).
    ``closing_lids``: a closing eye carries the lid margin down and shows a lash line when shut
    (`eyes.follow_lid_margin`, `eyes.paint_eye`); False renders the mesh as MediaPipe places
    it (the behaviour before, kept to measure against: blinks read 75-85 % open).
    ``clean_donor``: the donor texture's rim and forehead are replaced by its own smooth skin
    colour with the mean texture's fine detail (`donor_texture.clean_texture`: no hair arcs,
    halo or forehead streaks); False renders the sample as it is (the behaviour before).
    ``lip_thickness``: bounds (low, high) on each rendered lip's thickness relative to the mean
    shape's, within which it is the patient's (`lips.keep_lip_thickness`); None keeps the
    donor's lips; "default" takes LIP_THICKNESS.
    ``donor_own_rim``, ``tone_range``: donor variety (DONOR_OWN_RIM, DONOR_TONE when None).
    """

    def __init__(self, donor_seed: int = 0, shape: float = 0.0, *,
                 donors_dir: Path | None = None, model_path: str | None = None,
                 eyes: str = "synthetic", mouth: str = "synthetic",
                 shading_sigma: float | None = None, feather: float = 0.12,
                 keep_expression: bool = True, donor_shape: float | None = None,
                 donor_outline: float = DONOR_OUTLINE_REACH,
                 expression_threshold: float = EXPRESSION_THRESHOLD,
                 expression_reach: float | None = EXPRESSION_REACH,
                 donor_candidates: int | None = None,
                 donor_min_distance: float | None = None,
                 closing_lids: bool = True, neutral_glide: int = NEUTRAL_GLIDE,
                 clean_donor: bool = True, max_tracks: int = 64,
                 lip_thickness: tuple[float, float] | None | str = "default",
                 donor_own_rim: float | None = None,
                 tone_range: tuple[float, float, float] | None = None,
                 tone_locus: float | None = None) -> None:
        if not 0.0 <= float(shape) <= 1.0:
            raise ValueError(f"shape must be within 0..1, got {shape}")
        if eyes not in ("synthetic", "patient") or mouth not in ("synthetic", "patient"):
            raise ValueError("eyes and mouth must be 'synthetic' or 'patient'")
        self.shape = float(shape)
        self.lip_thickness = _bounds(LIP_THICKNESS if lip_thickness == "default"
                                     else lip_thickness)
        if LIP_PROFILE not in lips.PROFILES:
            raise ValueError(f"LIP_PROFILE must be one of {lips.PROFILES}, got {LIP_PROFILE!r}")
        self.lip_profile = str(LIP_PROFILE)
        if POSE_FIT not in ("rigid", "all") or OUTLINE_KEEP < 0:
            raise ValueError(f"POSE_FIT must be 'rigid' or 'all' and OUTLINE_KEEP >= 0, got "
                             f"{POSE_FIT!r}, {OUTLINE_KEEP}")
        self.pose_fit, self.outline_keep = POSE_FIT, float(OUTLINE_KEEP)
        self.feature_reach = DONOR_FEATURE_REACH
        self.aspect = float(ASPECT)
        self.outline_feather = None if OUTLINE_FEATHER is None else float(OUTLINE_FEATHER)
        self.outline_ramp = tuple(float(v) for v in OUTLINE_FEATHER_RAMP)
        self.outline_clip = None if OUTLINE_CLIP is None else float(OUTLINE_CLIP)
        self.outline_clip_above = float(OUTLINE_CLIP_ABOVE)
        self.brow_keep = float(BROW_KEEP)
        if not 0.0 <= self.brow_keep <= 1.0:
            raise ValueError(f"BROW_KEEP must be within 0..1, got {BROW_KEEP}")
        if self.outline_clip is not None and self.outline_clip < 0:
            raise ValueError(f"OUTLINE_CLIP must be at least 0, got {OUTLINE_CLIP}")
        if self.aspect < 1.0:
            raise ValueError(f"ASPECT must be at least 1, got {ASPECT}")
        self.model = load_model(model_path)
        # Without the expression model the target is the bare mean shape (the behaviour before
        # issue 15, kept to measure against).
        self.expression = load_expression_model() if keep_expression else None
        self.max_tracks = max_tracks
        self.neutral_glide = neutral_glide
        self._trackers: collections.OrderedDict[int, NeutralTracker] = \
            collections.OrderedDict()
        # The donor's own neutral shape: the mean shape plus an identity sampled from the
        # expression model for the same seed (``donor_shape`` standard deviations), so that
        # donors differ in face shape as well as texture; nobody's shape either way. The
        # single-image expression fit still carries some of the patient's shape (a neutral
        # face's fitted expression is about 2/3 of a smile's size); a varied donor shape drowns
        # it: a landmark-only linkage attack on held-out London pairs links 25 % with the mean
        # shape, 15 % at 1.0, 11 % at 1.5, 8 % at 2.0 standard deviations (chance 4 %). The
        # shape fades out toward the outline (``donor_outline``, DONOR_OUTLINE_REACH), where it
        # moved the jaw landmarks most.
        # The donor settings left None take the module constants when the renderer is made (not
        # when this module is imported), so that a benchmark can set them (--swap-knob).
        if donor_shape is None:
            donor_shape = DONOR_SHAPE_SPREAD
        self._donor_source = (donors_dir, model_path, float(donor_shape), float(donor_outline))
        self.clean_donor = clean_donor
        self.donor_own_rim = float(DONOR_OWN_RIM if donor_own_rim is None else donor_own_rim)
        self.edge_detail = float(DONOR_EDGE_DETAIL)
        self.nearest_fill = bool(DONOR_NEAREST_FILL)
        tone = DONOR_TONE if tone_range is None else tone_range
        self.tone_range = tuple(float(v) for v in tone)
        if len(self.tone_range) != 3 or min(self.tone_range) < 0:
            raise ValueError(f"tone_range must be three amounts >= 0 (L, a, b), got {tone}")
        self.tone_locus = float(DONOR_TONE_LOCUS if tone_locus is None else tone_locus)
        if not 0.0 <= self.tone_locus <= 30.0:
            raise ValueError(f"tone_locus must be within 0..30 L units, got {tone_locus}")
        self.seed = int(donor_seed)
        self._use_donor(self.seed)
        # Donor rejection (`_settle_donor`): on the first face rendered, candidates after the
        # study's first are tried until one renders far enough from the patient.
        self.candidates = max(1, int(DONOR_CANDIDATES if donor_candidates is None
                                     else donor_candidates))
        self.min_distance = float(DONOR_MIN_DISTANCE if donor_min_distance is None
                                  else donor_min_distance)
        self.fallback = str(DONOR_FALLBACK)
        if self.fallback not in DONOR_FALLBACKS:
            raise ValueError(f"DONOR_FALLBACK must be one of {DONOR_FALLBACKS}, got {self.fallback!r}")
        self.reject_closest = min(int(DONOR_REJECT_CLOSEST), self.candidates - 1)
        self.donor_settled = self.candidates == 1
        self.donor_distance: float | None = None
        self.identity_prior = float(EXPRESSION_IDENTITY_PRIOR)
        if not self.identity_prior > 0:
            raise ValueError(f"EXPRESSION_IDENTITY_PRIOR must be > 0, got {EXPRESSION_IDENTITY_PRIOR}")
        self.private = (float(expression_threshold), expression_reach, self.identity_prior)
        self.eyes = eyes
        self.mouth = mouth
        # In inter-ocular distances; 0 = no shading transfer.
        self.shading_sigma = float(SHADING_SIGMA if shading_sigma is None else shading_sigma)
        self.forehead_sigma = float(FOREHEAD_SIGMA)
        self.chroma_floor = None if CHROMA_FLOOR is None else float(CHROMA_FLOOR)
        self.feather = feather               # in inter-ocular distances
        layout = self.model.layout
        self.tris, self.parts, self.uv = layout.triangles, layout.parts, layout.uv
        self.lid_bands = lid_margin_bands(self.uv) if closing_lids else None

    def _use_donor(self, seed: int) -> None:
        """Make the donor of ``seed`` (texture and synthetic neutral shape) the one rendered."""
        donors_dir, model_path, donor_shape, donor_outline = self._donor_source
        self.donor: Donor = choose_donor(seed, donors_dir, model_path)
        self.identity_shape = self.model.canonical.astype(np.float64)
        if self.expression is not None and donor_shape > 0 and self.donor.label.startswith("pca:"):
            self.identity_shape = donor_identity_shape(self.identity_shape, self.expression,
                                                       seed, donor_shape, donor_outline,
                                                       self.feature_reach)
        texture = self.donor.texture
        if self.clean_donor:
            texture = clean_texture(texture, self.model.mean_texture, self.model.layout,
                                    self.donor_own_rim, edge_detail=self.edge_detail,
                                    nearest_fill=self.nearest_fill)
        self.tone = donor_tone(seed, self.tone_range)
        self.tone_chroma = 1.0
        locus = donor_tone_locus(seed, self.tone_locus)
        if locus is not None:
            light, self.tone_chroma = locus
            base = self.tone or (0.0, 0.0, 0.0)
            self.tone = (base[0] + light, base[1], base[2])
        self.texture = np.ascontiguousarray(texture, dtype=np.float32)
        # Sampled in LAB, where the colour match works, instead of converting every frame.
        self.texture_lab = render_mesh.to_lab(self.texture)

    def _settle_donor(self, rgb: np.ndarray, lm: np.ndarray) -> None:
        """Choose the study's donor among its candidates, on the first face it renders.

        A candidate is rendered on this face (single-image expression, colour and shading
        matched to the frame as in the output) and compared with the patient's own face in the
        donor model's appearance embedding (`DonorModel.embed`); which one is kept is
        `donors.settle_candidate`'s rule (DONOR_MIN_DISTANCE, DONOR_FALLBACK,
        DONOR_REJECT_CLOSEST). Deterministic for a key and a content;
        a study's later renderers in this process take the donor its first face settled on.
        The independent recogniser that measures privacy is never used here: a random donor
        sometimes lands near its patient for it (London, 3 of 153 renders within dlib's 0.6),
        and its distance follows this embedding's (r 0.54 over 40 renders of 5 identities).
        """
        settled_key = (self.seed, self.candidates, self.min_distance, self.fallback,
                       self.reject_closest, self.shape,
                       self.lip_thickness, self.lip_profile, self.identity_prior,
                       self.donor_own_rim,
                       self.tone_range,
                       self.tone_locus, self.shading_sigma, self.pose_fit, self.outline_keep,
                       self.feature_reach, self.aspect, self.outline_feather,
                       self.outline_ramp, self.feather, self.outline_clip,
                       self.outline_clip_above, self.brow_keep, self.forehead_sigma,
                       self.chroma_floor, self.edge_detail, self.nearest_fill,
                       *map(str, self._donor_source))
        with _SETTLED_LOCK:
            known = _SETTLED.get(settled_key)
        if known is not None:
            if known != self.seed:
                self._use_donor(known)
            self.donor_settled = True
            return
        patient = self.model.embed(rgb, lm)
        loaded = 0

        def distance(index: int) -> float:
            nonlocal loaded
            if index != loaded:
                self._use_donor(candidate_seed(self.seed, index))
                loaded = index
            geo = self.geometry(lm)
            out = self._render_scaled(rgb, lm, geo, inplace=False)
            return float(np.linalg.norm(self.model.embed(out, geo) - patient))

        index, dist = settle_candidate(distance, self.candidates, self.min_distance,
                                       self.fallback, self.reject_closest)
        seed = candidate_seed(self.seed, index)
        if index != loaded:
            self._use_donor(seed)
        log.debug("donor candidate %d of %d, appearance distance %.2f",
                  index + 1, self.candidates, dist)
        self.donor_distance = dist
        self.donor_settled = True
        with _SETTLED_LOCK:
            _SETTLED[settled_key] = seed
            while len(_SETTLED) > _SETTLED_MAX:
                _SETTLED.popitem(last=False)

    def reset(self, track_id: int | None = None) -> None:
        """Forget the neutral estimate of one track (or of all)."""
        if track_id is None:
            self._trackers.clear()
        else:
            self._trackers.pop(track_id, None)

    def _tracker(self, track_id: int) -> NeutralTracker:
        tracker = self._trackers.get(track_id)
        if tracker is None:
            tracker = NeutralTracker(self.expression, glide=self.neutral_glide,
                                     identity_scale=self.identity_prior)
            self._trackers[track_id] = tracker
            while len(self._trackers) > self.max_tracks:
                self._trackers.popitem(last=False)
        else:
            self._trackers.move_to_end(track_id)
        return tracker

    def geometry(self, landmarks: np.ndarray, track_id: int | None = None) -> np.ndarray:
        """The geometry the donor is rendered on: the landmarks blended by ``shape`` toward the
        mean shape with the patient's expression (``track_id``: that track's expression
        against its own neutral, which this call updates)."""
        lm = check_landmarks(landmarks)
        fitted = None
        if self.shape <= 0.0 or self.expression is None:
            out = blend_toward_mean(lm, self.identity_shape, self.shape, self.expression)
        else:
            displacement = None
            if track_id is not None:
                patient, _ = self.expression.to_canonical(lm)
                displacement = self._tracker(track_id).update(patient)
            out = blend_toward_mean(lm, self.identity_shape, self.shape, self.expression,
                                    displacement, self.private, self.pose_fit,
                                    self.outline_keep, self.aspect, openings=False)
            # The lips as the expression fit shaped them, before the mouth takes the
            # patient's opening (which can squeeze a lip to nothing).
            fitted = out.copy() if self.lip_profile == "rendered" else None
            keep_openings(out, lm)
        if self.lip_thickness is not None and self.shape > 0.0:
            lips.keep_lip_thickness(out, lm, self.model.canonical, self.lip_thickness,
                                    self.lip_profile, fitted)
        if self.brow_keep > 0.0 and self.shape > 0.0:
            keep_brow_height(out, lm, self.model.canonical, self.brow_keep)
        return out

    def render(self, rgb: np.ndarray, landmarks: np.ndarray, *,
               inplace: bool = False, track_id: int | None = None) -> np.ndarray:
        """A new frame with the face of ``landmarks`` replaced by the donor (with ``inplace``,
        ``rgb`` itself, changed: the replacer renders into its own copy of the frame, which
        saves copying every frame once more). ``track_id``: the face's track in a video, whose
        neutral shape is then estimated over its frames; None for a single image."""
        lm = check_inputs(rgb, landmarks)
        if not self.donor_settled:
            self._settle_donor(rgb, lm)
        geo = self.geometry(lm, track_id)
        if self.lid_bands is not None:
            geo = eyes.follow_lid_margin(geo, self.lid_bands)
        return self._render_scaled(rgb, lm, geo, inplace)

    def _render_scaled(self, rgb: np.ndarray, lm: np.ndarray, geo: np.ndarray,
                       inplace: bool) -> np.ndarray:
        iod = mesh.inter_ocular(lm)
        if iod > MAX_RENDER_IOD:
            return self._render_reduced(rgb, lm, geo, MAX_RENDER_IOD / iod, inplace)
        return self._render(rgb, lm, geo, inplace)

    def _render_reduced(self, rgb: np.ndarray, lm: np.ndarray, geo: np.ndarray, scale: float,
                        inplace: bool) -> np.ndarray:
        """Render a large face on a copy of its region reduced by ``scale``, then scale the
        result back up into the frame. Pixels the render did not change keep the frame's own
        values; the landmark hull (and the blended geometry's) is replaced completely."""
        import cv2

        iod = mesh.inter_ocular(lm)
        # Room for the feathered edge and a few reduced pixels more, so that the reduced render
        # fades out inside the region rather than at its border.
        roi = render_mesh.roi_around(np.concatenate([lm[:, :2], geo[:, :2]]), rgb.shape,
                                     self.feather * iod + 4.0 / scale)
        out = rgb if inplace else rgb.copy()
        if roi.empty:
            return out
        rows, cols = roi.shape
        size = (max(2, round(cols * scale)), max(2, round(rows * scale)))
        small = shrink(roi.of(rgb), size)
        sx, sy = size[0] / cols, size[1] / rows
        lm_small = lm.copy()
        lm_small[:, 0] = (lm[:, 0] - roi.x0 + 0.5) * sx - 0.5
        lm_small[:, 1] = (lm[:, 1] - roi.y0 + 0.5) * sy - 0.5
        lm_small[:, 2] = lm[:, 2] * sx
        geo_small = geo.copy()
        geo_small[:, 0] = (geo[:, 0] - roi.x0 + 0.5) * sx - 0.5
        geo_small[:, 1] = (geo[:, 1] - roi.y0 + 0.5) * sy - 0.5
        geo_small[:, 2] = geo[:, 2] * sx
        done = self._render(small, lm_small, geo_small, inplace=False)
        changed = np.where(np.any(done != small, axis=2), 1.0, 0.0).astype(np.float32)
        weight = cv2.resize(changed, (cols, rows), interpolation=cv2.INTER_LINEAR)
        patient = render_mesh.hull_mask(lm[:, :2] - roi.offset, roi.shape)
        hull = patient.copy()
        if self.shape > 0:
            hull |= render_mesh.hull_mask(geo[:, :2] - roi.offset, roi.shape)
        hull = self._clip_cover(hull, patient, geo[:, :2] - roi.offset, iod)
        weight[hull > 0] = 1.0
        up = cv2.resize(done, (cols, rows), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        target = roi.of(out)
        blended = cv2.blendLinear(up, target.astype(np.float32), weight, 1.0 - weight)
        target[...] = cv2.convertScaleAbs(blended)
        return out

    def _render(self, rgb: np.ndarray, lm: np.ndarray, geo: np.ndarray,
                inplace: bool) -> np.ndarray:
        iod = max(mesh.inter_ocular(lm), 4.0)
        feather = self.feather * iod
        roi = render_mesh.roi_around(np.concatenate([lm[:, :2], geo[:, :2]]), rgb.shape,
                                     feather + 2)
        out = rgb if inplace else rgb.copy()
        if roi.empty:
            return out
        # A view into ``out`` when in place: read only before `composite` writes the ROI.
        original = roi.of(rgb)
        xy = geo[:, :2] - roi.offset
        scale = min(1.0, RASTER_IOD / iod)
        maps = render_mesh.mesh_maps(xy, -geo[:, 2], self.tris, self.parts, self.uv,
                                     roi.shape, scale)
        rendered_lab = render_mesh.sample_texture(self.texture_lab, maps)
        skin = np.where(maps.part == mesh.PART_SKIN, 255, 0).astype(np.uint8)
        sigma = self.shading_sigma * iod if self.shading_sigma > 0 else None
        rendered = render_mesh.match_colour_lab(rendered_lab, original, skin, sigma,
                                                offset=self.tone, chroma=self.tone_chroma,
                                                fine=self._forehead_shading(xy, iod,
                                                                            maps.covered),
                                                chroma_floor=self.chroma_floor)
        self._paint_openings(rendered, original, maps, xy, geo, iod, skin)
        patient = render_mesh.hull_mask(lm[:, :2] - roi.offset, roi.shape)
        cover = patient.copy()
        if self.shape > 0:
            cover |= render_mesh.hull_mask(xy, roi.shape)
        cover |= maps.covered
        cover = self._clip_cover(cover, patient, xy, iod)
        render_mesh.composite(out, roi, rendered, maps.covered, cover,
                              self._feather_map(xy, iod, roi.shape, feather))
        return out

    def _forehead_shading(self, xy: np.ndarray, iod: float, covered: np.ndarray,
                          ) -> tuple[float, np.ndarray] | None:
        """FOREHEAD_SIGMA's (sigma, weight per ROI pixel): 1 above FOREHEAD_RAMP[1] IODs
        above the eye line of the rendered geometry ``xy``, 0 below FOREHEAD_RAMP[0]; and
        above the eye line (ramping in over FOREHEAD_EDGE_RAMP) within FOREHEAD_EDGE IODs of
        the edge of ``covered`` (the temples)."""
        if self.forehead_sigma <= 0:
            return None
        line = _eye_line(xy)
        if line is None:
            return None
        import cv2

        origin, down = line
        shape: tuple[int, int] = (covered.shape[0], covered.shape[1])
        low, high = FOREHEAD_RAMP
        ramp = render_mesh.feather_map(shape, origin, down, 1.0, 0.0, -low * iod, -high * iod)
        if FOREHEAD_EDGE > 0:
            inside = cv2.distanceTransform(np.where(covered > 127, 255, 0).astype(np.uint8),
                                           cv2.DIST_L2, 3)
            edge = np.clip(1.0 - inside / np.float32(FOREHEAD_EDGE * iod), 0.0, 1.0)
            low, high = FOREHEAD_EDGE_RAMP
            above = render_mesh.feather_map(shape, origin, down, 1.0, 0.0, -low * iod,
                                            -high * iod)
            ramp = np.maximum(ramp, edge * above)
        return self.forehead_sigma * iod, ramp

    def _clip_cover(self, cover: np.ndarray, patient: np.ndarray, xy: np.ndarray,
                    iod: float) -> np.ndarray:
        """``cover`` (uint8, ROI) with OUTLINE_CLIP: cut to the patient's hull mask
        ``patient`` widened by OUTLINE_CLIP IODs, below a line OUTLINE_CLIP_ABOVE IODs above the
        eye line of the rendered geometry ``xy``. The patient's hull itself is always kept."""
        if self.outline_clip is None:
            return cover
        line = _eye_line(xy)
        if line is None:
            return cover
        origin, down = line
        rows, cols = cover.shape
        if self.outline_clip > 0:
            import cv2

            outside = cv2.distanceTransform(cv2.bitwise_not(patient), cv2.DIST_L2, 3)
            allowed = outside <= self.outline_clip * iod
        else:
            allowed = patient > 0  # the distance to the hull is 0 exactly inside it
        along = ((np.arange(rows, dtype=np.float32)[:, None] - np.float32(origin[1]))
                 * np.float32(down[1])
                 + (np.arange(cols, dtype=np.float32)[None, :] - np.float32(origin[0]))
                 * np.float32(down[0]))
        allowed |= along < -self.outline_clip_above * iod
        return np.where(allowed, cover, 0).astype(np.uint8) | patient

    def _feather_map(self, xy: np.ndarray, iod: float, shape: tuple[int, int],
                     feather: float) -> float | np.ndarray:
        """The edge's fade width: ``feather`` pixels, or with OUTLINE_FEATHER one per pixel,
        narrow below the eye line of the rendered geometry ``xy`` (ROI coordinates)."""
        if self.outline_feather is None or self.outline_feather >= self.feather:
            return feather
        line = _eye_line(xy)
        if line is None:
            return feather
        origin, down = line
        below, above = self.outline_ramp
        return render_mesh.feather_map(shape, origin, down, feather,
                                       self.outline_feather * iod, -below * iod, -above * iod)

    def _paint_openings(self, rendered: np.ndarray, original: np.ndarray,
                        maps: render_mesh.MeshMaps, xy: np.ndarray, geo: np.ndarray,
                        iod: float, skin: np.ndarray) -> None:
        skin_rgb = _skin_colour(rendered, skin)
        brightness = _brightness(skin_rgb) * _tint(skin_rgb)
        lash_rgb = eyes.lash_colour(skin_rgb) if skin_rgb is not None else None
        for label, contour, iris, lids in (
                (mesh.PART_RIGHT_EYE, mesh.RIGHT_EYE, mesh.RIGHT_IRIS, mesh.APERTURES[0]),
                (mesh.PART_LEFT_EYE, mesh.LEFT_EYE, mesh.LEFT_IRIS, mesh.APERTURES[1]),
                (mesh.PART_MOUTH, mesh.INNER_LIPS, None, mesh.APERTURES[2])):
            sel = render_mesh.opening_mask(xy, contour, maps.part, label)
            if sel is None:
                continue
            keep_patient = self.mouth == "patient" if iris is None else self.eyes == "patient"
            if keep_patient:
                rendered[sel] = original[sel]
                continue
            ys, xs = sel
            pix = np.stack([xs, ys], axis=1).astype(np.float32)
            if iris is None:
                rendered[sel] = mouth.paint_mouth(pix, xy, iod, rendered[sel], brightness)
                continue
            centre = xy[iris[0]]
            radius = float(np.linalg.norm(xy[list(iris[1:])] - centre, axis=1).mean())
            rendered[sel] = eyes.paint_eye(pix, xy, lids[0], lids[1], centre, radius,
                                           self.donor.iris_rgb, rendered[sel], brightness,
                                           lash_rgb, shut=self.lid_bands is not None)


def donor_tone(seed: int, amounts: tuple[float, ...]) -> tuple[float, float, float] | None:
    """The study's skin-tone shift (CIELAB L, a, b) for donor ``seed``: uniform within
    +-``amounts``, the same for the same seed; None when every amount is 0."""
    if not any(amounts):
        return None
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x746F6E65])  # "tone"
    shift = rng.uniform(-1.0, 1.0, 3) * np.asarray(amounts, np.float64)
    return float(shift[0]), float(shift[1]), float(shift[2])


def donor_tone_locus(seed: int, amount: float) -> tuple[float, float] | None:
    """The study's move along the skin-tone locus for donor ``seed``: (L shift, chroma gain),
    the shift uniform within +-``amount`` and the gain 1 - TONE_CHROMA_PER_L x shift (a darker
    face a more saturated one); None when ``amount`` is 0."""
    if amount <= 0:
        return None
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x6C6F637573])  # "locus"
    light = float(rng.uniform(-1.0, 1.0)) * float(amount)
    return light, max(0.2, 1.0 - TONE_CHROMA_PER_L * light)


def _bounds(value: object) -> tuple[float, float] | None:
    if value is None:
        return None
    lo, hi = (float(v) for v in value)  # type: ignore[attr-defined]
    if not 0.0 < lo <= 1.0 <= hi:
        raise ValueError(f"lip thickness bounds must satisfy 0 < low <= 1 <= high, got {value}")
    return lo, hi


def check_landmarks(landmarks: np.ndarray) -> np.ndarray:
    lm = np.asarray(landmarks, np.float32)
    if lm.shape != (mesh.LANDMARK_COUNT, 3):
        raise ValueError(f"landmarks must be {mesh.LANDMARK_COUNT}x3, got {lm.shape}")
    return lm


def _skin_colour(rendered: np.ndarray, skin: np.ndarray) -> np.ndarray | None:
    """The rendered face's mean skin colour (RGB), None when no skin pixel is rendered."""
    import cv2

    if not cv2.countNonZero(skin):
        return None
    # float64, as cv2.mean gives it: the brightness below is then bit for bit what it was
    # before the lash colour needed the mean (float32 moved painted eye pixels by a level).
    return np.array(cv2.mean(rendered, mask=skin)[:3], np.float64)


# Skin colour of a face lit by white light (the donor model's mean texture over the face: the
# London studio photos it was built from), and how much of the
# frame's light colour the painted teeth, cavity and eyeballs take on. A fixed white under the
# warm light of a GRID clip read as a bluish teeth strip beside orange skin.
WHITE_LIT_SKIN = np.array([147.0, 119.0, 108.0])
TINT_STRENGTH = 0.7


def _tint(skin_rgb: np.ndarray | None) -> np.ndarray:
    """Per-channel gains (mean luminance 1) carrying the colour of the frame's light, judged
    from the rendered skin against a white-lit skin."""
    if skin_rgb is None:
        return np.ones(3)
    ratio = np.asarray(skin_rgb, np.float64) / WHITE_LIT_SKIN
    lum = 0.299 * ratio[0] + 0.587 * ratio[1] + 0.114 * ratio[2]
    if lum <= 1e-6:
        return np.ones(3)
    return np.clip(1.0 + TINT_STRENGTH * (ratio / lum - 1.0), 0.7, 1.3)


def _brightness(skin_rgb: np.ndarray | None) -> float:
    """How bright the face is lit, relative to a studio-lit face, to light the painted eyes."""
    if skin_rgb is None:
        return 1.0
    r, g, b = (float(v) for v in skin_rgb)
    return float(np.clip((0.299 * r + 0.587 * g + 0.114 * b) / 165.0, 0.25, 1.3))
