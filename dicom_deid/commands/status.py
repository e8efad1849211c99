"""`dicom-deid status`: queue depths, oldest waiting item, quarantine, recent failures."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "status", help="show the node's queues, quarantine and recent failures",
        description="Read the node's journal (also while it runs) and report queue depths per "
                    "state and destination, the oldest waiting item, quarantined items with "
                    "their reasons and ids (for `dicom-deid retry`), and recent failures. Exit "
                    "status 0 when the node is running, 3 when it is not, 1 when there is no "
                    "journal to read.")
    parser.add_argument("--config", metavar="FILE",
                        help="the node's configuration (default: the embedded default)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--recent", type=int, default=10, metavar="N",
                        help="recent failures to show (default 10)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dicom_deid.config import ConfigError, load_config
    from dicom_deid.node.journal import Journal, JournalError
    from dicom_deid.node.report import build_report, format_report

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"dicom-deid status: {exc}", file=sys.stderr)
        return 2
    try:
        journal = Journal(config.journal_path, create=False, readonly=True)
    except JournalError as exc:
        print(f"dicom-deid status: {exc}", file=sys.stderr)
        return 1
    try:
        report = build_report(config, journal, recent=args.recent)
    finally:
        journal.close()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
    # Like `systemctl status`: 3 when the node is not running, so that scripts and health
    # checks can rely on the exit status alone.
    return 0 if report["node"]["running"] else 3
