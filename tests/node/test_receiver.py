from __future__ import annotations

import os
import time

from dicom_deid.config import parse_config
from dicom_deid.header.keys import load_key
from dicom_deid.node.audit import AuditLog
from dicom_deid.node.receiver import Receiver
from dicom_deid.node.service import ensure_node_key


def test_abandoned_partial_receptions_are_swept(tmp_path):
    config = parse_config({"state_dir": str(tmp_path / "st"),
                           "listen": {"network_timeout": 5, "dimse_timeout": 5}})
    ensure_node_key(config.key_file)
    audit = AuditLog(config.audit_log)
    receiver = Receiver(config, load_key(config.key_file), audit)
    try:
        old = receiver.spool.incoming / "tmpold.dcm"
        fresh = receiver.spool.incoming / "tmpfresh.dcm"
        old.write_bytes(b"partial")
        fresh.write_bytes(b"partial")
        past = time.time() - 60  # older than twice the timeouts: no live association
        os.utime(old, (past, past))
        assert receiver.sweep_incoming() == 1
        assert not old.exists() and fresh.exists()
    finally:
        receiver.journal.close()
        audit.close()


def test_group_commit_gives_each_concurrent_instance_its_own_durable_row(tmp_path):
    import threading

    from dicom_deid.node.commit import GroupCommit
    from dicom_deid.node.journal import ReceivedInstance

    config = parse_config({"state_dir": str(tmp_path / "st")})
    ensure_node_key(config.key_file)
    audit = AuditLog(config.audit_log)
    receiver = Receiver(config, load_key(config.key_file), audit)
    group = GroupCommit(receiver.journal)
    results: dict[int, tuple[int, list[int]]] = {}

    def one(n: int) -> None:
        item = ReceivedInstance(
            study_uid=f"1.2.3.{n % 3}", study_token=f"S-{n % 3}", sop_instance_uid=f"1.2.4.{n}",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.7", transfer_syntax="1.2.840.10008.1.2",
            modality="OT", study_description="", calling_aet="PACS", called_aet="DICOM-DEID",
            path=f"spool/00/{n}.dcm", size=1)
        results[n] = group.record(item)

    try:
        threads = [threading.Thread(target=one, args=(n,)) for n in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        ids = [results[n][0] for n in range(24)]
        assert len(set(ids)) == 24
        rows = receiver.journal.query("SELECT id, path FROM instances")
        assert dict(rows) == {results[n][0]: f"spool/00/{n}.dcm"
                                                      for n in range(24)}
    finally:
        receiver.journal.close()
        audit.close()


def test_spooled_files_no_row_names_are_swept(tmp_path):
    from dicom_deid.node.spool import Spool

    spool = Spool(tmp_path)
    kept = tmp_path / "spool" / "ab" / "kept.dcm"
    orphan = tmp_path / "spool" / "cd" / "orphan.dcm"
    partial = spool.incoming / "tmp.dcm"
    for path in (kept, orphan, partial):
        path.write_bytes(b"x")
    assert spool.sweep_orphans({"spool/ab/kept.dcm"}) == 1
    assert kept.exists() and not orphan.exists() and partial.exists()


def test_per_connection_contexts_are_independent_copies():
    """pynetdicom deep-copies the server's contexts for each connection; our cheap copy
    must still be a copy: negotiation on one connection cannot change the server's list."""
    import copy

    from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts
    from pynetdicom.presentation import PresentationContext

    from dicom_deid.node.transport import _SupportedContexts

    contexts = []
    for n, cx in enumerate(AllStoragePresentationContexts[:5]):
        context = PresentationContext()
        context.context_id = 2 * n + 1
        context.abstract_syntax = cx.abstract_syntax
        context.transfer_syntax = list(ALL_TRANSFER_SYNTAXES)
        contexts.append(context)
    server = _SupportedContexts(contexts)
    mine = copy.deepcopy(server)
    assert type(mine) is list and len(mine) == len(server)
    for original, twin in zip(server, mine, strict=True):
        assert twin is not original
        assert twin.abstract_syntax == original.abstract_syntax
        assert twin.context_id == original.context_id
        assert twin.transfer_syntax == original.transfer_syntax
    mine[0].transfer_syntax = [ALL_TRANSFER_SYNTAXES[0]]  # what negotiation does
    mine[1]._transfer_syntax.clear()
    mine[2].result = 0
    mine[3].context_id = 99
    assert server[0].transfer_syntax == list(ALL_TRANSFER_SYNTAXES)
    assert server[1].transfer_syntax == list(ALL_TRANSFER_SYNTAXES)
    assert server[2].result is None and server[3].context_id == 7
