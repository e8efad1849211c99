from __future__ import annotations

import os
import random
import stat

import pytest

from dicom_deid.config import ForwardConfig, parse_config
from dicom_deid.node.forwarder import backoff_delay
from dicom_deid.node.journal import DueSend, Journal, JournalError, OutputRecord, ReceivedInstance
from dicom_deid.node.logs import redact, short_reason
from dicom_deid.node.routing import InstanceFacts, choose_rule, no_match_reason
from dicom_deid.node.senders.cstore import MAX_CONTEXTS, context_batches


def _item(study: str, sop: str, path: str, **kw) -> ReceivedInstance:
    base = dict(study_uid=study, study_token="S-" + study[-4:], sop_instance_uid=sop,
                sop_class_uid="1.2.840.10008.5.1.4.1.1.7", transfer_syntax="1.2.840.10008.1.2.1",
                modality="OT", study_description="", calling_aet="PACS", called_aet="DICOM-DEID",
                path=path, size=100)
    base.update(kw)
    return ReceivedInstance(**base)


@pytest.fixture()
def journal(tmp_path):
    j = Journal(tmp_path / "journal.sqlite")
    yield j
    j.close()


def test_journal_is_private_and_in_wal_mode(tmp_path, journal):
    mode = stat.S_IMODE(os.stat(tmp_path / "journal.sqlite").st_mode)
    assert mode == 0o600
    assert journal.query("PRAGMA journal_mode")[0][0] == "wal"
    assert journal.query("PRAGMA synchronous")[0][0] == 2  # FULL


def test_full_lifecycle_to_forwarded(journal):
    ids = [journal.record_received(_item("1.2.3.9.1", f"1.2.3.9.1.{n}", f"spool/{n}.dcm"),
                                   now=100.0)[0] for n in range(3)]
    assert journal.stable_studies(quiet_since=99.0) == []
    [study] = journal.stable_studies(quiet_since=100.0)
    route = {"rule": "default", "profile": "basic", "options": [], "faces": None,
             "destinations": ["a", "b"]}
    job = journal.start_job(study, [(i, route) for i in ids[:2]], [(ids[2], "no rule")])
    assert {r.id for r in journal.job_instances(job)} == set(ids[:2])
    assert journal.stable_studies(quiet_since=1e12) == []  # a job of this study is running
    outputs = [OutputRecord(f"outbox/x/{n}.dcm", "1.2.840.10008.5.1.4.1.1.7",
                            "1.2.840.10008.1.2.1", ("a", "b")) for n in range(2)]
    assert journal.finish_job(job, [ids[0]], [(ids[1], "broken pixel data")], outputs)
    states = dict(journal.query("SELECT id, state FROM instances"))
    assert states == {ids[0]: "done", ids[1]: "quarantined", ids[2]: "quarantined"}

    due_a = journal.due_sends("a", now=1e12)
    assert len(due_a) == 2
    journal.mark_sent([s.send_id for s in due_a])
    assert dict(journal.query("SELECT id, state FROM instances"))[ids[0]] == "done"
    due_b = journal.due_sends("b", now=1e12)
    assert journal.mark_sent([s.send_id for s in due_b]) == [job]
    assert dict(journal.query("SELECT id, state FROM instances"))[ids[0]] == "forwarded"


def test_stale_job_result_is_refused_after_recovery(journal):
    iid, _ = journal.record_received(_item("1.2.3.8", "1.2.3.8.1", "spool/a.dcm"), now=1.0)
    study = journal.stable_studies(quiet_since=2.0)[0]
    old_job = journal.start_job(study, [(iid, {"destinations": []})], [])
    assert journal.recover() == {"interrupted_jobs": 1, "requeued_instances": 1}
    new_job = journal.start_job(study, [(iid, {"destinations": []})], [])
    # The orphaned worker of the old job finishes late: its result must not count.
    assert not journal.finish_job(old_job, [iid], [], [])
    assert journal.query("SELECT state, job_id FROM instances")[0][:] == ("processing", new_job)
    assert journal.finish_job(new_job, [iid], [], [])


def test_failed_job_requeues_then_quarantines(journal):
    iid, _ = journal.record_received(_item("1.2.3.7", "1.2.3.7.1", "spool/a.dcm"), now=1.0)
    study = journal.stable_studies(quiet_since=2.0)[0]
    for attempt in range(1, 4):
        job = journal.start_job(study, [(iid, {})], [])
        quarantined = journal.fail_job(job, "worker died", max_attempts=3)
        assert quarantined == ([iid] if attempt == 3 else [])
    state, reason = journal.query("SELECT state, reason FROM instances")[0]
    assert state == "quarantined" and "3 attempts" in reason
    assert journal.retry([f"I{iid}"]) == {"instances": 1, "sends": 0}
    assert journal.query("SELECT state, attempts FROM instances")[0][:] == ("received", 0)
    with pytest.raises(JournalError, match="no quarantined instance"):
        journal.retry([f"I{iid}"])
    with pytest.raises(JournalError, match="I<number>"):
        journal.retry(["X1"])


def test_a_job_stopped_for_another_does_not_use_an_attempt(journal):
    iid, _ = journal.record_received(_item("1.2.3.7", "1.2.3.7.1", "spool/c.dcm"), now=1.0)
    study = journal.stable_studies(quiet_since=2.0)[0]
    for _ in range(5):
        job = journal.start_job(study, [(iid, {})], [])
        assert journal.fail_job(job, "stopped", max_attempts=1, count_attempt=False) == []
    assert journal.query("SELECT state, attempts FROM instances")[0][:] == ("received", 0)
    job = journal.start_job(study, [(iid, {})], [])
    assert journal.fail_job(job, "timed out", max_attempts=1) == [iid]


def test_duplicate_waiting_instance_is_superseded(journal):
    first, older = journal.record_received(_item("1.2.3.6", "1.2.3.6.1", "spool/a.dcm"))
    assert older == []
    second, older = journal.record_received(_item("1.2.3.6", "1.2.3.6.1", "spool/b.dcm"))
    assert older == [first]
    assert journal.drop_superseded(older) == ["spool/a.dcm"]
    assert [r[0] for r in journal.query("SELECT id FROM instances")] == [second]


def test_send_failures_back_off_then_quarantine_and_retry(journal):
    iid, _ = journal.record_received(_item("1.2.3.5", "1.2.3.5.1", "spool/a.dcm"), now=1.0)
    study = journal.stable_studies(quiet_since=2.0)[0]
    job = journal.start_job(study, [(iid, {})], [])
    journal.finish_job(job, [iid], [], [OutputRecord("outbox/o.dcm", "1.2", "1.2.840.10008.1.2",
                                                     ("a",))])
    [send] = journal.due_sends("a", now=1e12)
    assert journal.mark_send_failed([send.send_id], "refused", next_attempt_at=5e12,
                                    max_attempts=2) == []
    assert journal.due_sends("a", now=1e12) == []  # waiting for its back-off
    assert journal.mark_send_failed([send.send_id], "refused", 0, max_attempts=2) == [send.send_id]
    assert journal.due_sends("a", now=1e13) == []
    assert journal.retry(None) == {"instances": 0, "sends": 1}
    assert len(journal.due_sends("a", now=1e13)) == 1


def test_concurrent_associations_take_different_studies(journal):
    """Each association of a destination claims one study; the others skip it."""
    studies = []
    for n in range(2):
        iid, _ = journal.record_received(_item(f"1.2.3.7.{n}", f"1.2.3.7.{n}.1",
                                               f"spool/c{n}.dcm"), now=1.0)
        study = journal.stable_studies(quiet_since=2.0)[0]
        job = journal.start_job(study, [(iid, {})], [])
        journal.finish_job(job, [iid], [], [OutputRecord(f"outbox/c{n}.dcm", "1.2",
                                                         "1.2.840.10008.1.2", ("a",))])
        studies.append(study)
    [first] = journal.due_sends("a", now=1e12)
    [second] = journal.due_sends("a", now=1e12, exclude=(first.study_id,))
    assert {first.study_id, second.study_id} == set(studies)
    assert journal.due_sends("a", now=1e12, exclude=studies) == []
    assert journal.next_due_time("a", exclude=studies) is None
    assert journal.next_due_time("a", exclude=(first.study_id,)) is not None


def test_routing_first_match_default_and_quarantine_reason():
    config = parse_config({
        "destinations": [{"name": "a", "ae_title": "A", "host": "127.0.0.1", "port": 104}],
        "rules": [{"name": "video", "match": {"calling_aet": "PACS", "modality": ["ES", "XC"],
                                              "study_description": "endo"}, "faces": "swap"},
                  {"name": "ct", "match": {"sop_class": "CTImageStorage"}}],
        "default_rule": None,
    })
    facts = InstanceFacts("PACS", "DICOM-DEID", "es", "1.2.3", "Upper ENDOSCOPY")
    assert choose_rule(config, facts).name == "video"
    assert choose_rule(config, InstanceFacts("OTHER", "X", "ES", "1.2", "endo")) is None
    ct = InstanceFacts("X", "Y", "CT", "1.2.840.10008.5.1.4.1.1.2", "")
    assert choose_rule(config, ct).name == "ct"
    reason = no_match_reason(InstanceFacts("OTHER", "X", "ES", "1.2.840.10008.5.1.4.1.1.2",
                                           "SECRET DESCRIPTION"))
    assert "CT Image Storage" in reason and "SECRET" not in reason and "OTHER" in reason


def test_backoff_grows_caps_and_jitters():
    cfg = ForwardConfig(initial_delay=1.0, max_delay=10.0, jitter=0.2)
    rng = random.Random(1)
    delays = [backoff_delay(n, cfg, rng) for n in range(1, 8)]
    assert 0.8 <= delays[0] <= 1.2 and 1.6 <= delays[1] <= 2.4
    assert all(d <= 12.0 for d in delays) and delays[-1] >= 8.0
    assert len({round(backoff_delay(3, cfg, rng), 6) for _ in range(10)}) > 1


def test_context_batches_respect_the_128_context_limit():
    sends = [DueSend(i, i, f"p{i}", f"1.2.{i % 200}", "1.2.840.10008.1.2.1", 0, 1)
             for i in range(400)]
    batches = context_batches(sends)
    assert sum(len(b) for b in batches) == 400
    for batch in batches:
        assert len({(s.sop_class_uid, s.transfer_syntax) for s in batch}) <= MAX_CONTEXTS
    assert len(batches) == 2


def test_redaction_masks_values_and_uids_but_not_addresses():
    text = redact("failed for Zyxwv^Quin (PHIID-1) study 1.2.826.0.1.3680043.8.498.1 from "
                  "127.0.0.1", ["Zyxwv^Quin", "PHIID-1"])
    assert "Zyxwv" not in text and "PHIID-1" not in text and "1.2.826" not in text
    assert "127.0.0.1" in text
    assert "Zyxwv" not in short_reason(ValueError("bad value 'zyxwv quin'"), ["Zyxwv^Quin"])
