"""`dicom-deid lookup VALUE --reason TEXT --config node.yaml`: re-identify one study, audited.

For an authorised operator who must follow a de-identified study back to the PACS (a finding
to report, a retraction). VALUE is a study pseudonym from the status or audit log (S-...), a
de-identified StudyInstanceUID or a de-identified SOPInstanceUID (2.25...). The answer, the
original StudyInstanceUID to query the PACS with, is printed to the terminal only; the audit
log records who asked, when, why and for which pseudonym, never the answer. It needs read
access to the node's journal and its site key, which is what makes it an operator's command.
"""

from __future__ import annotations

import argparse
import getpass
import sys


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "lookup", help="map a pseudonym back to the original study (audited)",
        description=__doc__.splitlines()[0],
        epilog="\n".join(__doc__.splitlines()[2:]),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("value", metavar="VALUE",
                        help="S-<token>, or a de-identified Study/SOP Instance UID")
    parser.add_argument("--reason", required=True, metavar="TEXT",
                        help="why (written to the audit log, e.g. a ticket number)")
    parser.add_argument("--config", metavar="FILE",
                        help="the node's configuration (default: the embedded default)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dicom_deid.config import ConfigError, load_config
    from dicom_deid.header.keys import KeyFileError, load_key
    from dicom_deid.node.audit import AuditLog
    from dicom_deid.node.journal import Journal, JournalError

    value = args.value.strip()
    if not args.reason.strip():
        print("dicom-deid lookup: --reason must say why", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config)
        key = load_key(config.key_file, create=False)
        journal = Journal(config.journal_path, create=False, readonly=True)
    except (ConfigError, KeyFileError, JournalError) as exc:
        print(f"dicom-deid lookup: {exc}", file=sys.stderr)
        return 2
    try:
        found = _find(journal, key, value)
    finally:
        journal.close()
    audit = AuditLog(config.audit_log)
    try:
        audit.write("lookup", value=value, found=found is not None, user=getpass.getuser(),
                    reason=args.reason.strip())
    finally:
        audit.close()
    if found is None:
        print(f"dicom-deid lookup: {value} matches no study in the journal "
              f"{config.journal_path}", file=sys.stderr)
        return 1
    token, study_uid, sop_uid, received = found
    print(f"study pseudonym:           {token}")
    print(f"original StudyInstanceUID: {study_uid}")
    if sop_uid:
        print(f"original SOPInstanceUID:   {sop_uid}")
    print(f"first received:            {received}")
    print("(printed here only; the audit log records this lookup without the answer)",
          file=sys.stderr)
    return 0


def _find(journal, key, value: str) -> tuple[str, str, str | None, str] | None:
    import time

    from dicom_deid.header.keys import reencoded_uid

    def when(t: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))

    studies = journal.studies()
    for study in studies:
        if value in (study.token, key.uid(study.study_uid)):
            return study.token, study.study_uid, None, when(study.first_received_at)
    if value.startswith("2.25."):
        # A de-identified SOP Instance UID: the keyed remap of the original, or of the
        # re-encoded copy the pixel stage writes (pipeline.py).
        by_id = {study.id: study for study in studies}
        for study_id, sop in journal.instance_uids():
            if value in (key.uid(sop), reencoded_uid(key, sop)):
                found = by_id.get(study_id)
                if found is not None:
                    return found.token, found.study_uid, sop, when(found.first_received_at)
    return None
