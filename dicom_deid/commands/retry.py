"""`dicom-deid retry`: put quarantined instances and sends back in the queue."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "retry", help="put quarantined items back in the queue",
        description="Quarantined instances (I<n>) are de-identified again, quarantined sends "
                    "(S<n>) are delivered again; `dicom-deid status` lists the ids. Works while "
                    "the node runs; a stopped node picks them up when it starts.")
    parser.add_argument("ids", nargs="*", metavar="ID", help="I<n> or S<n>")
    parser.add_argument("--all", action="store_true", help="every quarantined item")
    parser.add_argument("--config", metavar="FILE",
                        help="the node's configuration (default: the embedded default)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dicom_deid.config import ConfigError, load_config
    from dicom_deid.node.journal import Journal, JournalError

    if bool(args.ids) == bool(args.all):
        print("dicom-deid retry: give quarantined item ids (I<n>, S<n>) or --all",
              file=sys.stderr)
        return 2
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"dicom-deid retry: {exc}", file=sys.stderr)
        return 2
    try:
        journal = Journal(config.journal_path, create=False)
        try:
            counts = journal.retry(None if args.all else args.ids)
        finally:
            journal.close()
    except JournalError as exc:
        print(f"dicom-deid retry: {exc}", file=sys.stderr)
        return 1
    print(f"back in the queue: {counts['instances']} instances, {counts['sends']} sends")
    return 0
