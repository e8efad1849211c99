"""processing.backend celery: a real Redis (loopback, temporary folder), real `dicom-deid
worker` processes, the node as a subprocess, Orthanc as the archive.

Header-only routing (`faces: none`) keeps the jobs short; what is tested is where a job
runs and that nothing is lost or delivered twice when a worker host or the broker dies.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import yaml
from pydicom import dcmread

from dicom_deid.config import ConfigError, parse_config
from dicom_deid.header.keys import load_key
from tests.helpers import shared_data
from tests.node.celery_peers import Redis, Worker, redis_exe
from tests.node.factory import write_study
from tests.node.peers import Node, Orthanc, storescu, wait_for
from tests.node.test_node_network import _assert_no_phi, _kill_and_resume, _phi_values, _sop_uids

FAST = {"default_rule": {"profile": "basic", "faces": "none"}}


# ------------------------------------------------------------------ configuration


def test_celery_settings_are_validated_with_their_key_paths(tmp_path):
    config = parse_config({"state_dir": str(tmp_path), "processing": {
        "backend": "celery", "job_timeout": 60,
        "celery": {"broker_url": "redis://:pw@10.0.0.5:6379/2", "visibility_timeout": 120}},
        "rules": [{"name": "v", "queue": "gpu"}]})
    assert config.processing.celery.max_in_flight == 64
    assert config.rules[0].queue == "gpu"
    assert config.journal_path == tmp_path / "journal.sqlite"
    # journal_file off the shared state_dir: the node opens (and creates) it there.
    from dicom_deid.node.journal import Journal

    local = parse_config({"state_dir": str(tmp_path / "share"), "journal_file": "node/j.sqlite"},
                         base_dir=tmp_path)
    assert local.journal_path == tmp_path / "node" / "j.sqlite"
    Journal(local.journal_path).close()
    assert local.journal_path.is_file() and not (tmp_path / "share" / "journal.sqlite").exists()
    with pytest.raises(ConfigError) as caught:
        parse_config({"state_dir": str(tmp_path), "processing": {
            "backend": "celery", "job_timeout": 600,
            "celery": {"broker_url": "amqp://guest:secret@mq/", "visibility_timeout": 300}},
            "rules": [{"name": "v", "queue": "gpu room"}], "journal_file": "/var/j.sqlite"})
    text = str(caught.value)
    assert "processing.celery.broker_url: must be a redis:// or rediss:// URL" in text
    assert "secret" not in text  # the password in a rejected URL is not echoed
    assert "rules[0].queue" in text
    with pytest.raises(ConfigError, match=r"processing.celery.visibility_timeout: must exceed "
                       r"processing.job_timeout \(600 s\)"):
        parse_config({"state_dir": str(tmp_path), "processing": {
            "backend": "celery", "job_timeout": 600, "celery": {"visibility_timeout": 300}}})
    # The local backend ignores the celery section.
    parse_config({"state_dir": str(tmp_path), "processing": {
        "job_timeout": 600, "celery": {"visibility_timeout": 300}}})


def test_a_study_goes_to_the_queue_of_its_capability(tmp_path):
    from dicom_deid.node.audit import AuditLog
    from dicom_deid.node.celery_scheduler import CeleryScheduler

    config = parse_config({"state_dir": str(tmp_path), "processing": {"backend": "celery"},
                           "rules": [{"name": "video", "match": {"modality": "XC"}},
                                     {"name": "forced", "match": {"modality": "ES"},
                                      "faces": "none", "queue": "gpu"}],
                           "default_rule": {"faces": "none"}})
    scheduler = CeleryScheduler(config, AuditLog(tmp_path / "audit.log"))
    try:
        route = {"profile": "basic", "options": [], "faces": None}
        # faces absent: the profile's default method (basic replaces faces) -> gpu
        assert scheduler._queue_of([{**route, "rule": "video"}]) == "dicom-deid.gpu"
        assert scheduler._queue_of([{**route, "rule": "default", "faces": "none"}]) \
            == "dicom-deid.cpu"
        assert scheduler._queue_of([{**route, "rule": "forced", "faces": "none"}]) \
            == "dicom-deid.gpu"
        # One route needing a GPU takes the whole study there.
        assert scheduler._queue_of([{**route, "rule": "default", "faces": "none"},
                                    {**route, "rule": "video", "faces": "swap"}]) \
            == "dicom-deid.gpu"
    finally:
        scheduler.shutdown()


def test_worker_refuses_a_config_without_the_celery_backend_or_shared_state(tmp_path):
    import subprocess
    import sys

    from tests.helpers import REPO

    path = tmp_path / "node.yaml"
    path.write_text(json.dumps({"state_dir": str(tmp_path / "nowhere")}))
    run = subprocess.run([sys.executable, "-m", "dicom_deid.cli", "worker", "--config",
                          str(path), "--queues", "cpu,tpu"], capture_output=True, text=True,
                         cwd=REPO, timeout=60)
    assert run.returncode == 2
    assert "processing.backend: must be celery" in run.stderr
    assert "--queues: tpu" in run.stderr
    assert "no spool folder" in run.stderr


# ------------------------------------------------------------------ with real peers

@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    redis_exe()  # skip before starting Orthanc when Redis is missing
    orthanc = Orthanc(tmp_path_factory.mktemp("orthanc")).start()
    yield orthanc
    orthanc.stop()


@pytest.fixture()
def clean_archive(archive):
    archive.clear()
    return archive


@pytest.fixture()
def redis():
    server = Redis().start()
    yield server
    server.close()


def _node(tmp_path, archive: Orthanc, redis: Redis, visibility: float = 600,
          **settings) -> Node:
    processing = {"backend": "celery", "job_timeout": 0,
                  "celery": {"broker_url": redis.url, "visibility_timeout": visibility}}
    processing.update(settings.pop("processing", {}))
    return Node(tmp_path / "node", {
        **FAST, "destinations": [{"name": "archive", "ae_title": archive.aet,
                                  "host": "127.0.0.1", "port": archive.dicom_port}],
        "processing": processing, **settings})


@pytest.mark.network
@pytest.mark.slow
def test_studies_go_through_workers_of_their_queue_to_the_archive(tmp_path, clean_archive,
                                                                  redis):
    archive = clean_archive
    node = _node(tmp_path, archive, redis, rules=[
        {"name": "gpu-only", "match": {"calling_aet": "PACS2"}, "faces": "none",
         "queue": "gpu"}]).start()
    cpu = Worker(tmp_path, node.config_path, "cpu1", queues="cpu").start()
    gpu = Worker(tmp_path, node.config_path, "gpu1", queues="gpu")
    try:
        header_only = write_study(tmp_path / "a", 4)
        for_gpu = write_study(tmp_path / "b", 3)
        storescu(header_only.files, node.port)
        storescu(for_gpu.files, node.port, calling="PACS2")
        key = load_key(node.state_dir / "site.key")
        wanted_a = {key.uid(s) for s in header_only.sop_uids}
        wait_for(lambda: set(_sop_uids(archive)) == wanted_a, 60,
                 what="the cpu study in the archive")
        # The gpu study waits on its queue: no worker takes gpu yet.
        time.sleep(2)
        assert node.states().get("processing") == len(for_gpu.files)
        gpu.start()
        wanted = wanted_a | {key.uid(s) for s in for_gpu.sop_uids}
        wait_for(lambda: set(_sop_uids(archive)) == wanted, 60,
                 what="the gpu study in the archive")
        assert len(archive.instances()) == len(wanted)
        wait_for(lambda: node.states() == {"forwarded": len(wanted)}, 20,
                 what="all instances forwarded")
        audit = node.audit()
        # The node writes the workers' audit events: one per job.
        assert audit.count('"event": "deidentified"') == 2
        assert node.journal("SELECT COUNT(*) FROM jobs WHERE state = 'done'") == [(2,)]
        health = json.loads(node.cli("status", "--json").stdout)
        assert health["instances"]["forwarded"] == len(wanted)
    finally:
        cpu.stop()
        gpu.stop()
        node.stop()
    phi = _phi_values(header_only.files + for_gpu.files)
    for where, text in (("node log", node.log()), ("cpu worker log", cpu.log()),
                        ("gpu worker log", gpu.log()), ("audit log", audit)):
        _assert_no_phi(text, phi, where)
    # Nothing of the jobs is left on the broker: results are removed once recorded.
    with redis.client() as client:
        assert client.keys("celery-task-meta-*") == []


@pytest.mark.network
@pytest.mark.slow
def test_worker_host_killed_mid_job_the_job_completes_on_another_once(tmp_path, clean_archive,
                                                                      redis):
    archive = clean_archive
    study = write_study(tmp_path / "study", 120, size=32)
    node = _node(tmp_path, archive, redis, visibility=5).start()
    first = Worker(tmp_path, node.config_path, "first").start()
    second = Worker(tmp_path, node.config_path, "second")
    try:
        storescu(study.files, node.port)
        outbox = node.state_dir / "outbox"
        wait_for(lambda: any(outbox.rglob("*.dcm")), 120, interval=0.05,
                 what="the job's first output")
        first.kill9()  # the whole host: main process and its pool child
        assert node.states().get("processing") == len(study.files), \
            "the job finished before the kill: the study is too small for this machine"
        written = len(list(outbox.rglob("*.dcm")))
        assert written < len(study.files)
        second.start()
        key = load_key(node.state_dir / "site.key")
        expected = {key.uid(s) for s in study.sop_uids}
        wait_for(lambda: set(_sop_uids(archive)) == expected, 120,
                 what="the whole study in the archive")
        wait_for(lambda: node.states() == {"forwarded": len(study.files)}, 30,
                 what="the journal to settle")
        assert len(archive.instances()) == len(study.files)  # each instance exactly once
        # Redelivered by the broker (visibility timeout), not failed and re-dispatched by
        # the node: one job, done by the second worker.
        assert node.journal("SELECT state FROM jobs") == [("done",)]
        [(job,)] = node.journal("SELECT id FROM jobs")
        received = f"dicom_deid.study_job[job-{job}-"
        assert received in first.log() and received in second.log()
        sent = node.journal("SELECT COUNT(*) FROM sends WHERE state = 'sent'")
        assert sent == [(len(study.files),)]
        [study_uid] = {t["StudyInstanceUID"] for t in archive.all_tags()}
        assert study_uid == key.uid(study.study_uid)
    finally:
        second.stop()
        node.stop()


@pytest.mark.network
@pytest.mark.slow
def test_broker_restart_loses_no_job(tmp_path, clean_archive, redis):
    archive = clean_archive
    node = _node(tmp_path, archive, redis).start()
    worker = Worker(tmp_path, node.config_path, "w")
    try:
        studies = [write_study(tmp_path / f"s{i}", 3) for i in range(2)]
        for s in studies:
            storescu(s.files, node.port)
        # Both jobs published, none taken (no worker yet); then the broker dies.
        wait_for(lambda: node.states() == {"processing": 6}, 60, what="both jobs queued")
        with redis.client() as client:
            assert client.llen("dicom-deid.cpu") == 2
        redis.kill9()
        late = write_study(tmp_path / "late", 2)  # arrives while the broker is down
        storescu(late.files, node.port)
        wait_for(lambda: "broker is unreachable" in node.log()
                 or "results unreadable" in node.log(), 60, what="the node to see the outage")
        redis.start()  # same port, same append-only file
        worker.start()
        key = load_key(node.state_dir / "site.key")
        expected = {key.uid(s) for st in (*studies, late) for s in st.sop_uids}
        wait_for(lambda: set(_sop_uids(archive)) == expected, 120,
                 what="every study in the archive")
        wait_for(lambda: node.states() == {"forwarded": len(expected)}, 30,
                 what="the journal to settle")
        assert len(archive.instances()) == len(expected)
        # The two queued jobs survived the restart: done as first published.
        done = node.journal("SELECT id FROM jobs WHERE state = 'done' ORDER BY id")
        assert [j for (j,) in done][:2] == [1, 2]
    finally:
        worker.stop()
        node.stop()


@pytest.mark.network
@pytest.mark.slow
def test_node_killed_mid_study_resumes_with_the_celery_backend(tmp_path, clean_archive, redis):
    """The local backend's kill -9 test (receiving, then processing) on the celery backend."""
    study = write_study(tmp_path / "study", 40, size=64)
    node = _node(tmp_path, clean_archive, redis).start()
    worker = Worker(tmp_path, node.config_path, "w").start()
    try:
        _kill_and_resume(node, study, clean_archive)
    finally:
        worker.stop()
        node.stop()


def test_the_job_message_carries_no_phi(tmp_path):
    """What goes to the broker: ids, random spool paths and the route, no UID or name."""
    from dicom_deid.node.audit import AuditLog
    from dicom_deid.node.celery_scheduler import CeleryScheduler
    from dicom_deid.node.journal import Journal, ReceivedInstance

    study = write_study(tmp_path / "s", 2)
    config = parse_config({"state_dir": str(tmp_path / "state"),
                           "processing": {"backend": "celery"}, **FAST})
    (tmp_path / "state").mkdir()
    journal = Journal(config.journal_path)
    for i, f in enumerate(study.files):
        ds = dcmread(f, stop_before_pixels=True)
        relative = f"spool/ab/{i}.dcm"
        (tmp_path / "state" / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "state" / relative).write_bytes(f.read_bytes())
        journal.record_received(ReceivedInstance(
            study_uid=str(ds.StudyInstanceUID), study_token="S-test",
            sop_instance_uid=str(ds.SOPInstanceUID), sop_class_uid=str(ds.SOPClassUID),
            transfer_syntax="1.2.840.10008.1.2.1", modality="OT",
            study_description=str(ds.StudyDescription), calling_aet="PACS",
            called_aet="DICOM-DEID", path=relative, size=f.stat().st_size))
    journal.close()
    sent: list = []
    scheduler = CeleryScheduler(config, AuditLog(tmp_path / "audit.log"))

    class App:  # records the publication: this test needs no broker, only the message
        def send_task(self, name, args, **options):
            sent.append((name, args, options))
            return object()

        def close(self) -> None:
            pass

    scheduler._app = App()
    try:
        [study_id] = scheduler.journal.stable_studies(time.time() + 1)
        assert scheduler._dispatch(study_id)
    finally:
        scheduler.shutdown()
    [(name, args, options)] = sent
    assert name == "dicom_deid.study_job" and options["queue"] == "dicom-deid.cpu"
    message = json.dumps(args)
    _assert_no_phi(message, _phi_values(study.files), "the job message")
    assert {tuple(sorted(r)) for r in args[2]} == {("id", "path", "route")}


@pytest.mark.network
@pytest.mark.slow
def test_a_job_past_job_timeout_is_stopped_quarantined_and_retried(tmp_path, clean_archive,
                                                                    redis):
    """The local backend's job_timeout test on a worker: a face video against a 1 s limit
    is stopped by the worker's time limit and quarantined (max_attempts 1) with the same
    reason; with a realistic limit, `retry` sends it through the gpu queue's worker."""
    archive = clean_archive
    video = shared_data("dicom", "video", "C_jpeg_baseline_multiframe_360x288.dcm")
    node = _node(tmp_path, archive, redis, visibility=30,
                 default_rule={"profile": "basic"},
                 processing={"job_timeout": 1, "max_attempts": 1})
    node.start()
    worker = Worker(tmp_path, node.config_path, "w", queues="gpu").start()
    try:
        storescu([video], node.port)
        wait_for(lambda: node.states().get("quarantined"), 180, interval=0.5,
                 what="the overdue job quarantined")
        [(reason,)] = node.journal("SELECT reason FROM instances WHERE state = 'quarantined'")
        assert "job_timeout (1 s)" in reason
        assert _sop_uids(archive) == []
        node.stop()
        node.config["processing"]["job_timeout"] = 600
        node.config["processing"]["celery"]["visibility_timeout"] = 900
        node.config_path.write_text(yaml.safe_dump(node.config, sort_keys=False))
        node.start()
        retried = node.cli("retry", "--all")
        assert retried.returncode == 0 and "1 instances" in retried.stdout
        wait_for(lambda: node.states() == {"forwarded": 1}, 300, interval=1.0,
                 what="the video delivered after retry")
        key = load_key(node.state_dir / "site.key")
        sop = str(dcmread(video, stop_before_pixels=True).SOPInstanceUID)
        assert key.uid(sop) in _sop_uids(archive)
        assert '"faces": "profile default"' in node.audit()
    finally:
        worker.stop()
        node.stop()


def _pool_children(worker: Worker) -> list[int]:
    assert worker.proc is not None
    pid = worker.proc.pid
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


@pytest.mark.network
@pytest.mark.slow
def test_a_worker_process_that_dies_uses_an_attempt_and_the_study_is_retried(
        tmp_path, clean_archive, redis):
    """Only the pool process dies (a crash in a decoder): the job comes back as failed, as
    a dead local worker does, uses one of max_attempts, and the study's next job, after
    the retry delay, delivers it; the archive gets each instance once."""
    archive = clean_archive
    study = write_study(tmp_path / "study", 120, size=32)
    node = _node(tmp_path, archive, redis, processing={"max_attempts": 2}).start()
    worker = Worker(tmp_path, node.config_path, "w").start()
    try:
        storescu(study.files, node.port)
        outbox = node.state_dir / "outbox"
        wait_for(lambda: any(outbox.rglob("*.dcm")), 120, interval=0.05,
                 what="the job's first output")
        [child] = _pool_children(worker)
        os.kill(child, signal.SIGKILL)
        key = load_key(node.state_dir / "site.key")
        expected = {key.uid(s) for s in study.sop_uids}
        wait_for(lambda: set(_sop_uids(archive)) == expected, 180,
                 what="the whole study in the archive")
        wait_for(lambda: node.states() == {"forwarded": len(study.files)}, 30,
                 what="the journal to settle")
        assert len(archive.instances()) == len(study.files)
        jobs = node.journal("SELECT state, detail FROM jobs ORDER BY id")
        assert jobs == [("failed", "the worker process died while de-identifying"),
                        ("done", None)]
        assert node.journal("SELECT DISTINCT attempts FROM instances") == [(1,)]
        with redis.client() as client:  # failure results too
            assert client.keys("celery-task-meta-*") == []
    finally:
        worker.stop()
        node.stop()


@pytest.mark.network
@pytest.mark.slow
def test_a_bad_instance_is_quarantined_by_the_worker_and_a_late_one_joins_the_study(
        tmp_path, clean_archive, redis):
    """The local backend's quarantine and late-instance cases through a worker: the reason
    and the quarantined copy come back through the shared folder and the result, and a later
    job of the same study writes into the same de-identified study."""
    from pydicom.uid import generate_uid

    from tests.node.factory import PHI, make_instance

    archive = clean_archive
    good = write_study(tmp_path / "good", 2)
    first = dcmread(good.files[0], stop_before_pixels=True)
    no_series = make_instance(good.study_uid, generate_uid(), generate_uid(), 3)
    del no_series.SeriesInstanceUID
    no_series.save_as(tmp_path / "no_series.dcm", enforce_file_format=True)
    node = _node(tmp_path, archive, redis).start()
    worker = Worker(tmp_path, node.config_path, "w").start()
    try:
        storescu([*good.files, tmp_path / "no_series.dcm"], node.port)
        key = load_key(node.state_dir / "site.key")
        wait_for(lambda: node.states() == {"forwarded": 2, "quarantined": 1}, 60,
                 what="two forwarded, one quarantined")
        [(reason,)] = node.journal("SELECT reason FROM instances WHERE state = 'quarantined'")
        assert "SeriesInstanceUID" in reason
        copies = list((node.state_dir / "quarantine").rglob("*.reason.txt"))
        assert len(copies) == 1
        late_uid = generate_uid()
        late = make_instance(good.study_uid, str(first.SeriesInstanceUID), late_uid, 4)
        late.save_as(tmp_path / "late.dcm", enforce_file_format=True)
        storescu([tmp_path / "late.dcm"], node.port)
        wait_for(lambda: len(archive.instances()) == 3, 60, what="the late instance archived")
        tags = archive.all_tags()
        assert {t["SOPInstanceUID"] for t in tags} == {key.uid(u)
                                                        for u in [*good.sop_uids, late_uid]}
        assert {t["StudyInstanceUID"] for t in tags} == {key.uid(good.study_uid)}
        assert node.journal("SELECT COUNT(*) FROM jobs WHERE state = 'done'") == [(2,)]
    finally:
        worker.stop()
        node.stop()
    phi = set(PHI.values()) - {"OT"}
    _assert_no_phi(node.log() + node.audit() + worker.log(), phi, "logs")
