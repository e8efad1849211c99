"""The association's reactor (parked by transport.ReactorGate on the DIMSE message queue)
is woken by a primitive for it from the DUL (an A-RELEASE-RQ), not only by a DIMSE
message: before, a release was answered only when the gate's wait ran out."""

from __future__ import annotations

import queue
import threading
from types import SimpleNamespace

import pytest

from dicom_deid.node import transport
from dicom_deid.node.transport import ReactorGate, _UserQueue


@pytest.fixture
def parked(monkeypatch):
    # A wait the test would notice: only a notification can end it early.
    monkeypatch.setattr(transport, "_IDLE_WAIT", 60.0)
    assoc = SimpleNamespace(dimse=SimpleNamespace(msg_queue=queue.Queue()))
    assoc.dul = SimpleNamespace(to_user_queue=_UserQueue(assoc))  # type: ignore[attr-defined]
    gate = ReactorGate(assoc)  # type: ignore[arg-type]
    done = threading.Event()

    def reactor() -> None:
        gate.wait()
        done.set()

    thread = threading.Thread(target=reactor, daemon=True)
    thread.start()
    return assoc, done


def test_a_primitive_from_the_dul_wakes_the_parked_reactor(parked):
    assoc, done = parked
    assert not done.wait(0.3)  # parked: nothing for it yet
    assoc.dul.to_user_queue.put("A-RELEASE-RQ")
    assert done.wait(10)
    assert assoc.dul.to_user_queue.get(block=False) == "A-RELEASE-RQ"  # still a queue


def test_a_dimse_message_still_wakes_it(parked):
    assoc, done = parked
    assert not done.wait(0.3)
    assoc.dimse.msg_queue.put((1, "C-STORE-RQ"))
    assert done.wait(10)


def test_a_primitive_already_queued_is_not_waited_for(monkeypatch):
    monkeypatch.setattr(transport, "_IDLE_WAIT", 60.0)
    assoc = SimpleNamespace(dimse=SimpleNamespace(msg_queue=queue.Queue()))
    assoc.dul = SimpleNamespace(to_user_queue=_UserQueue(assoc))  # type: ignore[attr-defined]
    assoc.dul.to_user_queue.put("A-RELEASE-RQ")
    finished = threading.Event()
    threading.Thread(target=lambda: (ReactorGate(assoc).wait(), finished.set()),  # type: ignore[arg-type]
                     daemon=True).start()
    assert finished.wait(10)
