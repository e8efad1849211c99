"""Forwarding failures name their real cause (loopback peers, real pynetdicom requests)."""

from __future__ import annotations

import socket
import threading
import time

from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from dicom_deid.config import parse_config
from dicom_deid.node.senders.cstore import CStoreSender
from tests.node.peers import free_port


def _attempt(tmp_path, port: int, timeout: float = 2.0) -> str:
    from pynetdicom import AE

    config = parse_config({
        "state_dir": str(tmp_path / "st"), "forward": {"timeout": timeout},
        "destinations": [{"name": "archive", "ae_title": "ARCHIVE", "host": "127.0.0.1",
                          "port": port}]})
    sender = CStoreSender(config, config.destinations[0], stop=threading.Event())
    ae = AE(ae_title="DICOM-DEID")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(SecondaryCaptureImageStorage, [ExplicitVRLittleEndian])
    started = time.monotonic()
    assoc = ae.associate("127.0.0.1", port, ae_title="ARCHIVE")
    assert not assoc.is_established
    return sender._why_not_associated(assoc, time.monotonic() - started)


def test_refused_connection_is_named(tmp_path):
    port = free_port()  # nothing listens there
    assert _attempt(tmp_path, port) == f"connection refused by 127.0.0.1:{port}"


def test_silent_archive_is_a_timeout(tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        why = _attempt(tmp_path, port, timeout=1.0)
    assert why == f"no answer from ARCHIVE@127.0.0.1:{port} within forward.timeout (1 s)"


def test_no_accepted_presentation_context_is_named(tmp_path):
    from pynetdicom import AE

    scp = AE(ae_title="ARCHIVE")
    scp.add_supported_context(CTImageStorage)
    port = free_port()
    server = scp.start_server(("127.0.0.1", port), block=False)
    try:
        why = _attempt(tmp_path, port)
    finally:
        server.shutdown()
    assert why == (f"ARCHIVE@127.0.0.1:{port} accepted no presentation context: "
                   "Secondary Capture Image Storage in Explicit VR Little Endian")


def test_rejection_names_the_reason(tmp_path):
    from pynetdicom import AE

    scp = AE(ae_title="ARCHIVE")
    scp.add_supported_context(SecondaryCaptureImageStorage)
    scp.require_calling_aet = ["SOMEONE"]
    port = free_port()
    server = scp.start_server(("127.0.0.1", port), block=False)
    try:
        why = _attempt(tmp_path, port)
    finally:
        server.shutdown()
    assert why.startswith(f"association rejected by ARCHIVE@127.0.0.1:{port} (")
    assert "Calling AE title not recognised" in why
