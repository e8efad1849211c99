"""A real Redis server and real `dicom-deid worker` processes for the celery backend tests.

Redis listens on a free loopback port with its append-only file in a temporary folder
removed at stop (appendfsync always: a killed server loses no acknowledged write, as in
production, deploy/scale-out/compose.yaml).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import redis

from tests.helpers import REPO
from tests.node.peers import free_port, stop_process, wait_for


def redis_exe() -> str:
    found = shutil.which("redis-server")
    if not found:
        pytest.skip("redis-server is not installed (Debian redis-server; scripts/setup.sh "
                    "installs it)")
    return found


class Redis:
    def __init__(self) -> None:
        self.exe = redis_exe()
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="dicom-deid-redis-")
        self.dir = Path(self._dir.name)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Redis:
        log = open(self.dir / "redis.log", "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "",
             "--daemonize", "no", "--protected-mode", "yes"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for(self._up, 20, what="redis-server to start")
        return self

    def _up(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"redis-server exited: {self.log()[-2000:]}")
        try:
            with self.client() as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def client(self) -> redis.Redis:
        """A redis-py client (celery's own dependency) with short timeouts."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2,
                           socket_connect_timeout=2)


    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def log(self) -> str:
        path = self.dir / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""


class Worker:
    """`dicom-deid worker` in its own session, so that kill9 takes its pool children too
    (a host that dies)."""

    def __init__(self, root: Path, config_path: Path, name: str, queues: str = "cpu,gpu"):
        self.root = root
        self.config_path = config_path
        self.name = name
        self.queues = queues
        self.log_path = root / f"worker-{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Worker:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        mark = self.log().count(" ready.")
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dicom_deid.cli", "worker", "--config", str(self.config_path),
             "--queues", self.queues, "--concurrency", "1", "--name", f"{self.name}@%h"],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env, start_new_session=True)
        log.close()
        wait_for(lambda: self._alive() and self.log().count(" ready.") > mark, 90,
                 what=f"worker {self.name} ready")
        return self

    def _alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"worker {self.name} exited with {self.proc.returncode}:\n"
                                 f"{self.log()[-3000:]}")
        return True

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
