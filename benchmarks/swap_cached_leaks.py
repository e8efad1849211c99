#!/usr/bin/env python
"""Recogniser leaks and rank-1 of cached swap renders of London (key 0), from the cache that
`benchmarks/swap_linkage_regions.py --cache DIR` leaves (k0_<stem>.png per capture).

- leak: a render within dlib distance 0.6 of its own original (evaluate's threshold);
- rank-1: each swapped smiling photo identified against the ORIGINAL neutral photos (51 ids).
The renders are made from test data and stay in the cache (never committed); only counts and
dataset labels are printed.

    nice -n 19 .venv/bin/python benchmarks/swap_cached_leaks.py /tmp/<cache> [--output out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
LONDON = REPO.parent / "shared" / "data" / "faces" / "london"


def main() -> None:
    import cv2

    from dicom_deid.evaluate.embeddings import DlibFaces
    from dicom_deid.faces.media import read_image

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cache", type=Path)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    dlib = DlibFaces(upsample=1)

    def descriptor(rgb: np.ndarray) -> np.ndarray | None:
        face = dlib.analyse(rgb)
        return None if face is None else face.descriptor

    ids = sorted(p.stem.split("_")[0] for p in (LONDON / "smiling").glob("*.jpg"))
    orig: dict = {}
    out: dict = {}
    for i in ids:
        for tag, sub in (("n", "neutral"), ("s", "smiling")):
            path = next((LONDON / sub).glob(f"{i}_*.jpg"))
            orig[(i, tag)] = descriptor(read_image(path))
            cached = args.cache / f"k0_{path.stem}.png"
            out[(i, tag)] = (descriptor(cv2.cvtColor(cv2.imread(str(cached)), cv2.COLOR_BGR2RGB))
                             if cached.exists() else None)
    leaks = [f"{i}_{t}" for (i, t), d in out.items()
             if d is not None and orig[(i, t)] is not None
             and np.linalg.norm(d - orig[(i, t)]) < 0.6]
    gallery = [i for i in ids if orig[(i, "n")] is not None]
    matrix = np.array([orig[(i, "n")] for i in gallery])
    probes = [(i, out[(i, "s")]) for i in ids if out[(i, "s")] is not None]
    hits = sum(gallery[int(np.argmin(np.linalg.norm(matrix - d, axis=1)))] == i
               for i, d in probes)
    result = {"cache": str(args.cache), "recogniser_leaks": leaks, "rank1_hits": int(hits),
              "probes": len(probes), "missing_outputs": sum(v is None for v in out.values())}
    print(json.dumps(result))
    if args.output:
        args.output.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
