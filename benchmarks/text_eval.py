#!/usr/bin/env python
"""Burned-in text: how much of the planted text is gone after the text stage, judged by an OCR
engine the stage does not use (Tesseract, Debian's tesseract-ocr), on the test set that
scripts/make_text_testset.py builds from ../shared/data.

For each item (stills, short clips) the frames with overlays go through `TextStage`
(redact-all, record=True), in memory, so that the frames without overlays and the ground truth
are at hand. Reported, by font size and overall:

- readable: planted tokens (3+ letters or digits) Tesseract reads in a crop around the token,
  before and after cleaning (each token once: the first frame it is on); the target is that
  >= 99 % of the identifying tokens are unreadable after, at every size >= 12 px;
- covered: share of (token, frame) pairs whose ink box is >= 98 % inside the redacted boxes;
  changing fields (clock, frame counter), the label that shows between key frames and, with
  --short-text, names shown for one or two frames ("flash") and a lone character that appears
  mid-clip ("char") separately (target 100 % of a changing field's frames);
- psnr_outside: PSNR between the cleaned and the input frame outside the redacted boxes
  (target >= 45 dB; 'identical' when no pixel there changed);
- no_text_area: share of the frame redacted outside every line of planted text (its tokens'
  boxes, padded by a third of the font size; target <= 1 %), mean and max over frames.

    .venv/bin/python benchmarks/text_eval.py [--data ../shared/data] [--stills 16 --clips 4]
        [--frames 50] [--height H] [--short-text] [--output benchmarks/results/<date>/text_eval.json]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from make_text_testset import build_items  # noqa: E402

from dicom_deid.text import TextStage  # noqa: E402
from dicom_deid.text.redact import box_mask  # noqa: E402


def _norm(text: str) -> str:
    return re.sub(r"[^0-9A-Z]", "", text.upper())


def tesseract_reads(crop: np.ndarray, tmp: Path, name: str) -> str:
    """What Tesseract reads in a crop (a single line, upscaled to about 40 px tall)."""
    h = crop.shape[0]
    scale = max(1.0, 40.0 / max(1, h))
    big = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    big = cv2.copyMakeBorder(big, 10, 10, 10, 10, cv2.BORDER_REPLICATE)
    path = tmp / f"{name}.png"
    cv2.imwrite(str(path), cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
    out = subprocess.run(["tesseract", str(path), "-", "--psm", "7"], capture_output=True,
                         text=True, timeout=60)
    return out.stdout


def _crop(frame: np.ndarray, box: list[int], size: int) -> np.ndarray:
    pad = max(3, size // 3)
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = box
    return np.ascontiguousarray(frame[max(0, y0 - pad):min(h, y1 + pad), max(0, x0 - pad):min(w, x1 + pad)])


def _covered(mask: np.ndarray, box: list[int]) -> float:
    x0, y0, x1, y1 = box
    region = mask[y0:y1, x0:x1]
    return float(region.mean()) if region.size else 1.0


def evaluate(items, key_interval: int, workers: int = 2) -> dict:
    cover = defaultdict(lambda: [0, 0])            # group -> [covered, total] (token-frames)
    cover_size = defaultdict(lambda: [0, 0])
    first_seen: dict[tuple, tuple] = {}            # token id -> (original crop, cleaned crop, meta)
    psnr_min = float("inf")
    no_text = []
    seconds = 0.0
    frames_total = 0
    for item in items:
        stage = TextStage("redact-all", key_interval=key_interval, record=True)
        originals, truths = [], []

        def source(item=item, originals=originals, truths=truths):
            for _, frame, tokens in item.frames_with_truth():
                originals.append(frame)
                truths.append(tokens)
                yield frame.copy()

        start = time.process_time()
        cleaned = list(stage.stream(source()))
        seconds += time.process_time() - start
        stage.close()
        for index, (orig, out, tokens) in enumerate(zip(originals, cleaned, truths, strict=True)):
            frames_total += 1
            mask = box_mask(out.shape, stage.covered[index])
            outside = ~mask
            diff = (orig[outside].astype(np.float64) - out[outside]) ** 2
            mse = float(diff.mean()) if diff.size else 0.0
            if mse > 0:
                psnr_min = min(psnr_min, 10 * np.log10(255.0 ** 2 / mse))
            text_area = np.zeros(out.shape[:2], bool)
            for t in tokens:
                pad = max(2, t["size_px"] // 3)
                x0, y0, x1, y1 = t["box"]
                text_area[max(0, y0 - pad):y1 + pad, max(0, x0 - pad):x1 + pad] = True
            no_text.append(float((mask & ~text_area).mean()))
            for t in tokens:
                ok = _covered(mask, t["box"]) >= 0.98
                group = t["changing"] or (t["field"] if t["field"] in ("label", "flash", "char")
                                          else "static")
                for key in (group, "all"):
                    cover[key][0] += ok
                    cover[key][1] += 1
                cover_size[t["size_px"]][0] += ok
                cover_size[t["size_px"]][1] += 1
                ident = (item.name, t["text"], tuple(t["box"]))
                if ident not in first_seen and len(_norm(t["text"])) >= 3:
                    first_seen[ident] = (_crop(orig, t["box"], t["size_px"]),
                                         _crop(out, t["box"], t["size_px"]),
                                         {**t, "item": item.name, "frame": index,
                                          "covered": round(_covered(mask, t["box"]), 3)})
    readable = defaultdict(lambda: {"tokens": 0, "before": 0, "after": 0})
    still_read = []            # the tokens read after cleaning: where and how (invented text)
    with tempfile.TemporaryDirectory(prefix="text_eval_") as tmpdir, \
            ThreadPoolExecutor(workers) as pool:
        tmp = Path(tmpdir)
        jobs = []
        for n, (before, after, t) in enumerate(first_seen.values()):
            jobs.append((t, pool.submit(tesseract_reads, before, tmp, f"b{n}"),
                         pool.submit(tesseract_reads, after, tmp, f"a{n}")))
        for t, before, after in jobs:
            target = _norm(t["text"])
            for key in (t["size_px"], "all"):
                readable[key]["tokens"] += 1
                readable[key]["before"] += target in _norm(before.result())
                readable[key]["after"] += target in _norm(after.result())
            if target in _norm(after.result()):
                still_read.append({k: t.get(k) for k in ("item", "frame", "field", "size_px", "font",
                                                          "style", "covered")})
    sizes = sorted(k for k in readable if k != "all")
    return {
        "items": len(items),
        "frames": frames_total,
        "key_interval": key_interval,
        "text_stage_cpu_ms_per_frame": round(1000 * seconds / max(1, frames_total), 1),
        "readable_by_size": {str(k): readable[k] for k in [*sizes, "all"]},
        "unreadable_after_share_by_size": {
            str(k): round(1 - readable[k]["after"] / max(1, readable[k]["tokens"]), 4)
            for k in [*sizes, "all"]},
        "covered_token_frames": {k: {"covered": v[0], "total": v[1],
                                     "share": round(v[0] / max(1, v[1]), 4)} for k, v in cover.items()},
        "readable_after": still_read,
        "covered_by_size": {str(k): round(v[0] / max(1, v[1]), 4) for k, v in sorted(cover_size.items())},
        "psnr_outside_min_db": "identical" if psnr_min == float("inf") else round(psnr_min, 2),
        "no_text_area": {"mean": round(float(np.mean(no_text)), 5),
                         "max": round(float(np.max(no_text)), 5)},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stills", type=int, default=16)
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--height", type=int, default=None)
    ap.add_argument("--key-interval", type=int, default=16)
    ap.add_argument("--short-text", action="store_true",
                    help="clips also show a name for 1 frame, one for 2, and a lone new character")
    ap.add_argument("--output", type=Path, default=None)
    args = ap.parse_args(argv)
    if shutil.which("tesseract") is None:
        ap.error("tesseract is not installed (Debian: apt-get install tesseract-ocr)")
    if not args.data.is_dir():
        ap.error(f"{args.data}: no such folder (../shared/data)")
    items = build_items(args.data, args.seed, args.stills, args.clips, args.frames, args.height,
                        short_text=args.short_text)
    result = {"seed": args.seed, "height": args.height, "short_text": args.short_text,
              **evaluate(items, args.key_interval)}
    print(json.dumps(result, indent=1))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
