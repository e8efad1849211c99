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
