#!/usr/bin/env python
"""At what scale the text detector finds a lone small character: the text stage's retry of an
empty small region check (`stage.FINE_SCALE`).

Each digit 0-9 in each of the test set's PIL fonts, at each size, is drawn on four grounds (a
flat blue, near black, light grey with dark text, a blurred noise picture) in a square crop of
`--crop` pixels (what the retry detects around a cluster of new edges), and detected at each
scale; printed: found / tried per (size, scale). Synthetic only (fonts from Debian's
fonts-dejavu-core), so no data from ../shared is needed.

    .venv/bin/python benchmarks/text_fine_scale.py [--sizes 10 12 14] [--scales 4 6 8] [--crop 48]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from make_text_testset import FONT_DIR, PIL_FONTS  # noqa: E402

from dicom_deid.text.ppocr import shared_detector  # noqa: E402


def grounds(side: int) -> list[tuple[np.ndarray, tuple[int, int, int]]]:
    """(ground, text colour): light text on three, dark text on the light one."""
    rng = np.random.default_rng(1)
    noise = cv2.GaussianBlur(rng.integers(60, 200, (side, side, 3)).astype(np.uint8), (0, 0), 3)
    light = (255, 255, 120)
    return [(np.full((side, side, 3), (30, 150, 190), np.uint8), light),
            (np.full((side, side, 3), 20, np.uint8), light),
            (np.full((side, side, 3), 200, np.uint8), (20, 20, 20)),
            (noise, light)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 12, 14])
    ap.add_argument("--scales", type=float, nargs="+", default=[4.0, 6.0, 8.0])
    ap.add_argument("--crop", type=int, default=48)
    args = ap.parse_args(argv)
    det = shared_detector()
    found: dict[str, list[int]] = {}
    for size in args.sizes:
        for name in PIL_FONTS:
            font = ImageFont.truetype(str(FONT_DIR / name), size)
            for digit in "0123456789":
                for ground, colour in grounds(args.crop):
                    img = Image.fromarray(ground.copy())
                    ImageDraw.Draw(img).text((args.crop // 2 - size // 4, args.crop // 2 - size // 2),
                                             digit, font=font, fill=colour)
                    rgb = np.asarray(img)
                    for scale in args.scales:
                        key = f"{size}px@{scale:g}x"
                        counts = found.setdefault(key, [0, 0])
                        counts[0] += len(det.detect(rgb, scale=scale)) > 0
                        counts[1] += 1
    print(json.dumps({k: f"{v[0]}/{v[1]}" for k, v in found.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
