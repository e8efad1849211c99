"""`dicom-deid quarantine list|show|discard`: look at quarantined items and give up on one.

Output names items by journal id (I<n> instance, S<n> send), studies by pseudonym, and
reasons as the node recorded them (PHI-masked): never a patient's name, ID or UID.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "quarantine", help="list, show or discard quarantined items",
        description="list: every quarantined instance (I<n>) and send (S<n>); show ID: one "
                    "item in detail; discard ID: delete it (an instance's spooled file too), "
                    "recorded in the audit log. `dicom-deid retry` puts items back instead.")
    parser.add_argument("action", choices=("list", "show", "discard"))
    parser.add_argument("ids", nargs="*", metavar="ID", help="I<n> or S<n> (show, discard)")
    parser.add_argument("--config", metavar="FILE",
                        help="the node's configuration (default: the embedded default)")
    parser.set_defaults(func=run)


def _uid_name(uid: str | None) -> str:
    if not uid:
        return "-"
    from pydicom.uid import UID

    name = UID(uid).name
    return name if name != uid else "(private or unknown)"


def _when(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) if at else "-"


def run(args: argparse.Namespace) -> int:
    from dicom_deid.config import ConfigError, load_config
    from dicom_deid.node.journal import Journal, JournalError

    if args.action == "list" and args.ids:
        print("dicom-deid quarantine list: takes no ids", file=sys.stderr)
        return 2
    if args.action != "list" and not args.ids:
        print(f"dicom-deid quarantine {args.action}: give one or more ids (I<n>, S<n>) as "
              "`dicom-deid quarantine list` shows them", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"dicom-deid quarantine: {exc}", file=sys.stderr)
        return 2
    try:
        journal = Journal(config.journal_path, create=False,
                          readonly=args.action != "discard")
    except JournalError as exc:
        print(f"dicom-deid quarantine: {exc}", file=sys.stderr)
        return 1
    try:
        if args.action == "list":
            items = journal.quarantined()
            for item in items:
                where = f" -> {item.destination}" if item.destination is not None else ""
                print(f"{item.id:>8}  {item.study:<20}{where}  since {_when(item.since)}"
                      f"  {item.reason}")
            print(f"{len(items)} quarantined")
            return 0
        if args.action == "show":
            for item_id in args.ids:
                detail = journal.quarantined_item(item_id)
                for key in ("sop_class", "transfer_syntax"):
                    detail[key] = _uid_name(detail.get(key))
                for key in ("received_at", "since"):
                    if key in detail:
                        detail[key] = _when(detail[key])
                print("\n".join(f"{k:>16}: {v}" for k, v in detail.items()))
            return 0
        return _discard(config, journal, args.ids)
    except JournalError as exc:
        print(f"dicom-deid quarantine: {exc}", file=sys.stderr)
        return 1
    finally:
        journal.close()


def _discard(config, journal, ids: list[str]) -> int:
    from dicom_deid.node.audit import AuditLog

    audit = AuditLog(config.audit_log)
    try:
        for item_id in ids:
            detail = journal.discard(item_id)
            if detail["kind"] == "instance" and detail["file"]:
                (config.state_dir / detail["file"]).unlink(missing_ok=True)
            audit.write("discarded", item=detail["id"], study=detail["study"],
                        reason=detail["reason"], by=getpass.getuser())
            print(f"{detail['id']}: discarded ({detail['reason']})")
    finally:
        audit.close()
    return 0
