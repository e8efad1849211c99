"""deploy/scale-out and the worker's systemd unit, checked statically: there is no Docker
daemon or systemd here, so the compose file is parsed and what it names is checked
(commands the CLI accepts, config the node validates, volumes that line up); it is not
started."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

import yaml

from dicom_deid.cli import build_parser
from dicom_deid.config import load_config
from tests.helpers import REPO

SCALE = REPO / "deploy" / "scale-out"


def _compose() -> dict:
    return yaml.safe_load((SCALE / "compose.yaml").read_text())


def _mounts(service: dict) -> dict[str, str]:
    """container path -> source (volume name or host path, relative to the compose file)."""
    out = {}
    for item in service.get("volumes", []):
        source, target = item.split(":")[:2]
        out[target] = source
    return out


def test_compose_has_node_redis_workers_and_archive_wired_together():
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"node", "redis", "worker", "archive"}
    node, worker, redis = services["node"], services["worker"], services["redis"]

    config_path = "/etc/dicom-deid/node.yaml"
    for service in (node, worker):
        source = _mounts(service)[config_path]
        assert (SCALE / source).resolve() == (SCALE / "node.yaml").resolve()
    config = load_config(SCALE / "node.yaml")
    assert config.processing.backend == "celery"
    assert config.processing.celery.broker_url.startswith("redis://redis:")  # the service
    assert config.destinations[0].host == "archive"

    # Node and workers see the shared volume where state_dir says; the journal is on a
    # volume of the node's alone.
    state = str(config.state_dir)
    assert _mounts(node)[state] == _mounts(worker)[state] == "shared"
    journal_dir = str(config.journal_path.parent)
    assert _mounts(node)[journal_dir] != "shared" and journal_dir not in _mounts(worker)
    assert not config.journal_path.is_relative_to(config.state_dir)
    assert set(compose["volumes"]) >= {"shared", "broker", "node-journal"}

    # The worker's command is one the CLI accepts, with queues that exist.
    argv = [*worker["entrypoint"][1:], *worker["command"]]
    args = build_parser().parse_args(argv)
    assert args.command == "worker" and args.config == config_path
    assert set(args.queues.split(",")) <= {"cpu", "gpu"}
    assert worker["deploy"]["replicas"] >= 2
    assert worker["depends_on"]["node"]["condition"] == "service_healthy"

    # Redis keeps queued jobs over a restart.
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and "--appendfsync always" in command
    assert _mounts(redis)["/data"] == "broker"
    assert (SCALE / _mounts(services["archive"])["/etc/orthanc/orthanc.json"]).is_file()


def test_the_image_creates_the_shared_state_folder():
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    config = load_config(SCALE / "node.yaml")
    assert f"-m 0700 {config.state_dir}" in dockerfile
    assert f"-m 0700 {config.journal_path.parent}" in dockerfile


def test_worker_systemd_unit_runs_a_valid_worker_command():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(REPO / "deploy" / "dicom-deid-worker.service")
    argv = shlex.split(unit["Service"]["ExecStart"])
    assert Path(argv[0]).name == "dicom-deid"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "worker" and args.concurrency >= 1
    assert set(args.queues.split(",")) <= {"cpu", "gpu"}
    shared = unit["Unit"]["RequiresMountsFor"]
    assert shared in unit["Service"]["ReadWritePaths"]
    assert unit["Service"]["KillSignal"] == "SIGTERM"
