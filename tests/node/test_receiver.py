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


def test_a_truncated_instance_is_named_truncated(tmp_path):
    from dicom_deid.node.receiver import missing_study_problem, read_header
    from tests.helpers import REPO

    data = (REPO / "tests" / "data" / "sample" / "CT-01-01.dcm").read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:400])  # ends inside the header, before the Study Instance UID
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's note on the cut-off UID value
        assert read_header(cut)["StudyInstanceUID"] == ""
        assert "truncated" in missing_study_problem(cut)
    whole = tmp_path / "whole.dcm"
    from pydicom import dcmread

    ds = dcmread(REPO / "tests" / "data" / "sample" / "CT-01-01.dcm")
    del ds.StudyInstanceUID
    ds.save_as(whole)
    assert missing_study_problem(whole) == "no StudyInstanceUID in the header"
