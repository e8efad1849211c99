"""`evaluate()`: every capture of a manifest through every method, observed by the
independent models, then aggregated into metrics.json and report.html.

Frames are streamed: the originals are decoded once to observe them, then once more per method
to de-identify and observe the output beside the original frame; only observations (landmarks,
descriptors, boxes) and a few small crops stay in memory.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import zlib
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dicom_deid.evaluate.manifest import Entry, open_source, read_manifest
from dicom_deid.evaluate.observer import FrameObs, Models, Observer
from dicom_deid.evaluate.privacy import matches
from dicom_deid.evaluate.utility import matched, nme

log = logging.getLogger(__name__)

BUILTIN_METHODS = ("original", "swap", "mask3d", "blur", "pixelate", "blackout")
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


class MethodUnavailable(Exception):
    pass


def _progress(iterable, settings: Settings, **kwargs):
    from tqdm import tqdm

    return tqdm(iterable, disable=not settings.progress or None, leave=False, **kwargs)


def donor_seed(entry: Entry) -> int:
    # One donor per capture, as the node chooses one per study: two captures of one person
    # get different donors, which the linkage attack then tests.
    return zlib.crc32(str(entry.path).encode("utf-8"))


def make_replacer(method: str, settings: Settings, entry: Entry, fps: float):
    from dicom_deid.faces import FaceReplacer, MethodUnavailableError

    try:
        return FaceReplacer(method=method, shape=settings.shape, donor_seed=donor_seed(entry),
                            fps=fps)
    except (MethodUnavailableError, ImportError, FileNotFoundError, NotImplementedError) as exc:
        raise MethodUnavailable(f"{type(exc).__name__}: {exc}") from exc


def _face_box(obs: FrameObs) -> tuple[float, float, float, float] | None:
    if obs.mesh is not None:
        x0, y0 = obs.mesh[:, :2].min(axis=0)
        x1, y1 = obs.mesh[:, :2].max(axis=0)
        return float(x0), float(y0), float(x1), float(y1)
    if obs.dlib_box is not None:
        return tuple(float(v) for v in obs.dlib_box)
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


def run_capture(entry: Entry, method: str, settings: Settings, models: Models,
                observer: Observer, noise: Observer | None,
                original: Capture | None, want_crop: bool) -> Capture:
    """One capture through one method (original: untouched), observed frame by frame."""
    src = open_source(entry.path, settings.max_frames)
    cap = Capture(entry, method, fps=src.fps)
    probe = entry.role == "probe"
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
        replacer = make_replacer(method, settings, entry, src.fps)
    by_index = {o.index: o for o in original.frames} if original is not None else {}
    observer.start()
    pairs = None
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
            if want_crop and cap.crop is None:
                box = _face_box(ref)
                if box is not None:
                    cap.crop = (face_crop(frame, box), face_crop(out, box))
            if noise is not None and described:
                jo = noise.observe(_jpeg(frame, settings.jpeg_quality), i, descriptor=False)
                jm, jd = matched(obs.mesh, jo.meshes), matched(obs.dlib68, jo.dlib68s)
                cap.jpeg_floor.append((
                    nme(obs.mesh, jm, "mediapipe") if jm is not None else None,
                    nme(obs.dlib68, jd, "dlib68") if jd is not None else None,
                ))
    finally:
        if pairs is not None:
            pairs.close()
        if replacer is not None:
            report = replacer.close()
            cap.faces_report = {k: getattr(report, k) for k in (
                "frames", "faces", "fallback_frames", "leaks", "leak_frames", "renderer_failures")}
    return cap


def evaluate(manifest: str | Path, output: str | Path, settings: Settings) -> dict[str, Any]:
    """Run the evaluation; writes output/metrics.json, output/run.json, output/report.html."""
    from dicom_deid.evaluate.aggregate import method_metrics, run_summary
    from dicom_deid.evaluate.report import write_report

    manifest = Path(manifest)
    entries = read_manifest(manifest)
    unknown = [m for m in settings.methods if m not in (*BUILTIN_METHODS, "deidentified")]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; expected some of "
                         f"{', '.join((*BUILTIN_METHODS, 'deidentified'))}")
    if "deidentified" in settings.methods and not any(e.deidentified for e in entries):
        raise ValueError(f"{manifest}: method deidentified needs a deidentified column")
    out_dir = Path(output)
    out_dir.mkdir(parents=True, exist_ok=True)
    models = Models(body=settings.body)
    originals: dict[int, Capture] = {}
    captures: dict[str, dict[int, Capture] | str] = {}
    crops_left = settings.crops
    try:
        orig_obs, noise_obs = Observer(models), Observer(models)
        started = time.monotonic()
        for n, entry in enumerate(_progress(entries, settings, desc="original")):
            want = entry.role == "probe" and crops_left > 0
            crops_left -= int(want)
            originals[n] = run_capture(entry, "original", settings, models, orig_obs, noise_obs,
                                       None, want)
        captures["original"] = originals
        log.info("originals: %d captures in %.0f s", len(originals), time.monotonic() - started)
        for method in settings.methods:
            if method == "original":
                continue
            observer = Observer(models)
            done: dict[int, Capture] = {}
            started = time.monotonic()
            try:
                for n, entry in enumerate(_progress(entries, settings, desc=method)):
                    want = originals[n].crop is not None
                    done[n] = run_capture(entry, method, settings, models, observer, None,
                                          originals[n], want)
                captures[method] = done
                log.info("method %s: %d captures in %.0f s", method, len(done),
                         time.monotonic() - started)
            except MethodUnavailable as exc:
                log.warning("method %s is unavailable: %s", method, exc)
                captures[method] = str(exc)
            finally:
                observer.close()
        metrics = {m: method_metrics(m, captures.get(m, "not run"), originals)
                   for m in settings.methods}
        if "original" not in settings.methods:
            metrics_original = method_metrics("original", originals, originals)
        else:
            metrics_original = metrics["original"]
        summary = run_summary(manifest, entries, settings, originals, metrics_original)
        orig_obs.close()
        noise_obs.close()
    finally:
        models.close()
    _atomic_json(out_dir / "metrics.json", metrics)
    _atomic_json(out_dir / "run.json", summary)
    write_report(out_dir / "report.html", metrics, summary, captures, originals)
    return metrics


def _atomic_json(path: Path, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=False, allow_nan=False)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
