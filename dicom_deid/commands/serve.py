"""`dicom-deid serve`: run the DICOM node (receive, de-identify, forward)."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "serve", help="run the DICOM node: receive from PACS, de-identify, forward",
        description="Run the DICOM node. Without --config it listens on 127.0.0.1:11112 as "
                    "DICOM-DEID, keeps its state in the per-user state folder and, having no "
                    "destination, keeps de-identified studies in its outbox. "
                    "deploy/node.example.yaml documents every key.")
    parser.add_argument("--config", metavar="FILE", help="node configuration (YAML)")
    parser.add_argument("--check", action="store_true",
                        help="validate the configuration and exit")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dicom_deid.config import ConfigError, load_config
    from dicom_deid.node.service import NodeAlreadyRunning, check_profiles, run_node

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"dicom-deid serve: {exc}", file=sys.stderr)
        return 2
    problems = check_profiles(config)
    if problems:
        print(f"dicom-deid serve: {config.source}: invalid node configuration:\n  "
              + "\n  ".join(problems), file=sys.stderr)
        return 2
    if args.check:
        print(f"{config.source}: configuration is valid")
        return 0

    from dicom_deid.node.logs import setup_logging

    level = "DEBUG" if getattr(args, "verbose", False) else config.log.level
    setup_logging(level, config.log.file)
    try:
        return run_node(config)
    except NodeAlreadyRunning as exc:
        print(f"dicom-deid serve: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        # Typically the port is taken or the state folder is not writable.
        print(f"dicom-deid serve: {exc}", file=sys.stderr)
        return 1
