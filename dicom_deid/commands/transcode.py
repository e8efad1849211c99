"""`dicom-deid transcode INPUT... --output DIR`: re-encode DICOM video instances, nothing else.

Each video-bearing instance (MPEG-2, H.264, HEVC, or any multi-frame image) is decoded and
encoded again in the requested transfer syntax (default: the same one, or the closest one that
can be written and whose limits fit). The header is kept as it is except for what must follow
the new pixels: a new SOP Instance UID (2.25 form; Study and Series UIDs are kept), the pixel
description, Lossy Image Compression with its method and ratio appended, and a Source Image
Sequence item that references the input instance.

Output: DIR/<new SOPInstanceUID>.dcm, one line per input on stdout (input -> output, syntax,
frames, ratio). Inputs that are not video, and files in folders that are not DICOM, are skipped,
listed on stderr and counted. A failure is named on stderr
with its reason and makes the exit status 1; no partial output file is ever left behind.

Quality (--quality) is the codec's own scale: CRF for H.264 and HEVC (0-51, lower is better;
defaults 12 and 10), the quantiser for MPEG-2 (1-31, lower is better; default 2), libjpeg
quality for baseline JPEG (1-100; default 95), NEAR for JPEG-LS near-lossless (default 2) and
the target PSNR in dB for lossy JPEG 2000 (default 50).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

SYNTAX_NAMES = ("same", "h264", "hevc", "mpeg2", "native", "rle", "jpeg", "jpeg-ls", "jpeg2000")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "transcode",
        help="re-encode DICOM video instances (new SOP Instance UID, nothing else changed)",
        description=__doc__.splitlines()[0],
        epilog="\n".join(__doc__.splitlines()[2:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", type=Path,
                        help="DICOM files or folders (searched recursively)")
    parser.add_argument("--output", "-o", required=True, type=Path, metavar="DIR",
                        help="output folder: DIR/<new SOPInstanceUID>.dcm")
    parser.add_argument("--transfer-syntax", "-t", default="same", metavar="NAME|UID",
                        help=f"{'|'.join(SYNTAX_NAMES)} or a transfer syntax UID (default: same)")
    parser.add_argument("--quality", "-q", type=float, default=None, metavar="N",
                        help="codec quality (see below; default per codec)")
    parser.add_argument("--keep-audio", action="store_true",
                        help="keep audio tracks of MP4/MPEG streams (default: dropped, a voice "
                             "identifies a person)")
    parser.add_argument("--lenient", action="store_true",
                        help="accept a frame count that differs from NumberOfFrames and decoder "
                             "warnings about damaged data (default: such inputs fail)")
    parser.add_argument("--report", type=Path, default=None, metavar="FILE",
                        help="also write a JSON report of every input")
    parser.set_defaults(func=run)


def _check_syntax(value: str) -> str | None:
    """The problem with a --transfer-syntax value, or None."""
    from pydicom.uid import UID

    from dicom_deid.video.syntaxes import MPEG_SYNTAXES, PIXEL_WRITABLE

    if value in SYNTAX_NAMES:
        return None
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)+", value):
        # Checked first: UID() of a non-UID string makes pydicom log a warning.
        return f"unknown transfer syntax {value!r} (use {', '.join(SYNTAX_NAMES)} or a UID)"
    uid = UID(value)
    if uid in MPEG_SYNTAXES or uid in PIXEL_WRITABLE:
        return None
    if uid.is_valid and uid.is_transfer_syntax:
        return f"{uid.name or uid} cannot be written by this tool"
    return f"unknown transfer syntax {value!r} (use {', '.join(SYNTAX_NAMES)} or a UID)"


def run(args: argparse.Namespace) -> int:
    problem = _check_syntax(args.transfer_syntax)
    if problem:
        print(f"dicom-deid transcode: {problem}", file=sys.stderr)
        return 2
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError
    from pydicom.uid import generate_uid

    from dicom_deid.commands.bars import RunProgress
    from dicom_deid.commands.inputs import find_inputs, output_folder_problem, print_skipped
    from dicom_deid.progress import counted
    from dicom_deid.video import VideoError, has_video, open_frames, write_frames

    problem = output_folder_problem(args.output)
    if problem:
        print(f"dicom-deid transcode: {problem}", file=sys.stderr)
        return 2
    found = find_inputs(args.inputs, exclude=(args.output,))
    files, failures = found.files, list(found.missing)
    print_skipped(found)
    for path, reason in failures:
        print(f"FAILED {path}: {reason}", file=sys.stderr)
    records: list[dict] = [{"input": str(p), "status": "failed", "reason": r} for p, r in failures]
    records += [{"input": str(p), "status": "skipped", "reason": r} for p, r in found.skipped]
    done, skipped = 0, len(found.skipped)
    progress = RunProgress(len(files), "transcoding", file_lines=False)
    for path, _explicit in progress.iterate(files):
        start = time.monotonic()
        try:
            header = dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
            failures.append((path, f"not a readable DICOM file ({exc})"))
            print(f"FAILED {path}: not a readable DICOM file ({exc})", file=sys.stderr)
            records.append({"input": str(path), "status": "failed", "reason": f"not DICOM ({exc})"})
            continue
        if not has_video(header):
            skipped += 1
            print(f"skipped {path}: not a video or multi-frame instance", file=sys.stderr)
            records.append({"input": str(path), "status": "skipped", "reason": "not video"})
            continue
        new_uid = generate_uid(prefix=None)
        out = args.output / f"{new_uid}.dcm"
        try:
            with open_frames(path, strict=not args.lenient) as reader:
                source = (str(header.SOPClassUID), str(header.SOPInstanceUID)) if "SOPInstanceUID" in header else None
                report = write_frames(
                    header, counted(reader, reader.info.frames), out, reader.info,
                    transfer_syntax=args.transfer_syntax,
                    quality=args.quality, sop_instance_uid=new_uid, source=source,
                    keep_audio=args.keep_audio,
                )
        except VideoError as exc:
            failures.append((path, exc.problem))
            print(f"FAILED {path}: {exc.problem}", file=sys.stderr)
            records.append({"input": str(path), "status": "failed", "reason": exc.problem})
            continue
        except ValueError as exc:  # a quality or syntax the chosen codec rejects
            failures.append((path, str(exc)))
            print(f"FAILED {path}: {exc}", file=sys.stderr)
            records.append({"input": str(path), "status": "failed", "reason": str(exc)})
            continue
        done += 1
        seconds = time.monotonic() - start
        ratio = f", ratio {report.compression_ratio:.1f}" if report.compression_ratio else ""
        extra = "".join(f"; {n}" for n in ([report.reason] if report.reason else []) + report.notes)
        container = f" [{report.container}]" if report.container else ""
        print(
            f"{path} -> {out.name}: {report.transfer_syntax_name}{container}, {report.frames} frames "
            f"{report.columns}x{report.rows}{ratio}, audio {report.audio}, {seconds:.1f} s{extra}"
        )
        records.append({"input": str(path), "status": "written", "seconds": round(seconds, 3), **report.to_dict()})
    if args.report:
        try:
            args.report.parent.mkdir(parents=True, exist_ok=True)
            args.report.write_text(json.dumps(records, indent=2) + "\n")
        except OSError as exc:
            failures.append((args.report, f"cannot write the report: {exc.strerror or exc}"))
            print(f"FAILED {args.report}: cannot write the report: {exc.strerror or exc}",
                  file=sys.stderr)
    print(f"{done} transcoded, {skipped} skipped, {len(failures)} failed", file=sys.stderr)
    return 1 if failures else 0
