"""`dicom-deid text INPUT... --output DIR [--mode redact-all|redact-phi]`: burned-in text alone.

Images, plain videos and DICOM (stills and video); outputs keep their input's file name. DICOM
headers are not de-identified here (that is `dicom-deid deidentify`); only the pixels change and
the instance gets a new keyed UID. The per-file report holds counts only, never text.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

MODES = ("redact-all", "redact-phi")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "text",
        help="find and cover text burned into images, videos and DICOM pixels",
        description="Find text burned into the pixels (names, IDs, dates, institution) and "
        "cover it with a solid fill, in images (png, jpg), videos (mp4, mpg, avi, mov, mkv) "
        "and DICOM; outputs keep the input file names.",
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                        help="files, or folders (searched recursively)")
    parser.add_argument("--output", "-o", required=True, type=Path, metavar="DIR")
    parser.add_argument("--mode", "-m", choices=MODES, default="redact-all",
                        help="redact-all covers every text region; redact-phi reads the text and "
                             "covers what matches the DICOM header's identifying values, dates, "
                             "times and IDs (default redact-all)")
    parser.add_argument("--key-interval", type=int, default=None,
                        help="video: frames between full detections (default 16)")
    parser.add_argument("--key-file", type=Path, default=None,
                        help="site key (new SOP Instance UIDs of DICOM outputs); default: the per-user key")
    parser.add_argument("--report", type=Path, default=None,
                        help="write the per-file reports (counts, no text) as JSON here")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dicom_deid.atomic import write_atomic
    from dicom_deid.commands.inputs import claim_output, gather_media
    from dicom_deid.faces.files import kind_of
    from dicom_deid.faces.media import MediaError
    from dicom_deid.header.keys import KeyFileError, load_key
    from dicom_deid.text import DEFAULT_KEY_INTERVAL, TextStage
    from dicom_deid.text.files import process_dicom, process_image, process_video
    from dicom_deid.video import VideoError

    interval = DEFAULT_KEY_INTERVAL if args.key_interval is None else args.key_interval
    if interval < 1:
        print("dicom-deid text: --key-interval must be at least 1", file=sys.stderr)
        return 2
    gathered = gather_media("text", args.inputs, args.output)
    if gathered is None:
        return 2
    found, items = gathered

    def make(phi) -> TextStage:
        return TextStage(args.mode, phi, key_interval=interval, inplace=True)

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
            if kind == "image":
                report = process_image(src, dst, make)
            elif kind == "video":
                report = process_video(src, dst, make)
            else:
                report = process_dicom(src, dst, make, load_key(args.key_file))
            seconds = time.monotonic() - start
        except (MediaError, VideoError, KeyFileError, OSError, ValueError) as exc:
            message = str(exc)
            failures.append(message if message.startswith(name) else f"{name}: {message}")
            continue
        except Exception as exc:  # a bug or a library error: still name the file and go on
            log.debug("unexpected failure", exc_info=True)
            failures.append(f"{name}: unexpected {type(exc).__name__}")
            continue
        print(f"{dst}: {report.summary()} ({args.mode}, {seconds:.1f} s)")
        entry = report.as_dict()
        entry.update(input=src.name, output=str(dst), kind=kind, seconds=round(seconds, 3))
        reports.append(entry)

    if args.report is not None:
        text = json.dumps(reports, indent=2)
        try:
            write_atomic(text, args.report, durable=False, public=True)
        except OSError as exc:
            failures.append(f"{args.report}: cannot write the report: {exc}")
    for line in failures:
        print(f"FAILED {line}", file=sys.stderr)
    if failures:
        print(f"dicom-deid text: {len(failures)} of {len(items) + len(found.missing)} input(s) failed", file=sys.stderr)
        return 1
    return 0
