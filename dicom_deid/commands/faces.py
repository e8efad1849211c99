"""`dicom-deid faces INPUT... --output DIR --method METHOD`: face replacement alone.

Images, plain videos (see dicom_deid/faces/media.py for what is written per container) and
DICOM video. Each output keeps its input's file name. DICOM headers are not de-identified here
(that is `dicom-deid deidentify --faces METHOD`), so DICOM inputs are refused unless
--keep-header says that the header, PHI included, is to be kept; only the pixels change and
the instance gets a new UID that depends on the method.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from dicom_deid import face_methods
from dicom_deid.policy import DEFAULT_FACE_SHAPE

log = logging.getLogger(__name__)



def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "faces",
        help="replace faces in images, videos and DICOM video",
        description="Replace every face in images (png, jpg), videos (mp4, mpg, avi, mov, mkv) "
        "and DICOM video; outputs keep the input file names. A face that cannot be "
        "followed is covered, and an independent detector checks every output frame.",
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                        help="files, or folders (searched recursively)")
    parser.add_argument("--output", "-o", required=True, type=Path, metavar="DIR")
    parser.add_argument("--method", "-m", choices=face_methods.names(), default="swap")
    parser.add_argument("--shape", type=float, default=DEFAULT_FACE_SHAPE,
                        help="swap only: 0 keeps the patient's face geometry, 1 the mean shape "
                             f"(default {DEFAULT_FACE_SHAPE}, as the shipped profiles)")
    parser.add_argument("--key-file", type=Path, default=None,
                        help="site key (chooses the swap donor or the mask texture per study); "
                             "default: the per-user key")
    parser.add_argument("--max-faces", type=int, default=4,
                        help="faces followed with landmarks per frame; more are covered")
    parser.add_argument("--report", type=Path, default=None,
                        help="write the per-file reports (counts, no PHI) as JSON here")
    parser.add_argument("--device", default="auto", metavar="DEVICE",
                        help="where the models run: auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--face-engine", choices=("auto", "mediapipe", "onnx"), default=None,
                        help="who runs the face detector and mesh (default: auto: onnx on a "
                             "GPU, mediapipe on the CPU)")
    parser.add_argument("--keep-header", action="store_true",
                        help="DICOM inputs: keep the header as it is, PatientName, PatientID and "
                             "all (without this flag DICOM inputs are refused; `dicom-deid "
                             "deidentify --faces METHOD` de-identifies header and faces)")
    parser.set_defaults(func=run)


def describe(report) -> str:
    """The report in words: a leak is a face the tracker missed and the independent check
    caught; it was covered, so it is counted as caught, not as a face shown."""
    text = (f"{report.frames} frames, {report.faces} faces replaced, "
            f"{report.fallback_frames} frames covered by the fallback")
    if report.leaks:
        text += (f", {report.leaks} missed faces caught by the leak check and covered "
                 f"(in {report.leak_frames} frames)")
    else:
        text += ", no face found by the leak check"
    return text


def _progress_factory(name: str):
    from tqdm import tqdm

    bars = []

    def start(total: int | None):
        bar = tqdm(total=total, desc=name, unit="frame", file=sys.stderr, leave=False,
                   disable=not sys.stderr.isatty())
        bars.append(bar)
        return lambda: bar.update(1)

    def close() -> None:
        for bar in bars:
            bar.close()

    return start, close


def run(args: argparse.Namespace) -> int:
    from dicom_deid.faces import FaceReplacer, MethodUnavailableError
    from dicom_deid.faces.files import kind_of, process_dicom, process_image, process_video
    from dicom_deid.faces.media import MediaError
    from dicom_deid.header.keys import KeyFileError, donor_seed, load_key
    from dicom_deid.video import VideoError

    if not 0.0 <= args.shape <= 1.0:
        print(f"dicom-deid faces: --shape must be within 0..1, got {args.shape}", file=sys.stderr)
        return 2
    if args.max_faces < 1:
        print("dicom-deid faces: --max-faces must be at least 1", file=sys.stderr)
        return 2
    # Before the output folder is made: a device that cannot be used leaves nothing behind.
    from dicom_deid.errors import DeidError
    from dicom_deid.onnx_device import DEFAULT_FACE_ENGINE, ModelSettings

    try:
        runtime = ModelSettings(args.device, args.face_engine or DEFAULT_FACE_ENGINE)
        runtime.check()
    except DeidError as exc:
        print(f"dicom-deid faces: {exc}", file=sys.stderr)
        return 2
    from dicom_deid.commands.inputs import claim_output, gather_media

    gathered = gather_media("faces", args.inputs, args.output)
    if gathered is None:
        return 2
    found, items = gathered

    keys: list = []

    def site_key():
        # Loaded once, and only when needed (swap donors, mask textures, DICOM instance UIDs),
        # so that the baselines on plain files do not create a key file as a side effect.
        if not keys:
            keys.append(load_key(args.key_file))
        return keys[0]

    if face_methods.get(args.method).keyed:
        try:
            site_key()
        except KeyFileError as exc:
            print(f"dicom-deid faces: {exc}", file=sys.stderr)
            return 2

    def make(fps: float, donor_identity: str) -> FaceReplacer:
        # Donor per study (per content digest for plain media), from the site key: two studies of one
        # patient get unrelated donors, and nobody without the key can predict the donor.
        seed = donor_seed(site_key(), donor_identity) \
            if face_methods.get(args.method).keyed else 0
        return FaceReplacer(args.method, shape=args.shape, donor_seed=seed, fps=fps,
                            max_faces=args.max_faces, runtime=runtime)

    failures: list[str] = [f"{path}: {why}" for path, why in found.missing]
    reports: list[dict] = []
    seen: set[Path] = set()
    for src, rel in items:
        dst = args.output / rel
        name = str(src)
        try:
            claim_output(src, dst, args.output, seen)
            kind = kind_of(src)
            start = time.monotonic()
            progress, close_bars = _progress_factory(src.name)
            try:
                if kind == "image":
                    report = process_image(src, dst, make)
                elif kind == "video":
                    report = process_video(src, dst, make, progress)
                elif not args.keep_header:
                    raise MediaError(
                        f"{src}: DICOM input refused: this command keeps the header (PatientName, "
                        "PatientID, ...); use `dicom-deid deidentify --faces "
                        f"{args.method}` to de-identify both, or --keep-header to keep it")
                else:
                    report = process_dicom(src, dst, make, site_key(), progress,
                                           method=args.method)
            finally:
                close_bars()
            seconds = time.monotonic() - start
        except (MediaError, VideoError, MethodUnavailableError, KeyFileError, OSError, ValueError) as exc:
            message = str(exc)
            failures.append(message if message.startswith(name) else f"{name}: {message}")
            continue
        except Exception as exc:  # a bug or a library error: still name the file and go on
            log.debug("unexpected failure", exc_info=True)
            failures.append(f"{name}: unexpected {type(exc).__name__}: {exc}")
            continue
        fps = report.frames / seconds if seconds > 0 else 0.0
        kept = "; header kept as it was (PHI)" if kind == "dicom" else ""
        print(f"{dst}: {describe(report)} ({args.method}, {fps:.1f} frames/s){kept}")
        entry = report.as_dict()
        entry.update(input=src.name, output=str(dst), kind=kind, seconds=round(seconds, 3))
        reports.append(entry)

    if args.report is not None:
        from dicom_deid.atomic import write_atomic

        text = json.dumps(reports, indent=2)
        try:
            write_atomic(text, args.report, durable=False, public=True)
        except OSError as exc:
            failures.append(f"{args.report}: cannot write the report: {exc}")
    for line in failures:
        print(f"FAILED {line}", file=sys.stderr)
    if failures:
        print(f"dicom-deid faces: {len(failures)} of {len(items) + len(found.missing)} "
              "input(s) failed", file=sys.stderr)
        return 1
    return 0
