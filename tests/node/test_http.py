"""The node's HTTP endpoint against a running node: /healthz, /status, /metrics, the token,
and `dicom-deid status` exit codes."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from dicom_deid.config import ConfigError, parse_config
from tests.node.factory import write_study
from tests.node.peers import Node, free_port, storescu, wait_for

TOKEN = "s3cret-token-for-the-test-0123456789"


def _get(port: int, path: str, token: str | None = TOKEN) -> tuple[int, str, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in the metrics:\n{text}")


@pytest.mark.network
@pytest.mark.slow
def test_endpoints_of_a_running_node(tmp_path: Path) -> None:
    token_file = tmp_path / "http.token"
    token_file.write_text(TOKEN + "\n")
    os.chmod(token_file, 0o600)
    port = free_port()
    node = Node(tmp_path / "node", {
        "default_rule": {"profile": "basic", "faces": "none"},
        "http": {"port": port, "token_file": str(token_file)},
    }).start()
    try:
        status, _, body = _get(port, "/healthz", token=None)
        assert status == 401 and "bearer token" in body
        assert _get(port, "/healthz", token="wrong-token-0123456789")[0] == 401

        status, ctype, body = _get(port, "/healthz")
        assert status == 200 and ctype == "application/json", body
        health = json.loads(body)
        assert health["status"] == "ok"
        assert set(health["checks"]) == {"listener", "workers", "main_loop", "journal", "disk"}

        study = write_study(tmp_path / "study", 3)
        storescu(study.files, node.port)
        wait_for(lambda: node.states().get("done") == 3, 120, what="3 instances de-identified")

        status, _, body = _get(port, "/status")
        report = json.loads(body)
        assert status == 200 and report["node"]["running"] is True
        assert report["instances"]["done"] == 3
        assert study.study_uid not in body  # pseudonyms only

        status, ctype, text = _get(port, "/metrics")
        assert status == 200 and ctype.startswith("text/plain")
        assert _metric(text, "dicom_deid_instances_received_total") == 3
        assert _metric(text, "dicom_deid_instances_processed_total") == 3
        assert _metric(text, "dicom_deid_instances_quarantined") == 0
        assert _metric(text, "dicom_deid_job_duration_seconds_count") >= 1
        assert _metric(text, "dicom_deid_jobs_running") == 0
        assert 'dicom_deid_queue_depth{queue="deidentify"} 0.0' in text
        assert "dicom_deid_faces_replaced_total" in text

        assert _get(port, "/nothing")[0] == 404
        assert node.cli("status").returncode == 0
    finally:
        assert node.stop() == 0
    stopped = node.cli("status")
    assert stopped.returncode == 3 and "not running" in stopped.stdout
    # The endpoint goes with the node.
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3)


def test_off_loopback_needs_a_token(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="http.token_file: required"):
        parse_config({"http": {"host": "0.0.0.0"}})
    assert parse_config({"http": {"host": "0.0.0.0", "enabled": False}}).http.enabled is False
    short = tmp_path / "t"
    short.write_text("abc")
    with pytest.raises(ConfigError, match="at least 16"):
        parse_config({"http": {"token_file": str(short)}})


def test_disabled_endpoint_is_not_started(tmp_path: Path) -> None:
    from dicom_deid.node.http import start_http

    config = parse_config({"state_dir": str(tmp_path), "http": {"enabled": False}})
    assert start_http(config, receiver=None, scheduler=None) is None


def test_unhealthy_when_the_listener_is_down(tmp_path: Path) -> None:
    from dicom_deid.node.http import start_http
    from dicom_deid.node.journal import Journal

    Journal(tmp_path / "journal.sqlite").close()
    config = parse_config({"state_dir": str(tmp_path), "http": {"port": free_port()}})

    class Stopped:  # stands in for a receiver whose server has been shut down
        _server = None

    server = start_http(config, receiver=Stopped(), scheduler=None)
    assert server is not None
    try:
        status, _, body = _get(server.address[1], "/healthz", token=None)
    finally:
        server.stop()
    assert status == 503
    checks = json.loads(body)["checks"]
    assert checks["listener"]["ok"] is False and checks["journal"]["ok"] is True


def test_unhealthy_when_the_main_loop_stalls(tmp_path: Path) -> None:
    from dicom_deid.node.http import StatusServer
    from dicom_deid.node.journal import Journal

    Journal(tmp_path / "journal.sqlite").close()
    config = parse_config({"state_dir": str(tmp_path), "http": {"port": free_port()}})
    server = StatusServer(config).start()
    try:
        server.beat()
        assert _get(server.address[1], "/healthz", token=None)[0] == 200
        server.beat(time.monotonic() - StatusServer.LOOP_STALL_S - 5)  # last turn long ago
        status, _, body = _get(server.address[1], "/healthz", token=None)
    finally:
        server.stop()
    assert status == 503
    assert "has not turned" in json.loads(body)["checks"]["main_loop"]["detail"]
