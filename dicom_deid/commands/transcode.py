"""`dicom-deid transcode` (not built yet: its issue is open)."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("transcode", help="(not built yet)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print("dicom-deid transcode: not built yet", file=sys.stderr)
    return 2
