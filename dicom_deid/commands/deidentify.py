"""`dicom-deid deidentify INPUT... --output DIR`: de-identify files or folders of DICOM.

Writes DIR/<StudyUID>/<SeriesUID>/<SOPUID>.dcm (new UIDs) with a PHI-free <SOPUID>.json
report beside each; instances that may show a face get the face method (default: the
profile's) and, beside them in their own series, a keypoint Structured Report; an input that fails is copied to the quarantine folder (default
<state folder>/quarantine/cli, never inside DIR: those copies still hold PHI) with a
.reason.txt, named on stderr with its reason, and makes the exit status 1. Files in folders
that are not DICOM are skipped and listed. Nothing the inputs contain is printed: only file
names, counts and reasons.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

from dicom_deid import face_methods
from dicom_deid.header.options import OPTIONS
from dicom_deid.onnx_device import (
    DEFAULT_FACE_ENGINE,
    DEFAULT_KEYPOINT_ENGINE,
    FACE_ENGINES,
    KEYPOINT_ENGINES,
)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "deidentify",
        help="de-identify DICOM files or folders by a PS3.15 Annex E profile",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", type=Path,
                        help="DICOM files or folders (searched recursively)")
    parser.add_argument("--output", "-o", type=Path, metavar="DIR",
                        help="output folder: DIR/<Study>/<Series>/<SOP>.dcm (required unless "
                             "--dry-run)")
    parser.add_argument("--dry-run", action="store_true",
                        help="write nothing; print each file's attributes before and after "
                             "(input values only when stdout is a terminal)")
    parser.add_argument("--profile", default="basic", metavar="NAME|PATH",
                        help="shipped profile name or profile YAML (default: basic; "
                             "see `dicom-deid profiles list`)")
    parser.add_argument("--option", action="append", default=[], metavar="NAME",
                        choices=OPTIONS, help="add a PS3.15 option (repeatable): "
                        + ", ".join(OPTIONS))
    parser.add_argument("--faces", choices=face_methods.choices(), default=None, metavar="METHOD",
                        help="face method for pixels that may show a face "
                             f"({'|'.join(face_methods.choices())}; default: the profile's)")
    parser.add_argument("--device", default="auto", metavar="DEVICE",
                        help="where the models run: auto (CUDA when it starts, else CPU), "
                             "cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--face-engine", choices=FACE_ENGINES, default=None,
                        help="who runs the face detector and mesh: MediaPipe's TFLite (CPU) "
                             "or the same models on ONNX Runtime (on --device); auto: ONNX "
                             f"when --device resolves to a GPU (default: {DEFAULT_FACE_ENGINE})")
    parser.add_argument("--keypoint-engine", choices=KEYPOINT_ENGINES, default=None,
                        help="who runs the keypoint SR's body pose: MediaPipe (CPU) or the same "
                             "models on ONNX Runtime (on --device); auto: ONNX "
                             f"(default: {DEFAULT_KEYPOINT_ENGINE})")
    parser.add_argument("--keypoints-csv", action="store_true",
                        help="also write the keypoints measured on the original frames as a "
                             "tidy CSV (frame, set, point, x, y, ...) beside each face video")
    parser.add_argument("--key-file", type=Path, default=None, metavar="PATH",
                        help="site key file (default: created on first use in the per-user "
                             "state folder)")
    parser.add_argument("--quarantine", type=Path, default=None, metavar="DIR",
                        help="where failed inputs (with their PHI) are copied with their "
                             "reason, mode 0700, outside OUTPUT (default: <state "
                             "folder>/quarantine/cli)")
    parser.set_defaults(func=run)


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


def quarantine_folder(output: Path, requested: Path | None) -> tuple[Path | None, str | None]:
    """The quarantine folder (created 0700), or why it cannot be used.

    It holds full copies of the failed inputs, PHI included, so it must never be inside the
    output, which is what gets shipped."""
    from dicom_deid.header.keys import default_state_dir
    from dicom_deid.node.spool import ensure_private_dir

    folder = requested if requested is not None else default_state_dir() / "quarantine" / "cli"
    resolved, out = folder.resolve(), output.resolve()
    if resolved.is_relative_to(out) or out.is_relative_to(resolved):
        return None, (f"--quarantine {folder} must not be inside the output {output} (nor hold "
                      "it): it keeps copies of failed inputs with their PHI")
    try:
        ensure_private_dir(folder)
    except OSError as exc:
        return None, f"cannot create the quarantine folder {folder}: {exc.strerror or exc}"
    return folder, None


def run(args: argparse.Namespace) -> int:
    import logging
    import time

    from dicom_deid.commands.bars import RunProgress
    from dicom_deid.commands.inputs import find_inputs, output_folder_problem, print_skipped
    from dicom_deid.deidentifier import Deidentifier
    from dicom_deid.errors import DeidError
    from dicom_deid.header import KeyFileError, ProfileError, load_key, load_profile
    from dicom_deid.pipeline import process_study

    # pydicom's own log messages may quote header values: keep them out of the output.
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    try:
        key = load_key(args.key_file)
        profile = load_profile(args.profile, tuple(args.option))
    except (KeyFileError, ProfileError, ValueError) as exc:
        print(f"dicom-deid deidentify: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        from dicom_deid.commands.dryrun import dry_run

        found = find_inputs(args.inputs)
        print_skipped(found)
        for path, why in found.missing:
            print(f"FAILED {path}: {why}", file=sys.stderr)
        return max(dry_run(found.paths, profile, key), 1 if found.missing else 0)
    if args.output is None:
        print("dicom-deid deidentify: --output DIR is required (or --dry-run)", file=sys.stderr)
        return 2
    output: Path = args.output
    problem = output_folder_problem(output)
    quarantine_dir, qproblem = (None, None) if problem else quarantine_folder(output, args.quarantine)
    if problem or qproblem:
        print(f"dicom-deid deidentify: {problem or qproblem}", file=sys.stderr)
        return 2
    assert quarantine_dir is not None           # set whenever there was no problem
    # Never take this run's (or an earlier run's) outputs as inputs.
    found = find_inputs(args.inputs, exclude=(output, quarantine_dir))
    print_skipped(found)
    files = found.paths

    def study_deidentifier() -> Deidentifier:
        # One per study: what must agree within a study is held by it (docs/LIBRARY.md).
        return Deidentifier(profile, key=key, faces=args.faces, device=args.device,
                            face_engine=args.face_engine,
                            keypoint_engine=args.keypoint_engine)

    try:
        faces = study_deidentifier().method
    except DeidError as exc:
        print(f"dicom-deid deidentify: {exc}", file=sys.stderr)
        return 2

    failures: list[tuple[Path, str]] = list(found.missing)
    registry: dict[str, str] = {}   # one across studies: a SOP Instance UID is global
    duplicates = 0
    written = 0
    files_written = 0
    studies = 0
    progress = RunProgress(len(files), unit_desc="de-identifying")
    started = time.monotonic()
    try:
        for _study, members in group_by_study(files).items():
            result = process_study(members, output, study_deidentifier(), None, quarantine_dir,
                                   progress=progress.file_done, registry=registry,
                                   durable=False, keypoints_csv=args.keypoints_csv)
            duplicates += result.duplicates
            written += len(result.reports)
            files_written += len(result.outputs)
            studies += 1 if result.outputs else 0
            failures.extend((f.path, f.reason) for f in result.failures)
    finally:
        progress.close()

    extra = files_written - written
    print(f"{written} instance(s) of {studies} study(ies) written to {output} "
          + (f"with {extra} keypoint SR(s) " if extra else "")
          + f"(profile {profile.name}"
          + (f", options {', '.join(profile.options)}" if profile.options else "")
          + f", faces {faces}) in {time.monotonic() - started:.1f} s"
          + (f"; {len(found.skipped)} file(s) skipped" if found.skipped else ""))
    if duplicates:
        print(f"{duplicates} identical re-send(s) of an instance already written, stored once")
    conflicts = sum(1 for _, reason in failures if "duplicate SOP Instance UID" in reason)
    if conflicts:
        print(f"{conflicts} input(s) re-used the SOP Instance UID of a different instance "
              "and were quarantined, not overwritten")
    if failures:
        for path, reason in failures:
            print(f"FAILED {path}: {reason}", file=sys.stderr)
        quarantined = len(failures) - len(found.missing)
        print(f"{len(failures)} input(s) failed"
              + (f"; copies and reasons are in {quarantine_dir}" if quarantined else ""),
              file=sys.stderr)
        return 1
    if not files:
        print("no input files found", file=sys.stderr)
        return 1
    return 0
