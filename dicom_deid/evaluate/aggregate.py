"""Observations of every capture -> the numbers of metrics.json (one entry per method)."""

from __future__ import annotations

import datetime as _dt
import math
from pathlib import Path
from typing import Any

import numpy as np

from dicom_deid.evaluate.appearance import flicker_ratio
from dicom_deid.evaluate.embeddings import MATCH_THRESHOLD, mean_descriptor
from dicom_deid.evaluate.expression import ExpressionScores, expression_kept, pool, video_expression
from dicom_deid.evaluate.manifest import Entry
from dicom_deid.evaluate.privacy import identify, verification_rate
from dicom_deid.evaluate.utility import (
    MIN_FACE_IOU,
    bbox_diagonal,
    eye_aspect_ratio,
    iou,
    jitter,
    keypoint_displacement,
    landmark_box,
    match_faces,
    matched,
    mouth_aspect_ratio,
    nme,
)
from dicom_deid.evaluate.video_metrics import blink_threshold, count_blinks, pearson

REQUIRED_KEYS = ("rank1", "rank5", "chance", "linkage_rank1", "verification_rate", "no_face_rate",
                 "nme_mediapipe", "nme_dlib68", "detection_retention", "leaks")
GALLERY_ROLES = ("gallery", "distractor")
# Rates averaged over the keys (every key has the same probes, so the mean is the pooled rate).
POOLED_PRIVACY = ("rank1", "rank5", "rank1_frames", "rank5_frames", "linkage_rank1",
                  "linkage_rank5", "verification_rate", "verification_rate_frames",
                  "no_face_rate", "no_face_rate_captures")
EXPRESSION_KEYS = ("cosine", "amplitude", "projection", "widening_kept", "corner_lift_kept",
                   "widening_kept_pooled", "corner_lift_kept_pooled")
# Flicker of the first frames of a clip (a renderer settling on its first frames).
FIRST_FRAMES = 10


def _num(value: float | np.floating | None, digits: int = 5) -> float | None:
    if value is None:
        return None
    value = float(value)
    return round(value, digits) if math.isfinite(value) else None


def _mean(values: list[float | None]) -> float | None:
    found = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(found)) if found else None


def _is_video(cap) -> bool:
    return len(cap.frames) > 1


def _faces(obs, scheme: str) -> list[np.ndarray]:
    return obs.meshes if scheme == "mediapipe" else obs.dlib68s


def frame_nme(o, d, scheme: str) -> tuple[float | None, int, int]:
    """(mean NME over the faces of o matched on d, faces on o, faces matched)."""
    ref, out = _faces(o, scheme), _faces(d, scheme)
    pairs = match_faces(ref, out)
    values = [nme(ref[i], out[j], scheme) for i, j in pairs]
    return (float(np.mean(values)) if values else None), len(ref), len(pairs)


def capture_nme(orig, deid, scheme: str) -> list[float | None]:
    """Per frame NME (None where no face of the original is found again on the output)."""
    by_index = {o.index: o for o in orig.frames}
    return [frame_nme(by_index[d.index], d, scheme)[0] if d.index in by_index else None
            for d in deid.frames]


def _largest_series(orig, deid, scheme: str) -> tuple[list, list]:
    """The original's largest face per frame, and the same face on the output."""
    key = "mesh" if scheme == "mediapipe" else "dlib68"
    by_index = {o.index: o for o in orig.frames}
    ref = [getattr(by_index[d.index], key) if d.index in by_index else None for d in deid.frames]
    out = [matched(r, _faces(d, scheme)) for r, d in zip(ref, deid.frames, strict=True)]
    return ref, out


def _apply(series: list, fn, scheme: str) -> list[float | None]:
    return [fn(p, scheme) if p is not None else None for p in series]


def privacy_metrics(caps: dict, originals: dict) -> dict[str, Any]:
    entries = {n: originals[n].entry for n in originals}
    gallery_o = [(entries[n].identity, mean_descriptor([f.descriptor for f in originals[n].frames]))
                 for n in originals if entries[n].role in GALLERY_ROLES]
    gallery_d = [(entries[n].identity, mean_descriptor([f.descriptor for f in caps[n].frames]))
                 for n in caps if entries[n].role in GALLERY_ROLES]
    probes = [n for n in caps if entries[n].role == "probe"]
    per_capture = [(entries[n].identity, mean_descriptor([f.descriptor for f in caps[n].frames]))
                   for n in probes]
    per_frame = [(entries[n].identity, f.descriptor)
                 for n in probes for f in caps[n].frames if f.described]
    naive = identify(gallery_o, per_capture)
    naive_frames = identify(gallery_o, per_frame)
    linkage = identify(gallery_d, per_capture)
    verification, pairs = verification_rate(gallery_o, per_capture)
    verification_frames, frame_pairs = verification_rate(gallery_o, per_frame)
    no_face_frames = [f.descriptor is None for n in probes for f in caps[n].frames if f.described]
    no_face_caps = [d is None for _, d in per_capture]
    return {
        "rank1": _num(naive.rank1), "rank5": _num(naive.rank5),
        "chance": _num(naive.chance), "chance5": _num(naive.chance5),
        "rank1_frames": _num(naive_frames.rank1), "rank5_frames": _num(naive_frames.rank5),
        "linkage_rank1": _num(linkage.rank1), "linkage_rank5": _num(linkage.rank5),
        "verification_rate": _num(verification), "verification_pairs": pairs,
        "verification_rate_frames": _num(verification_frames),
        "verification_pairs_frames": frame_pairs,
        "verification_threshold": MATCH_THRESHOLD,
        "no_face_rate": _num(np.mean(no_face_frames)) if no_face_frames else None,
        "no_face_rate_captures": _num(np.mean(no_face_caps)) if no_face_caps else None,
        "identification_probes": naive.probes,
        "identification_probe_frames": naive_frames.probes,
        "gallery_identities": naive.gallery_identities,
    }


def utility_metrics(caps: dict, originals: dict) -> dict[str, Any]:
    probes = [n for n in caps if originals[n].entry.role == "probe"]
    nme_mp: list[float | None] = []
    nme_dl: list[float | None] = []
    kept_mp = found_mp = kept_dl = found_dl = 0
    videos: list[dict[str, Any]] = []
    body: dict[str, list[tuple[float, float]]] = {
        "face": [], "body": [], "hands": [], "frames": [], "other_person": [], "compared": []}
    for n in probes:
        orig, deid = originals[n], caps[n]
        by_index = {o.index: o for o in orig.frames}
        for d in deid.frames:
            o = by_index[d.index]
            value, found, kept = frame_nme(o, d, "mediapipe")
            nme_mp.append(value)
            found_mp += found
            kept_mp += kept
            value, found, kept = frame_nme(o, d, "dlib68")
            nme_dl.append(value)
            found_dl += found
            kept_dl += kept
            _body_pairs(o, d, body)
        if _is_video(orig):
            videos.append(_video_metrics(orig, deid))
    out: dict[str, Any] = {
        "nme_mediapipe": _num(_mean(nme_mp), 4),
        "nme_dlib68": _num(_mean(nme_dl), 4),
        "nme_mediapipe_median": _num(np.median([v for v in nme_mp if v is not None]), 4)
        if any(v is not None for v in nme_mp) else None,
        "nme_dlib68_median": _num(np.median([v for v in nme_dl if v is not None]), 4)
        if any(v is not None for v in nme_dl) else None,
        "nme_frames_mediapipe": sum(v is not None for v in nme_mp),
        "nme_frames_dlib68": sum(v is not None for v in nme_dl),
        "detection_retention": _num(kept_mp / found_mp) if found_mp else None,
        "detection_retention_dlib": _num(kept_dl / found_dl) if found_dl else None,
        "face_frames_original": found_mp,
    }
    if videos:
        for key in ("ear_r", "ear_mae", "mar_r", "mar_mae", "ear_r_dlib68", "jitter_original",
                    "jitter_deidentified", "flicker_ratio", "flicker_ratio_first"):
            out[key] = _num(_mean([v[key] for v in videos]), 4)
        flickers = [v["flicker_ratio"] for v in videos if v["flicker_ratio"] is not None]
        out["flicker_ratio_worst"] = _num(max(flickers), 4) if flickers else None
        for key in ("cosine", "amplitude", "projection", "frame_r", "coordinate_r"):
            out[f"video_expression_{key}"] = _num(
                _mean([v[f"expression_{key}"] for v in videos]), 4)
        pooled_o = [e for v in videos for e in v["ear_original"]]
        pooled_d = [e for v in videos for e in v["ear_deidentified"]]
        out["ear_r_pooled"] = _num(pearson(pooled_o, pooled_d)[0], 4)
        out["blinks_original"] = sum(v["blinks_original"] for v in videos)
        out["blinks_deidentified"] = sum(v["blinks_deidentified"] for v in videos)
        out["videos"] = videos
    for group in ("face", "body", "hands"):
        pairs = body[group]
        out[f"{group}_keypoint_displacement"] = _num(_mean([p[0] for p in pairs]), 4)
        out[f"{group}_pck05"] = _num(_mean([p[1] for p in pairs]), 4)
    out["pose_frames_original"] = len(body["frames"])
    out["pose_frames_compared"] = len(body["compared"])
    out["pose_frames_other_person"] = len(body["other_person"])
    return out


def _body_pairs(o, d, body: dict[str, list[tuple[float, float]]]) -> None:
    """Pose (face points 0-10, body 11-32) and hand displacement of one frame, when the
    output's person is the original's (MediaPipe pose follows one person: in a scene with
    several, the two runs may pick different people, which is not a displacement)."""
    if o.pose is None:
        return
    body["frames"].append((1.0, 0.0))
    diag = bbox_diagonal(o.pose)
    if d.pose is None:
        return
    if iou(_visible_box(o.pose), _visible_box(d.pose)) < MIN_FACE_IOU:
        body["other_person"].append((1.0, 0.0))
        return
    body["compared"].append((1.0, 0.0))
    for group, sl in (("face", slice(0, 11)), ("body", slice(11, 33))):
        disp, pck = keypoint_displacement(o.pose[sl], d.pose[sl], diag)
        if math.isfinite(disp):
            body[group].append((disp, pck))
    for label, hand in o.hands.items():
        if label in d.hands:
            disp, pck = keypoint_displacement(hand, d.hands[label], diag)
            if math.isfinite(disp):
                body["hands"].append((disp, pck))


def _visible_box(points: np.ndarray) -> tuple[float, float, float, float]:
    pts = points[~np.isnan(points[:, :2]).any(axis=1), :2]
    if not len(pts):
        return (0.0, 0.0, 0.0, 0.0)
    return landmark_box(pts)


def _video_metrics(orig, deid) -> dict[str, Any]:
    ref_mp, out_mp = _largest_series(orig, deid, "mediapipe")
    ref_dl, out_dl = _largest_series(orig, deid, "dlib68")
    ear_o = _apply(ref_mp, eye_aspect_ratio, "mediapipe")
    ear_d = _apply(out_mp, eye_aspect_ratio, "mediapipe")
    mar_o = _apply(ref_mp, mouth_aspect_ratio, "mediapipe")
    mar_d = _apply(out_mp, mouth_aspect_ratio, "mediapipe")
    ear_r, ear_mae, n = pearson(ear_o, ear_d)
    mar_r, mar_mae, _ = pearson(mar_o, mar_d)
    ear_r_dl, _, _ = pearson(_apply(ref_dl, eye_aspect_ratio, "dlib68"),
                             _apply(out_dl, eye_aspect_ratio, "dlib68"))
    threshold = blink_threshold(ear_o)
    expr = video_expression(ref_mp, out_mp)
    flick_o = [o for o, _ in deid.flicker]
    flick_d = [d for _, d in deid.flicker]
    return {
        "file": orig.entry.name,
        "frames": len(deid.frames),
        "ear_frames": n,
        "ear_r": _num(ear_r, 4), "ear_mae": _num(ear_mae, 4),
        "mar_r": _num(mar_r, 4), "mar_mae": _num(mar_mae, 4),
        "ear_r_dlib68": _num(ear_r_dl, 4),
        "blinks_original": count_blinks(ear_o, threshold),
        "blinks_deidentified": count_blinks(ear_d, threshold),
        "jitter_original": _num(jitter(ref_mp, "mediapipe"), 4),
        "jitter_deidentified": _num(jitter(out_mp, "mediapipe"), 4),
        "expression_frames": expr.frames,
        "expression_cosine": _num(expr.cosine, 4),
        "expression_amplitude": _num(expr.amplitude, 4),
        "expression_projection": _num(expr.projection, 4),
        "expression_frame_r": _num(expr.frame_r, 4),
        "expression_coordinate_r": _num(expr.coordinate_r, 4),
        "flicker_ratio": _num(flicker_ratio(flick_o, flick_d), 4),
        "flicker_ratio_first": _num(flicker_ratio(flick_o[:FIRST_FRAMES],
                                                  flick_d[:FIRST_FRAMES]), 4),
        "ear_original": [_num(v, 4) for v in ear_o],
        "ear_deidentified": [_num(v, 4) for v in ear_d],
        "nme_mediapipe_series": [_num(v, 3) for v in capture_nme(orig, deid, "mediapipe")],
    }


def leak_metrics(caps: dict, originals: dict) -> dict[str, Any]:
    probes = [n for n in caps if originals[n].entry.role == "probe"]
    detector = sum(len(caps[n].detector_leaks) for n in probes)
    recogniser = sum(len(caps[n].recogniser_leaks) for n in probes)
    frames = {(n, i) for n in probes for i in caps[n].detector_leaks + caps[n].recogniser_leaks}
    per_file = {caps[n].entry.name: len(set(caps[n].detector_leaks + caps[n].recogniser_leaks))
                for n in probes if caps[n].detector_leaks or caps[n].recogniser_leaks}
    return {
        "leaks": len(frames),
        "leaks_recogniser": recogniser,
        "leaks_detector": detector,
        "leak_files": per_file,
        "frames_checked": sum(len(caps[n].frames) for n in probes),
    }


def noise_floor(originals: dict) -> dict[str, Any]:
    """Each landmark model against itself: original vs a JPEG re-encode, and adjacent frames."""
    probes = [c for c in originals.values() if c.entry.role == "probe"]
    jpeg_mp = [a for c in probes for a, _ in c.jpeg_floor]
    jpeg_dl = [b for c in probes for _, b in c.jpeg_floor]
    adj_mp: list[float | None] = []
    adj_dl: list[float | None] = []
    for c in probes:
        for a, b in zip(c.frames, c.frames[1:], strict=False):
            adj_mp.append(frame_nme(a, b, "mediapipe")[0])
            adj_dl.append(frame_nme(a, b, "dlib68")[0])
    return {
        "nme_mediapipe_floor_jpeg": _num(_mean(jpeg_mp), 4),
        "nme_dlib68_floor_jpeg": _num(_mean(jpeg_dl), 4),
        "nme_mediapipe_floor_adjacent": _num(_mean(adj_mp), 4),
        "nme_dlib68_floor_adjacent": _num(_mean(adj_dl), 4),
    }


def privacy_over_keys(per_key: list[dict], originals: dict) -> dict[str, Any]:
    """Privacy of key 0's layout with every rate pooled over the keys, plus the worst key."""
    values = [privacy_metrics(caps, originals) for caps in per_key]
    out = dict(values[0])
    for key in POOLED_PRIVACY:
        out[key] = _num(_mean([v[key] for v in values]))
    for key in ("rank1", "linkage_rank1", "verification_rate"):
        found = [v[key] for v in values if v[key] is not None]
        out[f"{key}_worst_key"] = _num(max(found)) if found else None
    out["keys"] = len(values)
    out["privacy_per_key"] = [{k: v[k] for k in ("rank1", "rank5", "linkage_rank1",
                                                 "linkage_rank5", "verification_rate",
                                                 "no_face_rate")} for v in values]
    return out


def leaks_over_keys(per_key: list[dict], originals: dict) -> dict[str, Any]:
    values = [leak_metrics(caps, originals) for caps in per_key]
    out: dict[str, Any] = {k: sum(v[k] for v in values) for k in (
        "leaks", "leaks_recogniser", "leaks_detector", "frames_checked")}
    files: dict[str, int] = {}
    for k, v in enumerate(values):
        for name, count in v["leak_files"].items():
            files[name if len(values) == 1 else f"key{k}:{name}"] = count
    out["leak_files"] = files
    return out


def appearance_metrics(caps: dict, originals: dict) -> dict[str, Any]:
    """Boundary contrast and skin-neck colour difference over the probes' observed frames."""
    probes = [caps[n] for n in caps if originals[n].entry.role == "probe"]
    boundary = [b for c in probes for b in c.boundary]
    skin = [d for c in probes for d in c.skin_neck]
    return {
        "boundary_contrast": _num(_mean([b[0] for b in boundary]), 4),
        "boundary_contrast_original": _num(_mean([b[1] for b in boundary]), 4),
        "boundary_frames": len(boundary),
        "skin_neck_delta_e": _num(_mean([d[0] for d in skin]), 3),
        "skin_neck_delta_e_original": _num(_mean([d[1] for d in skin]), 3),
        "skin_neck_frames": len(skin),
    }


def _still_mesh(cap, reference: np.ndarray | None) -> np.ndarray | None:
    if cap is None or not cap.frames:
        return None
    return matched(reference, cap.frames[0].meshes) if reference is not None else None


def expression_scores(method: str, runs) -> tuple[list[tuple[str, ExpressionScores]], int, int]:
    """(identity, scores) of every expression pair under every key, the pairs without
    landmarks on the output and those without landmarks on the originals."""
    keyed, neutrals, originals = runs.keyed[method], runs.neutral[method], runs.originals
    scores: list[tuple[str, ExpressionScores]] = []
    missing = missing_original = 0
    for caps, neutral in zip(keyed, neutrals, strict=True):
        for g, p in runs.pairs:
            oa, ob = originals_mesh(runs, g), originals_mesh(runs, p)
            if oa is None or ob is None:
                missing_original += 1
                continue
            na, nb = _still_mesh(neutral.get(p), oa), _still_mesh(caps.get(p), ob)
            if na is None or nb is None:
                missing += 1
                continue
            scores.append((originals[p].entry.identity, expression_kept(oa, ob, na, nb)))
    return scores, missing, missing_original


def _expression_summary(scores: list[tuple[str, ExpressionScores]]) -> dict[str, Any]:
    from dicom_deid.evaluate.run import held_out

    def rounded(d: dict) -> dict:
        return {k: (_num(v, 4) if isinstance(v, float) else v) for k, v in d.items()}

    return {"all": rounded(pool([s for _, s in scores])),
            "held_out": rounded(pool([s for i, s in scores if held_out(i)]))}


def expression_metrics(method: str, runs) -> dict[str, Any]:
    """Expression kept between the two still captures of each person (London neutral and
    smiling), each output pair rendered under one study (one donor), over every key; summaries
    over all identities and over the held-out ones (odd London ids)."""
    if not runs.pairs:
        return {}
    scores, missing, missing_original = expression_scores(method, runs)
    summary = _expression_summary(scores)
    out: dict[str, Any] = {
        "expression": {"pairs": len(runs.pairs), "keys": len(runs.keyed[method]),
                       "compared": len(scores), "no_landmarks_output": missing,
                       "no_landmarks_original": missing_original, **summary},
    }
    for key in EXPRESSION_KEYS:
        out[f"expression_{key}"] = summary["all"][key]
        out[f"expression_{key}_held_out"] = summary["held_out"][key]
    if method == "original" and runs.jitter_control:
        control = []
        for g, p in runs.pairs:
            oa = originals_mesh(runs, g)
            ob = originals_mesh(runs, p)
            jit = runs.jitter_control.get(p)
            if oa is not None and ob is not None and jit is not None:
                control.append((runs.originals[p].entry.identity,
                                expression_kept(oa, ob, oa, jit)))
        out["expression_control_jittered_neutral"] = _expression_summary(control)
    return out


def originals_mesh(runs, n: int) -> np.ndarray | None:
    cap = runs.originals[n]
    return cap.frames[0].mesh if cap.frames else None


def method_metrics(method: str, runs) -> dict[str, Any]:
    base: dict[str, Any] = {"method": method}
    originals = runs.originals
    floor = noise_floor(originals)
    per_key = runs.keyed.get(method, "not run")
    if isinstance(per_key, str):
        base.update({k: None for k in REQUIRED_KEYS})
        base.update(available=False, error=per_key, **floor)
        return base
    caps = per_key[0]
    base["available"] = True
    base.update(privacy_over_keys(per_key, originals))
    base.update(utility_metrics(caps, originals))
    base.update(leaks_over_keys(per_key, originals))
    base.update(appearance_metrics(caps, originals))
    base.update(expression_metrics(method, runs))
    base.update(floor)
    reports = [c.faces_report for caps_k in per_key for c in caps_k.values() if c.faces_report]
    if reports:
        base["replacer"] = {k: sum(r[k] for r in reports) for k in reports[0]}
    return base


def run_summary(manifest: Path, entries: list[Entry], settings, originals: dict,
                original_metrics: dict[str, Any]) -> dict[str, Any]:
    """Run-level facts for run.json and the report (file names and counts only, no PHI)."""
    roles = {r: sum(e.role == r for e in entries) for r in ("gallery", "probe", "distractor")}
    return {
        "created": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "manifest": manifest.name,
        "entries": len(entries),
        "roles": roles,
        "identities": len({e.identity for e in entries}),
        "kinds": {k: sum(e.kind == k for e in entries) for k in ("image", "video", "dicom")},
        "frames_observed_original": sum(len(c.frames) for c in originals.values()),
        "settings": {
            "methods": settings.methods, "max_frames": settings.max_frames,
            "descriptor_step": settings.descriptor_step, "shape": settings.shape,
            "body": settings.body, "jpeg_quality": settings.jpeg_quality,
            "keys": settings.keys,
        },
        "noise_floor": noise_floor(originals),
        "dlib_faces_on_originals": original_metrics.get("no_face_rate"),
    }
