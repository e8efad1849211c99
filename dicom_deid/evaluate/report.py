"""report.html: the numbers of metrics.json as a table and plots people can read.

Plots are matplotlib figures embedded as base64 PNG, so the report is one self-contained file.
The before/after crops come from the evaluated data, made at run time: the report then embeds
the ORIGINAL FACES of the data (PHI when the data is patients'), says so at its top, and must be
kept with the data it was made from (under its licence), never committed or published with
private data. `--crops 0` makes a report without any picture of the data.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from dicom_deid.atomic import write_atomic

ATTRIBUTION = (
    "Face Research Lab London Set: DeBruine, L. &amp; Jones, B. (2017), figshare "
    "doi:10.6084/m9.figshare.5047666.v5, CC BY 4.0 (images downscaled 0.5x, EXIF removed). "
    "GRID audio-visual speech corpus: Cooke, Barker, Cunningham &amp; Shao (2006), CC BY 4.0. "
    "Tears of Steel: (c) 2012 Blender Foundation, mango.blender.org, CC BY 3.0 (10 s excerpt). "
    "COCO val2017 image 785: Flickr photo 6795644157, CC BY 2.0; annotations COCO, CC BY 4.0. "
    "Astronaut (tests): NASA, public domain, via scikit-image."
)
TABLE_KEYS = (
    ("rank1", "rank-1", "pct"), ("rank5", "rank-5", "pct"), ("chance", "chance", "pct"),
    ("linkage_rank1", "linkage rank-1", "pct"), ("verification_rate", "verified @0.6", "pct"),
    ("no_face_rate", "no face (dlib)", "pct"), ("nme_mediapipe", "NME MediaPipe %", "num"),
    ("nme_dlib68", "NME dlib-68 %", "num"), ("detection_retention", "retention", "pct"),
    ("ear_r", "EAR r", "num"), ("mar_r", "MAR r", "num"), ("jitter_deidentified", "jitter %", "num"),
    ("body_pck05", "body PCK@.05", "pct"), ("leaks", "leak frames", "int"),
)
PRIVACY_KEYS = (
    ("keys", "keys", "int"), ("rank1", "rank-1 pooled", "pct"),
    ("rank1_worst_key", "rank-1 worst key", "pct"), ("chance", "chance", "pct"),
    ("linkage_rank1", "linkage pooled", "pct"),
    ("linkage_rank1_worst_key", "linkage worst key", "pct"),
    ("verification_rate", "verified pooled", "pct"),
    ("verification_rate_worst_key", "verified worst key", "pct"),
)
EXPRESSION_TABLE = (
    ("expression_cosine", "cosine", "num"), ("expression_projection", "projection", "num"),
    ("expression_amplitude", "amplitude", "num"),
    ("expression_widening_kept", "widening kept", "pct"),
    ("expression_corner_lift_kept", "corner lift kept", "pct"),
    ("expression_cosine_held_out", "cosine held-out", "num"),
    ("expression_projection_held_out", "projection held-out", "num"),
    ("expression_widening_kept_held_out", "widening held-out", "pct"),
    ("expression_corner_lift_kept_held_out", "corner lift held-out", "pct"),
    ("video_expression_cosine", "video cosine", "num"),
    ("video_expression_frame_r", "video frame r", "num"),
)
APPEARANCE_TABLE = (
    ("boundary_contrast", "boundary contrast", "num"),
    ("boundary_contrast_original", "same bands, original", "num"),
    ("skin_neck_delta_e", "skin-neck ΔE00", "num"),
    ("skin_neck_delta_e_original", "skin-neck ΔE00, original", "num"),
    ("flicker_ratio", "flicker ratio", "num"), ("flicker_ratio_worst", "flicker worst clip", "num"),
    ("flicker_ratio_first", "flicker first frames", "num"),
)
PHI_WARNING = (
    "<p style='border:2px solid #b00;padding:8px;background:#fee'><b>This report embeds "
    "original faces</b> from the evaluated data (the before/after crops below). If the data is "
    "patients', this file is PHI: keep it with the data, never commit, publish or send it. "
    "Re-run with <code>--crops 0</code> for a report without pictures.</p>")


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "–"
    if kind == "pct":
        return f"{100.0 * value:.1f}%"
    if kind == "int":
        return str(int(value))
    return f"{value:.3f}" if isinstance(value, float) else html.escape(str(value))


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _scatter(metrics: dict[str, dict[str, Any]]) -> str | None:
    import matplotlib.pyplot as plt

    points = [(m, v.get("rank1"), v.get("nme_mediapipe"), v.get("nme_dlib68"))
              for m, v in metrics.items() if v.get("available")]
    points = [p for p in points if p[1] is not None]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(6, 4.2))
    known = [v for p in points for v in p[2:] if v is not None]
    # A method after which no landmarks are found at all is drawn at the right edge.
    edge = (max(known) if known else 10.0) * 1.15 + 1.0
    for k, (name, rank1, nme_mp, nme_dl) in enumerate(points):
        colour = f"C{k % 10}"
        for nme, marker in ((nme_mp, "o"), (nme_dl, "s")):
            x = edge if nme is None else nme
            ax.scatter(x, 100 * rank1, marker=marker, color=colour,  # type: ignore[operator]
                       facecolors="none" if nme is None else colour)
        x = edge if nme_mp is None else nme_mp
        ax.annotate(name if nme_mp is not None else f"{name} (no landmarks)",
                    (x, 100 * rank1), fontsize=8, xytext=(4, 3), textcoords="offset points",  # type: ignore[operator]
                    color=colour)
    chance = next((v.get("chance") for v in metrics.values() if v.get("chance")), None)
    if chance:
        ax.axhline(100 * chance, linestyle=":", color="grey", label="chance")
    ax.set_xlabel("landmark NME, % inter-ocular (o MediaPipe, s dlib-68); lower = more utility")
    ax.set_ylabel("rank-1 re-identification %; lower = more privacy")
    ax.set_title("privacy vs utility per method")
    return _png(fig)


def _nme_over_time(metrics: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    import matplotlib.pyplot as plt

    files: dict[str, dict[str, list]] = {}
    for method, values in metrics.items():
        for video in values.get("videos", []) or []:
            files.setdefault(video["file"], {})[method] = video["nme_mediapipe_series"]
    plots = []
    for name, series in list(files.items())[:8]:
        fig, ax = plt.subplots(figsize=(6, 2.4))
        for method, values in series.items():  # type: ignore[assignment]
            y = np.array([np.nan if v is None else v for v in values], dtype=float)
            ax.plot(np.arange(len(y)), y, label=method, linewidth=1)
        ax.set_xlabel("frame")
        ax.set_ylabel("NME MediaPipe %")
        ax.legend(fontsize=7, ncol=3)
        ax.set_title(name, fontsize=9)
        plots.append((name, _png(fig)))
    return plots


def _crop_grid(captures: dict, originals: dict) -> str | None:
    import matplotlib.pyplot as plt

    methods = [m for m, c in captures.items() if isinstance(c, dict) and m != "original"]
    rows = [n for n, c in originals.items() if c.crop is not None]
    if not rows or not methods:
        return None
    fig, axes = plt.subplots(len(rows), len(methods) + 1,
                             figsize=(1.4 * (len(methods) + 1), 1.5 * len(rows)), squeeze=False)
    for r, n in enumerate(rows):
        axes[r][0].imshow(originals[n].crop[0])
        axes[r][0].set_title("original" if r == 0 else "", fontsize=8)
        for c, method in enumerate(methods, start=1):
            cap = captures[method].get(n)
            if cap is not None and cap.crop is not None:
                axes[r][c].imshow(cap.crop[1])
            axes[r][c].set_title(method if r == 0 else "", fontsize=8)
    for ax in np.ravel(axes):
        ax.axis("off")
    return _png(fig)


def _table(metrics: dict[str, dict[str, Any]], keys: tuple) -> str:
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label, _ in keys)
    rows = []
    for method, values in metrics.items():
        if not values.get("available"):
            continue
        cells = "".join(f"<td>{_fmt(values.get(k), kind)}</td>" for k, _, kind in keys)
        rows.append(f"<tr><td>{html.escape(method)}</td>{cells}</tr>")
    return f"<table><tr><th>method</th>{head}</tr>{''.join(rows)}</table>"


def _control(metrics: dict[str, dict[str, Any]]) -> str:
    control = (metrics.get("original") or {}).get("expression_control_jittered_neutral")
    if not control:
        return ""
    c = control["all"]
    return ("<p>Control (landmark noise): a jittered copy of each neutral photo in place of the "
            f"smiling output gives cosine {_fmt(c.get('cosine'), 'num')}, projection "
            f"{_fmt(c.get('projection'), 'num')} over {c.get('n')} pairs; a method at this level "
            "keeps no expression.</p>")


def render(metrics: dict[str, dict[str, Any]], summary: dict[str, Any], captures: dict,
           originals: dict, *, crops: bool = True) -> str:
    import matplotlib

    matplotlib.use("Agg")
    grid = _crop_grid(captures, originals) if crops else None
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label, _ in TABLE_KEYS)
    rows = []
    for method, values in metrics.items():
        if not values.get("available"):
            rows.append(f"<tr><td>{html.escape(method)}</td><td colspan='{len(TABLE_KEYS)}'>"
                        f"unavailable: {html.escape(str(values.get('error')))}</td></tr>")
            continue
        cells = "".join(f"<td>{_fmt(values.get(k), kind)}</td>" for k, _, kind in TABLE_KEYS)
        rows.append(f"<tr><td>{html.escape(method)}</td>{cells}</tr>")
    floor = summary.get("noise_floor", {})
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>dicom-deid evaluation</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:"
        "collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
        "td:first-child{text-align:left}</style></head><body>",
        "<h1>dicom-deid evaluation</h1>",
        PHI_WARNING if grid else "",
        f"<p>Manifest <code>{html.escape(summary.get('manifest', ''))}</code>, "
        f"{summary.get('entries')} captures ({html.escape(str(summary.get('roles')))}), "
        f"{summary.get('identities')} identities, created {summary.get('created')}. "
        f"Settings: <code>{html.escape(str(summary.get('settings')))}</code>.</p>",
        "<p>Privacy: dlib ResNet descriptors; naive attack = de-identified probes against the "
        "original gallery (with distractors); linkage = de-identified probes against the "
        "de-identified gallery; verification = genuine (gallery original, de-identified probe) "
        "pairs under distance 0.6. No face found counts as not identified. Utility: NME in % of "
        "the inter-ocular distance of the original; retention = MediaPipe face mesh found on the "
        "output where it was found on the original.</p>",
        f"<table><tr><th>method</th>{head}</tr>{''.join(rows)}</table>",
        "<p>Landmark noise floors (each model against itself): "
        + ", ".join(f"{html.escape(k)} = {_fmt(v, 'num')}" for k, v in floor.items()) + "</p>",
        "<h2>Privacy over site keys</h2><p>Swap and mask3d choose the donor of a study from the "
        "site key; they run once per evaluation key (fixed public test keys). Rates pooled over "
        "the keys and the worst key; chance = 1 / gallery identities.</p>",
        _table(metrics, PRIVACY_KEYS),
        "<h2>Expression</h2><p>Displacement of the lips, mouth corners, brows and eyelids between "
        "a person's two captures (neutral and smiling; both outputs rendered under one study, "
        "so with one donor), after a similarity alignment on the eye corners and nose bridge, "
        "in inter-ocular units: cosine (direction kept; 0 erased, 1 kept), projection on the "
        "original's displacement, amplitude |output|/|original|. Widening and corner lift kept: "
        "change of mouth width and of mouth-corner elevation (against the eyes and nose) in the "
        "output over the original's. Held-out: odd-numbered identities (the swap expression "
        "model learns from the even ones). Video: each frame against the clip's own median "
        "neutral; frame r = correlation of the per-frame displacement magnitude.</p>",
        _table(metrics, EXPRESSION_TABLE), _control(metrics),
        "<h2>Appearance</h2><p>Boundary contrast: mean gradient on the border of the replaced "
        "region (where the output differs from the original) over the mean just inside and "
        "outside it (1 = no seam; the original's value on the same bands beside it). Skin-neck: "
        "CIEDE2000 between cheek/forehead patches and a box under the chin. Flicker: mean "
        "frame-to-frame change inside the face box, output over original (target &le; 1.5); "
        "first frames = the first 10 frame pairs.</p>",
        _table(metrics, APPEARANCE_TABLE),
    ]
    scatter = _scatter(metrics)
    if scatter:
        parts.append(f"<h2>Privacy vs utility</h2><img src='{scatter}'>")
    series = _nme_over_time(metrics)
    if series:
        parts.append("<h2>NME over time (videos)</h2>")
        parts += [f"<img src='{png}' alt='{html.escape(name)}'>" for name, png in series]
    if grid:
        parts.append("<h2>Before / after (probe crops, every method; original faces: PHI)</h2>"
                     f"<img src='{grid}'>")
    parts.append(f"<h2>Data and attribution</h2><p>{ATTRIBUTION}</p></body></html>")
    return "\n".join(parts)


def write_report(path: Path, metrics: dict[str, dict[str, Any]], summary: dict[str, Any],
                 captures: dict, originals: dict, *, crops: bool = True) -> None:
    text = render(metrics, summary, captures, originals, crops=crops)
    # Not public: the report may embed original faces.
    write_atomic(text, path, durable=False)
