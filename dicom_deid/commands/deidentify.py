"""`dicom-deid deidentify INPUT... --output DIR`: de-identify files or folders of DICOM.

Writes DIR/<StudyUID>/<SeriesUID>/<SOPUID>.dcm (new UIDs) with a PHI-free <SOPUID>.json
report beside each; instances that may show a face get the face method (default: the
profile's) and, beside them in their own series, a keypoint Structured Report; an input that fails is copied to the quarantine folder (default
DIR/quarantine) with a .reason.txt, named on stderr with its reason, and makes the exit
status 1. Nothing the inputs contain is printed: only file names, counts and reasons.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

from dicom_deid.header.options import OPTIONS
from dicom_deid.header.profile import FACE_METHODS


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "deidentify",
        help="de-identify DICOM files or folders by a PS3.15 Annex E profile",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", type=Path,
                        help="DICOM files or folders (searched recursively)")
    parser.add_argument("--output", "-o", required=True, type=Path, metavar="DIR",
                        help="output folder: DIR/<Study>/<Series>/<SOP>.dcm")
    parser.add_argument("--profile", default="basic", metavar="NAME|PATH",
                        help="shipped profile name or profile YAML (default: basic; "
                             "see `dicom-deid profiles list`)")
    parser.add_argument("--option", action="append", default=[], metavar="NAME",
                        choices=OPTIONS, help="add a PS3.15 option (repeatable): "
                        + ", ".join(OPTIONS))
    parser.add_argument("--faces", choices=FACE_METHODS, default=None, metavar="METHOD",
                        help="face method for pixels that may show a face "
                             f"({'|'.join(FACE_METHODS)}; default: the profile's)")
    parser.add_argument("--keypoints-csv", action="store_true",
                        help="also write the keypoints measured on the original frames as a "
                             "tidy CSV (frame, set, point, x, y, ...) beside each face video")
    parser.add_argument("--key-file", type=Path, default=None, metavar="PATH",
                        help="site key file (default: created on first use in the per-user "
                             "state folder)")
    parser.add_argument("--quarantine", type=Path, default=None, metavar="DIR",
                        help="where failed inputs are copied with their reason "
                             "(default: OUTPUT/quarantine)")
    parser.set_defaults(func=run)


def collect_inputs(inputs: list[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files to process, in a stable order, and inputs that do not exist.

    In folders, hidden files are skipped. A DICOMDIR (a media index, not an instance) is
    kept: it goes to quarantine with that reason, as every input that is not written does.
    """
    files: list[Path] = []
    missing: list[tuple[Path, str]] = []
    for item in inputs:
        if item.is_dir():
            for path in sorted(item.rglob("*")):
                rel = path.relative_to(item)
                if any(part.startswith(".") for part in rel.parts):
                    continue
                if path.is_file():
                    files.append(path)
        elif item.is_file():
            files.append(item)
        else:
            missing.append((item, "no such file or folder"))
    seen: set[Path] = set()
    unique = []
    for path in files:
        resolved = path.resolve()
        if resolved not in seen:
            seen.add(resolved)
            unique.append(path)
    return unique, missing


def group_by_study(files: list[Path]) -> dict[str, list[Path]]:
    """Files grouped by StudyInstanceUID (read from the header only); unreadable ones
    form their own group, and fail with their reason in process_study."""
    import warnings

    from pydicom import dcmread

    groups: dict[str, list[Path]] = defaultdict(list)
    for path in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
            study = str(ds.get("StudyInstanceUID", "") or "")
        except Exception:  # noqa: BLE001 (reported by process_study with its reason)
            study = ""
        groups[study].append(path)
    return groups


def run(args: argparse.Namespace) -> int:
    import logging

    from tqdm import tqdm

    from dicom_deid.header import KeyFileError, ProfileError, load_key, load_profile
    from dicom_deid.pipeline import StudyOptions, process_study

    # pydicom's own log messages may quote header values: keep them out of the output.
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    try:
        key = load_key(args.key_file)
        profile = load_profile(args.profile, tuple(args.option))
    except (KeyFileError, ProfileError, ValueError) as exc:
        print(f"dicom-deid deidentify: {exc}", file=sys.stderr)
        return 2
    output: Path = args.output
    quarantine_dir: Path = args.quarantine or output / "quarantine"
    files, missing = collect_inputs(args.inputs)
    # Never take this run's (or an earlier run's) outputs as inputs.
    skip = (output.resolve(), quarantine_dir.resolve())
    files = [f for f in files if not any(f.resolve().is_relative_to(s) for s in skip)]
    options = StudyOptions(profile=profile, faces=args.faces, durable=False,
                           keypoints_csv=args.keypoints_csv)
    try:
        faces = options.face_method(profile)
    except ValueError as exc:
        print(f"dicom-deid deidentify: {exc}", file=sys.stderr)
        return 2

    failures: list[tuple[Path, str]] = list(missing)
    registry: dict[str, str] = {}   # one across studies: a SOP Instance UID is global
    duplicates = 0
    written = 0
    files_written = 0
    studies = 0
    bar = tqdm(total=len(files), unit="file", file=sys.stderr, disable=not sys.stderr.isatty(),
               desc="de-identifying")
    try:
        for _study, members in group_by_study(files).items():
            result = process_study(members, output, options, key, quarantine_dir,
                                   progress=lambda _path, _ok: bar.update(1), registry=registry)
            duplicates += result.duplicates
            written += len(result.reports)
            files_written += len(result.outputs)
            studies += 1 if result.outputs else 0
            failures.extend((f.path, f.reason) for f in result.failures)
    finally:
        bar.close()

    extra = files_written - written
    print(f"{written} instance(s) of {studies} study(ies) written to {output} "
          + (f"with {extra} keypoint SR(s) " if extra else "")
          + f"(profile {profile.name}"
          + (f", options {', '.join(profile.options)}" if profile.options else "")
          + f", faces {faces})")
    if duplicates:
        print(f"{duplicates} identical re-send(s) of an instance already written, stored once")
    conflicts = sum(1 for _, reason in failures if "duplicate SOP Instance UID" in reason)
    if conflicts:
        print(f"{conflicts} input(s) re-used the SOP Instance UID of a different instance "
              "and were quarantined, not overwritten")
    if failures:
        for path, reason in failures:
            print(f"FAILED {path}: {reason}", file=sys.stderr)
        print(f"{len(failures)} input(s) failed; copies and reasons are in {quarantine_dir}",
              file=sys.stderr)
        return 1
    if not files:
        print("no input files found", file=sys.stderr)
        return 1
    return 0
