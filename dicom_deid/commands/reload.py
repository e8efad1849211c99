"""`dicom-deid reload`: make the running node re-read its configuration file (SIGHUP).

The node's pid comes from the lock it holds on its state folder, so this works for the
node using the given configuration's state folder, as the same user. The outcome is read
back from the audit log, where the node records every reload (accepted or rejected).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "reload", help="make the running node re-read its configuration",
        description="Sends SIGHUP to the node that holds the configuration's state folder "
                    "and reports what it did: an invalid file changes nothing (the node runs "
                    "on with its configuration), a valid one is applied where it can be "
                    "without a restart, and the settings that need one are named.")
    parser.add_argument("--config", metavar="FILE", required=True,
                        help="the node's configuration file (as given to `serve`)")
    parser.add_argument("--wait", type=float, default=15.0, metavar="SECONDS",
                        help="how long to wait for the node's answer (default 15)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dicom_deid.config import ConfigError, load_config
    from dicom_deid.node.service import node_running

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        # Say so here too; the node would reject it the same way and run on.
        print(f"dicom-deid reload: not sent, the file is invalid: {exc}", file=sys.stderr)
        return 1
    pid = node_running(config.state_dir)
    if pid is None or pid <= 0:
        print(f"dicom-deid reload: no node is running with state folder {config.state_dir}",
              file=sys.stderr)
        return 1
    audit = config.audit_log
    offset = audit.stat().st_size if audit.exists() else 0
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        print(f"dicom-deid reload: cannot signal the node (pid {pid}): {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        event = _reload_event(audit, offset)
        if event is not None:
            return _report(event)
        time.sleep(0.2)
    print(f"dicom-deid reload: SIGHUP sent to pid {pid}; no answer in the audit log within "
          f"{args.wait:g} s (see the node's log)", file=sys.stderr)
    return 1


def _reload_event(audit, offset: int) -> dict | None:
    try:
        with open(audit, "rb") as handle:
            handle.seek(offset)
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") in ("config-reloaded", "config-rejected"):
            return event
    return None


def _report(event: dict) -> int:
    if event["event"] == "config-rejected":
        print("the node rejected the file and runs on with its previous configuration:",
              file=sys.stderr)
        for problem in event.get("problems", []):
            print(f"  {problem}", file=sys.stderr)
        return 1
    applied = event.get("applied") or []
    print(f"reloaded: {', '.join(applied) if applied else 'no change'}")
    restart = event.get("need_restart") or []
    if restart:
        print(f"changed but kept until a restart: {', '.join(restart)}")
    return 0
