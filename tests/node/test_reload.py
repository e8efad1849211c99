"""Configuration reload: SIGHUP (and `dicom-deid reload`) to a running node."""

from __future__ import annotations

import os
import signal

import pytest
import yaml

from dicom_deid.config import parse_config
from dicom_deid.header.keys import load_key
from dicom_deid.node.reload import plan_reload
from tests.node.factory import write_study
from tests.node.peers import Node, Orthanc, echoscu, storescu, wait_for
from tests.node.test_node_network import _sop_uids


def test_plan_applies_live_settings_and_keeps_the_fixed_ones(tmp_path):
    old = parse_config({"state_dir": str(tmp_path / "a"), "listen": {"port": 11112},
                        "processing": {"workers": 2, "stable_seconds": 30}})
    new = parse_config({
        "state_dir": str(tmp_path / "b"),
        "listen": {"port": 4242, "allowed_calling_aets": ["PACS"]},
        "processing": {"workers": 4, "stable_seconds": 5},
        "forward": {"max_attempts": 3},
        "destinations": [{"name": "a", "ae_title": "A", "host": "127.0.0.1", "port": 104}],
        "rules": [{"name": "r", "match": {"modality": "XC"}, "faces": "none"}],
        "log": {"level": "DEBUG"}})
    plan = plan_reload(old, new)
    assert plan.applied == ["destinations", "forward", "rules", "default_rule",
                            "listen.allowed_calling_aets", "processing.stable_seconds"]
    assert plan.need_restart == ["listen.port", "processing.workers", "state_dir", "key_file",
                                 "audit_log", "journal_file", "log"]
    running = plan.config
    assert running.listen.port == 11112 and running.listen.allowed_calling_aets == ("PACS",)
    assert running.state_dir == tmp_path / "a" and running.log.level == "INFO"
    assert (running.processing.workers, running.processing.stable_seconds) == (2, 5.0)
    assert [d.name for d in running.destinations] == ["a"] and running.rules[0].name == "r"
    assert plan_reload(running, running).applied == []
    # The processing engine is fixed for the life of the process, like the pool's size.
    celery = parse_config({"state_dir": str(tmp_path / "a"), "processing": {
        "backend": "celery", "celery": {"broker_url": "redis://10.0.0.9:6379/1"}}})
    plan = plan_reload(old, celery)
    assert plan.need_restart == ["processing.backend", "processing.celery"]
    assert plan.config.processing.backend == "local"


@pytest.mark.network
@pytest.mark.slow
def test_sighup_applies_a_new_rule_destination_and_allowlist_and_survives_a_broken_file(
        tmp_path):
    archive = Orthanc(tmp_path / "orthanc").start()
    node = Node(tmp_path / "node", {
        "rules": [], "default_rule": None,  # to begin with: everything is quarantined
        "listen": {"allowed_calling_aets": ["PACS"]}})
    node.start()
    try:
        first = write_study(tmp_path / "first", 2)
        storescu(first.files, node.port)
        wait_for(lambda: node.states() == {"quarantined": 2}, 30, what="unrouted, quarantined")
        assert echoscu(node.port, calling="PACS2").returncode != 0

        config = dict(node.config)
        config["default_rule"] = {"profile": "basic", "faces": "none"}
        config["destinations"] = [{"name": "archive", "ae_title": archive.aet,
                                   "host": "127.0.0.1", "port": archive.dicom_port}]
        config["listen"] = {**config["listen"], "allowed_calling_aets": ["PACS", "PACS2"],
                            "port": node.port + 1}  # needs a restart: logged, not applied
        node.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        node.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "configuration reloaded" in node.log(), 30, what="the reload")
        log = node.log()
        assert "destinations" in log and "default_rule" in log
        assert "listen.port" in log and "needs a restart" in log
        assert '"event": "config-reloaded"' in node.audit()

        # The new allowlist, default rule and destination are in force.
        assert echoscu(node.port, calling="PACS2").returncode == 0
        second = write_study(tmp_path / "second", 3)
        storescu(second.files, node.port, calling="PACS2")
        key = load_key(node.state_dir / "site.key")
        wait_for(lambda: set(_sop_uids(archive)) == {key.uid(s) for s in second.sop_uids}, 60,
                 what="the study routed by the new rule to the new destination")

        # A broken file: rejected with its problems, the node runs on as it was.
        node.config_path.write_text(yaml.safe_dump(
            {**config, "destinations": [{"name": "archive", "ae_title": "X" * 17,
                                          "host": "127.0.0.1", "port": 0}]}, sort_keys=False))
        node.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: '"event": "config-rejected"' in node.audit(), 30,
                 what="the rejection")
        log = node.log()
        assert "keeps running with the previous configuration" in log
        # every problem of the file, each with its key path
        assert "destinations[0].port: must be 1..65535" in log
        assert "destinations[0].ae_title: must be an AE title" in log
        assert node.proc.poll() is None
        third = write_study(tmp_path / "third", 1)
        storescu(third.files, node.port, calling="PACS2")
        wait_for(lambda: key.uid(third.sop_uids[0]) in _sop_uids(archive), 60,
                 what="delivery on the previous configuration")

        # `dicom-deid reload` reports the same to the operator, with its exit status.
        rejected = node.cli("reload")
        assert rejected.returncode == 1 and "is invalid" in rejected.stderr
        node.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        accepted = node.cli("reload")
        assert accepted.returncode == 0, accepted.stderr
        assert "reloaded: no change" in accepted.stdout
        assert "listen.port" in accepted.stdout
    finally:
        node.stop()
        archive.stop()
    assert os.path.exists(node.state_dir / "audit.log")
