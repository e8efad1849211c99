"""`dicom-deid` entry point.

Each subcommand lives in dicom_deid/commands/<name>.py and exposes
`register(subparsers) -> None`, which adds its parser and sets `func(args) -> int`.
Command modules import heavy libraries (MediaPipe, PyAV, dlib) inside their
functions so that `dicom-deid --help` and light commands start quickly.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from dicom_deid import __version__

COMMANDS = (
    "deidentify",
    "profiles",
    "transcode",
    "faces",
    "text",
    "evaluate",
    "serve",
    "status",
    "retry",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dicom-deid",
        description="De-identify DICOM studies: header profiles, faces in video, keypoint SR.",
    )
    parser.add_argument("--version", action="version", version=f"dicom-deid {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (never PHI)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"dicom_deid.commands.{name}")
        module.register(sub)
    return parser


def _quiet_native_logs() -> None:
    # MediaPipe (glog/absl) and TensorFlow Lite write INFO/WARNING lines straight to stderr,
    # burying our own messages; only their errors are of use to an operator.
    for name, level in (("GLOG_minloglevel", "2"), ("TF_CPP_MIN_LOG_LEVEL", "2")):
        os.environ.setdefault(name, level)


def main(argv: list[str] | None = None) -> int:
    _quiet_native_logs()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
