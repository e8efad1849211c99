"""`evaluate()`: every capture of a manifest through every method, observed by the
independent models, then aggregated into metrics.json and report.html.

Frames are streamed: the originals are decoded once to observe them, then once more per method
to de-identify and observe the output beside the original frame; only observations (landmarks,
descriptors, boxes) and a few small crops stay in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dicom_deid import face_methods
from dicom_deid.atomic import write_atomic
from dicom_deid.evaluate.manifest import Entry, open_source, read_manifest
from dicom_deid.evaluate.observer import FrameObs, Models, Observer
from dicom_deid.evaluate.privacy import matches
from dicom_deid.evaluate.utility import matched, nme
from dicom_deid.face_methods import MethodUnavailableError

log = logging.getLogger(__name__)

# Beside the face methods (face_methods): the unchanged input, and the manifest's own
# de-identified column.
ORIGINAL = "original"
DEIDENTIFIED = "deidentified"
# A CenterFace box on the output whose pixels differ from the original by less than this mean
# absolute difference (8-bit levels, all channels) was not replaced: a leak. Compression of an
# already de-identified output stays well under it; every replacement method is far above it.
UNCHANGED_MEAN_DIFF = 4.0
CROP_SIDE = 112


@dataclass
class Settings:
    methods: list[str]
    max_frames: int | None = 75
    descriptor_step: int = 5
    shape: float = 0.0
    body: bool = False
    crops: int = 6
    jpeg_quality: int = 90
    progress: bool = True
    keys: int = 3


@dataclass
class Capture:
    entry: Entry
    method: str
    fps: float = 25.0
    frames: list[FrameObs] = field(default_factory=list)
    detector_leaks: list[int] = field(default_factory=list)     # frame indices
    recogniser_leaks: list[int] = field(default_factory=list)
    faces_report: dict[str, Any] | None = None
    crop: tuple[np.ndarray, np.ndarray] | None = None
    # JPEG noise floor on the original (probes only): (NME MediaPipe, NME dlib-68) per frame.
    jpeg_floor: list[tuple[float | None, float | None]] = field(default_factory=list)
    # Appearance (probes): per described frame with a face on the original, boundary contrast
    # (output ratio, original ratio) and skin-neck colour difference (output, original).
    boundary: list[tuple[float, float]] = field(default_factory=list)
    skin_neck: list[tuple[float, float]] = field(default_factory=list)
    # Frame-to-frame change inside the original's face box: (original, output) per frame pair.
    flicker: list[tuple[float | None, float | None]] = field(default_factory=list)


def methods() -> tuple[str, ...]:
    """What `--methods` may name: the original, every face method, the manifest's column."""
    return (ORIGINAL, *face_methods.names(), DEIDENTIFIED)


def _progress(iterable, settings: Settings, **kwargs):
    from tqdm import tqdm

    return tqdm(iterable, disable=not settings.progress or None, leave=False, **kwargs)


def evaluation_key(index: int):
    """The index-th evaluation site key: fixed, public secrets (the measure must be
    reproducible; no real site key is read)."""
    from dicom_deid.header.keys import SiteKey

    return SiteKey(hashlib.sha256(f"dicom-deid evaluate key {index}".encode()).digest())


def study_of(entry: Entry) -> str:
    """The study a capture stands for, from which its donor derives as the node derives one
    from the original StudyInstanceUID. Each capture is its own study here, so two captures
    of one person get unrelated donors, which the linkage attack then tests; the expression
    pairs reuse the probe's study for its neutral capture (one study, one donor)."""
    return entry.path.as_posix()


def make_replacer(method: str, settings: Settings, fps: float, key_index: int, study: str):
    """The capture's face stage, made as the node makes it: by the library's Deidentifier for
    the study, under the key_index-th evaluation key. MethodUnavailableError (face_methods)
    propagates: _run_method records it."""
    from dicom_deid.deidentifier import Deidentifier

    deid = Deidentifier(key=evaluation_key(key_index), faces=method, face_shape=settings.shape)
    return deid.face_replacer(study, fps)


def _face_box(obs: FrameObs) -> tuple[float, float, float, float] | None:
    if obs.mesh is not None:
        x0, y0 = obs.mesh[:, :2].min(axis=0)
        x1, y1 = obs.mesh[:, :2].max(axis=0)
        return float(x0), float(y0), float(x1), float(y1)
    if obs.dlib_box is not None:
        x0, y0, x1, y1 = (float(v) for v in obs.dlib_box)
        return x0, y0, x1, y1
    return None


def face_crop(rgb: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    import cv2

    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = 0.7 * max(x1 - x0, y1 - y0)
    h, w = rgb.shape[:2]
    a0, b0 = int(max(0, cx - half)), int(max(0, cy - half))
    a1, b1 = int(min(w, cx + half)), int(min(h, cy + half))
    return cv2.resize(rgb[b0:b1, a0:a1], (CROP_SIDE, CROP_SIDE), interpolation=cv2.INTER_AREA)


def unreplaced(original: np.ndarray, output: np.ndarray,
               box: tuple[float, float, float, float]) -> bool:
    h, w = original.shape[:2]
    x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
    x1, y1 = min(w, int(np.ceil(box[2]))), min(h, int(np.ceil(box[3])))
    if x1 <= x0 or y1 <= y0:
        return False
    diff = np.abs(original[y0:y1, x0:x1].astype(np.int16) - output[y0:y1, x0:x1].astype(np.int16))
    return float(diff.mean()) < UNCHANGED_MEAN_DIFF


def _jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    import cv2

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _given_outputs(entry: Entry, frames: Iterable[np.ndarray],
                   deid_frames: Iterator[np.ndarray] | None,
                   ) -> Generator[tuple[np.ndarray, np.ndarray], None, None]:
    """(original, output) pairs: the site's de-identified frames, or the original itself."""
    for frame in frames:
        if deid_frames is None:
            yield frame, frame
            continue
        out = next(deid_frames, None)
        if out is None:
            raise ValueError(f"{entry.deidentified}: fewer frames than {entry.path.name}")
        if out.shape != frame.shape:
            raise ValueError(f"{entry.deidentified}: frame size {out.shape[:2]} differs "
                             f"from {entry.path.name} {frame.shape[:2]}")
        yield frame, out


def _appearance(cap: Capture, frame: np.ndarray, out: np.ndarray, ref: FrameObs) -> None:
    from dicom_deid.evaluate.appearance import boundary_contrast, skin_neck_delta_e, skin_regions

    contrast = boundary_contrast(frame, out)
    if contrast is not None:
        cap.boundary.append((contrast.ratio, contrast.ratio_original))
    if ref.mesh is not None:
        regions = skin_regions(frame.shape, ref.mesh)
        if regions is not None:
            cap.skin_neck.append((skin_neck_delta_e(out, regions),
                                  skin_neck_delta_e(frame, regions)))


def run_capture(entry: Entry, method: str, settings: Settings, models: Models,
                observer: Observer, noise: Observer | None,
                original: Capture | None, want_crop: bool, *, key_index: int = 0,
                study: str | None = None, landmarks: bool = False) -> Capture:
    """One capture through one method (original: untouched), observed frame by frame.
    key_index, study: the evaluation key and the study (default: the capture's own) the
    donor of keyed methods derives from; landmarks: observe a gallery capture like a probe
    (the neutral capture of an expression pair)."""
    from dicom_deid.evaluate.appearance import box_change

    src = open_source(entry.path, settings.max_frames)
    cap = Capture(entry, method, fps=src.fps)
    probe = entry.role == "probe" or landmarks
    replacer = None
    deid_frames = None
    if method == "deidentified":
        if entry.deidentified is None:
            if probe:
                raise ValueError(f"{entry.path.name} (row {entry.row}): method deidentified "
                                 "needs a deidentified path for every probe")
        else:
            deid_frames = open_source(entry.deidentified, settings.max_frames).frames
    elif method != "original":
        replacer = make_replacer(method, settings, src.fps, key_index,
                                 study if study is not None else study_of(entry))
    by_index = {o.index: o for o in original.frames} if original is not None else {}
    observer.start()
    pairs = None
    previous: tuple[np.ndarray, np.ndarray] | None = None
    try:
        # The product's own streaming path (tracking the next frame while this one is checked),
        # so that what is measured is what the video layer writes.
        pairs = (((frame, out) for frame, out, _ in replacer.stream(src.frames))
                 if replacer is not None else _given_outputs(entry, src.frames, deid_frames))
        for i, (frame, out) in enumerate(pairs):
            described = i % settings.descriptor_step == 0
            if not probe:
                if described:
                    cap.frames.append(observer.observe(out, i, descriptor=True, landmarks=False))
                continue
            obs = observer.observe(out, i, descriptor=described, landmarks=True, centerface=True)
            cap.frames.append(obs)
            if any(unreplaced(frame, out, box) for box in obs.centerface):
                cap.detector_leaks.append(i)
            ref = by_index.get(i, obs)
            if described and matches(obs.descriptor, ref.descriptor):
                cap.recogniser_leaks.append(i)
            box = _face_box(ref)
            if want_crop and cap.crop is None and box is not None:
                cap.crop = (face_crop(frame, box), face_crop(out, box))
            if described and entry.role == "probe":
                _appearance(cap, frame, out, ref)
            if previous is not None and box is not None:
                cap.flicker.append((box_change(previous[0], frame, box),
                                    box_change(previous[1], out, box)))
            previous = (frame, out)
            if noise is not None and described:
                jo = noise.observe(_jpeg(frame, settings.jpeg_quality), i, descriptor=False)
                jm, jd = matched(obs.mesh, jo.meshes), matched(obs.dlib68, jo.dlib68s)
                cap.jpeg_floor.append((
                    nme(obs.mesh, jm, "mediapipe")
                    if jm is not None and obs.mesh is not None else None,
                    nme(obs.dlib68, jd, "dlib68")
                    if jd is not None and obs.dlib68 is not None else None,
                ))
    finally:
        if pairs is not None:
            pairs.close()
        if replacer is not None:
            report = replacer.close()
            cap.faces_report = {k: getattr(report, k) for k in (
                "frames", "faces", "fallback_frames", "leaks", "leak_frames", "renderer_failures")}
    return cap


def expression_pairs(entries: list[Entry]) -> list[tuple[int, int]]:
    """(gallery index, probe index) of one person's two still captures: a probe image whose
    identity has exactly one gallery image (London: neutral gallery, smiling probe)."""
    galleries: dict[str, list[int]] = {}
    for n, e in enumerate(entries):
        if e.role == "gallery" and e.kind == "image":
            galleries.setdefault(e.identity, []).append(n)
    return [(galleries[e.identity][0], n) for n, e in enumerate(entries)
            if e.role == "probe" and e.kind == "image" and len(galleries.get(e.identity, [])) == 1]


def held_out(identity: str) -> bool:
    """Identities the swap expression model does not learn from: odd-numbered London ids (it
    trains on the even ones). Identities without a number are not counted as held out."""
    m = re.search(r"(\d+)$", identity)
    return m is not None and int(m.group(1)) % 2 == 1


def _jittered(rgb: np.ndarray, n: int) -> np.ndarray:
    """A copy of the photo moved by a small similarity (about 2 px, 1 degree, 1 %): the
    control for how much expression landmark noise alone reads between two captures."""
    import cv2

    rng = np.random.default_rng(n)
    h, w = rgb.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(-1, 1)),
                                float(1 + rng.uniform(-0.01, 0.01)))
    m[:, 2] += rng.uniform(-2, 2, size=2)
    return cv2.warpAffine(rgb, m, (w, h), borderMode=cv2.BORDER_REFLECT)


@dataclass
class Runs:
    """Everything observed: per method the captures of each key (key 0 first; unkeyed methods
    have one), the neutral capture of each expression pair under the probe's study, and the
    controls."""

    originals: dict[int, Capture]
    pairs: list[tuple[int, int]]
    keyed: dict[str, list[dict[int, Capture]] | str] = field(default_factory=dict)
    neutral: dict[str, list[dict[int, Capture]]] = field(default_factory=dict)
    jitter_control: dict[int, np.ndarray | None] = field(default_factory=dict)  # probe -> mesh

    def first(self, method: str) -> dict[int, Capture] | str:
        runs = self.keyed.get(method, "not run")
        return runs if isinstance(runs, str) else runs[0]


def _run_method(method: str, entries: list[Entry], settings: Settings, models: Models,
                runs: Runs) -> None:
    observer = Observer(models)
    started = time.monotonic()
    paired_gallery = {g: p for g, p in runs.pairs}
    keyed = method in face_methods.keyed()
    key_count = max(1, settings.keys) if keyed else 1
    per_key: list[dict[int, Capture]] = []
    neutrals: list[dict[int, Capture]] = []
    try:
        for k in range(key_count):
            done: dict[int, Capture] = {}
            desc = f"{method} key {k}" if key_count > 1 else method
            for n, entry in enumerate(_progress(entries, settings, desc=desc)):
                want = k == 0 and runs.originals[n].crop is not None
                done[n] = run_capture(entry, method, settings, models, observer, None,
                                      runs.originals[n], want, key_index=k,
                                      landmarks=n in paired_gallery)
            neutral: dict[int, Capture] = {}
            for g, p in runs.pairs:
                if keyed:
                    # One study, one donor: the neutral capture rendered under the probe's study.
                    neutral[p] = run_capture(entries[g], method, settings, models, observer,
                                             None, runs.originals[g], False,
                                             key_index=k, study=study_of(entries[p]),
                                             landmarks=True)
                else:
                    neutral[p] = done[g]
            per_key.append(done)
            neutrals.append(neutral)
        runs.keyed[method] = per_key
        runs.neutral[method] = neutrals
        log.info("method %s: %d captures x %d key(s) in %.0f s", method, len(entries),
                 key_count, time.monotonic() - started)
    except MethodUnavailableError as exc:
        log.warning("method %s is unavailable: %s", method, exc)
        runs.keyed[method] = str(exc)
    finally:
        observer.close()


def evaluate(manifest: str | Path, output: str | Path, settings: Settings) -> dict[str, Any]:
    """Run the evaluation; writes output/metrics.json, output/run.json, output/report.html."""
    from dicom_deid.evaluate.aggregate import method_metrics, run_summary
    from dicom_deid.evaluate.report import write_report

    manifest = Path(manifest)
    entries = read_manifest(manifest)
    known = methods()
    unknown = [m for m in settings.methods if m not in known]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; expected some of "
                         f"{', '.join(known)}")
    if "deidentified" in settings.methods and not any(e.deidentified for e in entries):
        raise ValueError(f"{manifest}: method deidentified needs a deidentified column")
    if settings.keys < 1:
        raise ValueError("keys must be at least 1")
    out_dir = Path(output)
    out_dir.mkdir(parents=True, exist_ok=True)
    models = Models(body=settings.body)
    pairs = expression_pairs(entries)
    paired_gallery = {g for g, _ in pairs}
    originals: dict[int, Capture] = {}
    crops_left = settings.crops
    try:
        orig_obs, noise_obs = Observer(models), Observer(models)
        started = time.monotonic()
        for n, entry in enumerate(_progress(entries, settings, desc="original")):
            want = entry.role == "probe" and crops_left > 0
            crops_left -= int(want)
            originals[n] = run_capture(entry, "original", settings, models, orig_obs,
                                       noise_obs if entry.role == "probe" else None, None, want,
                                       landmarks=n in paired_gallery)
        runs = Runs(originals, pairs)
        runs.keyed["original"] = [originals]
        runs.neutral["original"] = [{p: originals[g] for g, p in pairs}]
        for g, p in pairs:
            frame = next(open_source(entries[g].path, 1).frames)
            runs.jitter_control[p] = orig_obs.observe(_jittered(frame, p), 0, descriptor=False,
                                                      landmarks=True).mesh
        log.info("originals: %d captures in %.0f s", len(originals), time.monotonic() - started)
        for method in settings.methods:
            if method != "original":
                _run_method(method, entries, settings, models, runs)
        metrics = {m: method_metrics(m, runs) for m in settings.methods}
        metrics_original = (metrics["original"] if "original" in settings.methods
                            else method_metrics("original", runs))
        summary = run_summary(manifest, entries, settings, originals, metrics_original)
        orig_obs.close()
        noise_obs.close()
    finally:
        models.close()
    _atomic_json(out_dir / "metrics.json", metrics)
    _atomic_json(out_dir / "run.json", summary)
    captures = {m: runs.first(m) for m in ("original", *settings.methods)}
    write_report(out_dir / "report.html", metrics, summary, captures, originals)
    return metrics


def _atomic_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n"
    write_atomic(text, path, durable=False)
