#!/usr/bin/env python
"""Run `dicom-deid evaluate` over ../shared/data (shared/EVALUATION.md) and keep the numbers.

Writes three manifests under benchmarks/manifests/ (paths relative to that folder, identity
labels only), evaluates each with every method, and copies metrics.json (and the run summary)
to benchmarks/results/<date>/metrics_<set>.json. The full outputs, report.html with its crops
of the data included, stay in out/evaluate/<set>/ (ignored by git: never commit data crops).

Sets:
- london: 51 identities; gallery = the neutral photos (all identities), probes = the smiling
  photos of the same people (another capture). Each neutral/smiling pair is also an expression
  pair: evaluate renders the neutral photo a second time under the smiling photo's study (one
  study, one donor) and reports the expression kept over all identities and over the held-out
  ones (odd ids; the swap expression model is trained on the even ids).
- grid: the 6 GRID clips are probes (speakers A..E, two clips of C); the gallery is the DICOM
  video of each speaker (dicom/video/A..E). Those DICOM files are re-encodes of GRID captures:
  for A, B, D and E the same capture as the probe clip (a stronger attack than the protocol's
  "another capture"), for C the other clip. The 51 London neutral photos are distractors.
  Speaker letters were matched to clips by dlib descriptor distance (<= 0.06 same capture,
  0.18 between the two C clips, >= 0.65 otherwise).
- film: the Tears of Steel excerpt (no gallery identity: utility and leaks only) and the COCO
  full-body photo, with body and hand keypoints.

    .venv/bin/python benchmarks/evaluate_shared.py [--sets london,grid,film] [--methods ...]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MANIFESTS = REPO / "benchmarks" / "manifests"
DATA = Path(os.environ.get("DICOM_DEID_SHARED", REPO.parent / "shared")) / "data"
LONDON = DATA / "faces" / "london"
GRID_SPEAKERS = {  # clip -> speaker letter (see the module doc)
    "bbaf2n.mpg": "A", "brbk7n.mpg": "B", "id2_vcd_swwp2s.mpg": "C", "pwij3p.mpg": "C",
    "lbax4n.mpg": "D", "lbbc2a.mpg": "E",
}
GRID_GALLERY = {
    "A": "A_h264_high_es_720x576.dcm", "B": "B_mpeg2_mpml_720x576.dcm",
    "C": "C_jpeg_baseline_multiframe_360x288.dcm", "D": "D_hevc_main_720x576.dcm",
    "E": "E_native_rgb_multiframe_360x288.dcm",
}
SETS = {  # name -> extra evaluate arguments
    "london": [],
    "grid": ["--max-frames", "75", "--descriptor-step", "5"],
    "film": ["--max-frames", "240", "--descriptor-step", "5", "--body"],
}
METHODS = "original,blur,pixelate,blackout,swap,mask3d"


def rel(path: Path) -> str:
    return os.path.relpath(path, MANIFESTS)


def london_rows() -> list[tuple[str, str, str]]:
    rows = []
    for photo in sorted((LONDON / "neutral").glob("*_03.jpg")):
        ident = photo.name.split("_")[0]
        smiling = LONDON / "smiling" / f"{ident}_08.jpg"
        rows.append((rel(photo), f"london-{ident}", "gallery"))
        if smiling.is_file():
            rows.append((rel(smiling), f"london-{ident}", "probe"))
    return rows


def grid_rows() -> list[tuple[str, str, str]]:
    rows = [(rel(DATA / "dicom" / "video" / name), f"grid-{spk}", "gallery")
            for spk, name in GRID_GALLERY.items()]
    rows += [(rel(DATA / "video" / "grid" / clip), f"grid-{spk}", "probe")
             for clip, spk in GRID_SPEAKERS.items()]
    rows += [(rel(p), f"london-{p.name.split('_')[0]}", "distractor")
             for p in sorted((LONDON / "neutral").glob("*_03.jpg"))]
    return rows


def film_rows() -> list[tuple[str, str, str]]:
    return [
        (rel(DATA / "video" / "people" / "tears_of_steel_clip01_640x360.mp4"), "film", "probe"),
        (rel(DATA / "pose" / "coco_000000000785.jpg"), "coco-785", "probe"),
    ]


def write_manifest(name: str, rows: list[tuple[str, str, str]]) -> Path:
    MANIFESTS.mkdir(parents=True, exist_ok=True)
    path = MANIFESTS / f"{name}.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["path", "identity", "role"])
        writer.writerows(rows)
    return path


def faces_state() -> str:
    """The commit and whether faces/ has uncommitted changes (swap and mask3d in progress)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                          text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "dicom_deid/faces"], cwd=REPO,
                           capture_output=True, text=True).stdout.strip()
    return f"{head}{' + uncommitted dicom_deid/faces changes' if dirty else ''}"


# Runs the CLI after setting the swap constants given as JSON in argv[1] (a "mask3d." prefix
# sets a mask3d constant instead) and shifting the evaluation keys by argv[2] (--first-key: key
# k of the run is evaluation key first + k).
RUNNER = ("import json, sys; from dicom_deid.faces import swap, mask3d; "
          "[setattr(mask3d if k.startswith('mask3d.') else swap, k.removeprefix('mask3d.'), v) "
          "for k, v in json.loads(sys.argv[1]).items()]; "
          "from dicom_deid.evaluate import run; first = int(sys.argv[2]); "
          "key = run.evaluation_key; run.evaluation_key = lambda i: key(i + first); "
          "from dicom_deid import cli; sys.exit(cli.main(sys.argv[3:]))")


def parse_knobs(items: list[str], module: str = "swap") -> dict[str, object]:
    """NAME=JSON pairs naming existing upper-case constants of dicom_deid.faces.swap (or of
    dicom_deid.faces.mask3d, whose names are returned as "mask3d.NAME")."""
    sys.path.insert(0, str(REPO))  # this checkout's package, as the evaluate run imports it
    from dicom_deid.faces import mask3d, swap

    target = {"swap": swap, "mask3d": mask3d}[module]
    knobs: dict[str, object] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.isupper() or not hasattr(target, name):
            raise SystemExit(f"--{module}-knob {item!r}: not NAME=JSON of a {module} constant")
        knobs[name if module == "swap" else f"mask3d.{name}"] = json.loads(value)
    return knobs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="london,grid,film")
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--date", default=dt.date.today().isoformat())
    parser.add_argument("--manifests-only", action="store_true")
    parser.add_argument("--tag", default="", help="suffix of the result files (a partial re-run)")
    parser.add_argument("--shape", type=float, default=None,
                        help="swap shape (default: evaluate's, the shipped profiles' value)")
    parser.add_argument("--keys", type=int, default=None,
                        help="site keys for swap and mask3d (default: evaluate's, 3)")
    parser.add_argument("--first-key", type=int, default=0,
                        help="the evaluation key the run's first key is (default 0): "
                             "--first-key 3 --keys 3 measures keys 3, 4 and 5")
    parser.add_argument("--max-frames", type=int, default=None,
                        help="frames per video (default: the set's own setting)")
    parser.add_argument("--swap-knob", action="append", default=[], metavar="NAME=JSON",
                        help="set a module constant of dicom_deid.faces.swap for this run "
                             "(e.g. LIP_THICKNESS=[0.8,1.25]); repeatable")
    parser.add_argument("--mask-knob", action="append", default=[], metavar="NAME=JSON",
                        help="set a module constant of dicom_deid.faces.mask3d for this run "
                             "(e.g. REST_KEEP_RATIO=1.1); repeatable")
    args = parser.parse_args()
    knobs = parse_knobs(args.swap_knob) | parse_knobs(args.mask_knob, "mask3d")
    builders = {"london": london_rows, "grid": grid_rows, "film": film_rows}
    results = REPO / "benchmarks" / "results" / args.date
    for name in [s.strip() for s in args.sets.split(",") if s.strip()]:
        manifest = write_manifest(name, builders[name]())
        if args.manifests_only:
            print(f"wrote {manifest}")
            continue
        out = REPO / "out" / "evaluate" / f"{name}{args.tag}"
        # This interpreter with the checkout's own package first on the path (an installed
        # `dicom-deid` script would import whichever checkout the venv was made from).
        cmd = [sys.executable, "-c", RUNNER, json.dumps(knobs), str(args.first_key),
               "evaluate", "--manifest",
               str(manifest), "--methods", args.methods, "--output", str(out), *SETS[name]]
        if args.shape is not None:
            cmd += ["--shape", str(args.shape)]
        if args.keys is not None:
            cmd += ["--keys", str(args.keys)]
        if args.max_frames is not None:
            cmd += ["--max-frames", str(args.max_frames)]
        state = faces_state()
        start = time.monotonic()
        proc = subprocess.run(cmd, cwd=REPO)
        seconds = time.monotonic() - start
        if proc.returncode != 0:
            print(f"{name}: evaluate failed ({proc.returncode})", file=sys.stderr)
            return proc.returncode
        results.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "metrics.json", results / f"metrics_{name}{args.tag}.json")
        summary = json.loads((out / "run.json").read_text())
        summary.update(wall_seconds=round(seconds, 1), code=state, swap_knobs=knobs,
                       first_key=args.first_key, command=" ".join(cmd[5:]))
        (results / f"metrics_{name}{args.tag}_run.json").write_text(
            json.dumps(summary, indent=2) + "\n")
        print(f"{name}: {seconds:.0f} s -> {results / f'metrics_{name}{args.tag}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
