"""Real DICOM peers for the node tests: the node as a subprocess, DCMTK, Orthanc.

Everything listens on free loopback ports and keeps its files under a temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import REPO, require_tool

# storescu proposes only uncompressed syntaxes unless told; one flag per compressed syntax.
STORESCU_TS_FLAGS = {
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.100": "-xm",
    "1.2.840.10008.1.2.4.101": "-xh",
    "1.2.840.10008.1.2.4.102": "-xn",
    "1.2.840.10008.1.2.4.103": "-xl",
    "1.2.840.10008.1.2.4.104": "-x2",
    "1.2.840.10008.1.2.4.105": "-x3",
    "1.2.840.10008.1.2.4.106": "-xo",
    "1.2.840.10008.1.2.4.107": "-x4",
    "1.2.840.10008.1.2.4.108": "-x5",
    "1.2.840.10008.1.2.5": "-xr",
    "1.2.840.10008.1.2.1.99": "-xd",
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.2,
             what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def stop_process(proc: subprocess.Popen | None) -> None:
    """SIGTERM, then SIGKILL after 15 s."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def transfer_syntax(path: Path) -> str:
    from pydicom.filereader import read_file_meta_info

    return str(read_file_meta_info(path).TransferSyntaxUID)


def storescu(files: Iterable[Path], port: int, calling: str = "PACS", called: str = "DICOM-DEID",
             timeout: float = 120, check: bool = True,
             extra: Sequence[str] = ()) -> subprocess.CompletedProcess:
    """Send files with DCMTK storescu, one association per transfer syntax group."""
    exe = require_tool("storescu")
    groups: dict[str, list[str]] = {}
    for f in files:
        groups.setdefault(STORESCU_TS_FLAGS.get(transfer_syntax(Path(f)), ""), []).append(str(f))
    out = ""
    rc = 0
    for flag, paths in groups.items():
        cmd = [exe, "-v", "-R", *extra, "-aet", calling, "-aec", called]
        if flag:
            cmd.append(flag)
        cmd += ["127.0.0.1", str(port), *paths]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        out += proc.stdout + proc.stderr
        rc = rc or proc.returncode
        if check and (proc.returncode != 0 or " E: " in f" {proc.stderr}" or "Store Failed" in out):
            raise AssertionError(f"storescu failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return subprocess.CompletedProcess(["storescu"], rc, out, "")


def echoscu(port: int, calling: str = "PACS", called: str = "DICOM-DEID",
            extra: Sequence[str] = ()) -> subprocess.CompletedProcess:
    exe = require_tool("echoscu")
    return subprocess.run([exe, *extra, "-aet", calling, "-aec", called, "127.0.0.1", str(port)],
                          capture_output=True, text=True, timeout=30)


@dataclass(frozen=True)
class Certificates:
    """A test CA and a certificate it signed for 127.0.0.1 / localhost (PEM files)."""

    ca: Path
    cert: Path
    key: Path


def make_certificates(folder: Path) -> Certificates:
    """A throw-away CA and server certificate, made with the openssl command."""
    exe = require_tool("openssl")
    folder.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        proc = subprocess.run([exe, *args], capture_output=True, text=True, cwd=folder,
                              timeout=60)
        assert proc.returncode == 0, proc.stderr

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "2", "-subj", "/CN=dicom-deid test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "node.key", "-out", "node.csr",
        "-subj", "/CN=localhost")
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "node.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "node.crt", "-days", "2", "-extfile", "san.cnf")
    return Certificates(folder / "ca.crt", folder / "node.crt", folder / "node.key")


def orthanc_exe() -> str:
    """Orthanc lives in /usr/sbin, which a non-root PATH may lack."""
    found = shutil.which("Orthanc") or shutil.which("/usr/sbin/Orthanc")
    if not found:
        pytest.skip("Orthanc is not installed (bash .ci/run installs it)")
    return found


DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


class Orthanc:
    """A private Orthanc: loopback ports, storage in a temporary folder, no auth unless
    `users` is given (HTTP basic, also for the REST calls below); `dicomweb` loads the
    DICOMweb plugin (Debian orthanc-dicomweb) at /dicom-web."""

    def __init__(self, root: Path, aet: str = "ARCHIVE", tls: Certificates | None = None,
                 dicomweb: bool = False, users: dict[str, str] | None = None):
        self.exe = orthanc_exe()
        if dicomweb and not DICOMWEB_PLUGIN.exists():
            pytest.skip(f"Orthanc's DICOMweb plugin is not installed ({DICOMWEB_PLUGIN}; "
                        "scripts/setup.sh installs orthanc-dicomweb)")
        self.users = dict(users or {})
        self.root = root
        self.aet = aet
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.proc: subprocess.Popen | None = None
        root.mkdir(parents=True, exist_ok=True)
        self.config_path = root / "orthanc.json"
        settings: dict[str, Any] = {}
        if tls is not None:  # DICOM over TLS only; no client certificate required
            settings = {"DicomTlsEnabled": True, "DicomTlsCertificate": str(tls.cert),
                        "DicomTlsPrivateKey": str(tls.key),
                        "DicomTlsTrustedCertificates": str(tls.ca),
                        "DicomTlsRemoteCertificateRequired": False}
        self.config_path.write_text(json.dumps({
            "Name": "test-archive",
            "StorageDirectory": str(root / "storage"),
            "IndexDirectory": str(root / "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": self.users,
            "DicomCheckCalledAet": True,
            "UnknownSopClassAccepted": True,
            "Plugins": [str(DICOMWEB_PLUGIN)] if dicomweb else [],
            "DicomWeb": {"Enable": dicomweb, "Root": "/dicom-web/"},
            "HttpThreadsCount": 4,
            "ConcurrentJobs": 1,
            **settings,
        }, indent=2))

    def start(self) -> Orthanc:
        log = open(self.root / "orthanc.log", "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen([self.exe, str(self.config_path)], stdout=log,
                                     stderr=subprocess.STDOUT)
        log.close()
        wait_for(self._up, 30, what="Orthanc to start")
        return self

    def _up(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"Orthanc exited: {(self.root / 'orthanc.log').read_text()[-2000:]}")
        try:
            self.get("/system")
            return True
        except OSError:
            return False

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    @property
    def dicomweb_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dicom-web"

    def _open(self, path: str, method: str = "GET") -> Any:
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", method=method)
        if self.users:
            import base64

            user, password = next(iter(self.users.items()))
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        return urllib.request.urlopen(req, timeout=10)

    def get(self, path: str) -> Any:
        with self._open(path) as r:
            return json.loads(r.read())

    def text(self, path: str) -> str:
        with self._open(path) as r:
            return r.read().decode()

    def instances(self) -> list[str]:
        return self.get("/instances")

    def tags(self, instance: str) -> dict[str, Any]:
        return self.get(f"/instances/{instance}/tags?simplify")

    def all_tags(self) -> list[dict[str, Any]]:
        return [self.tags(i) for i in self.instances()]

    def clear(self) -> None:
        for patient in self.get("/patients"):
            self._open(f"/patients/{patient}", method="DELETE").close()


class Node:
    """`dicom-deid serve` as a real subprocess with its own config and state folder."""

    def __init__(self, root: Path, settings: dict[str, Any], client_args: Sequence[str] = ()):
        self.root = root
        self.client_args = tuple(client_args)  # DCMTK options to reach it (TLS)
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.state_dir = root / "state"
        self.log_path = root / "node.log"
        config = {
            "listen": {"port": self.port, "allowed_calling_aets": ["PACS", "PACS2"]},
            "state_dir": str(self.state_dir),
            "processing": {"stable_seconds": 1, "workers": 1},
            "forward": {"initial_delay": 0.5, "max_delay": 2, "max_attempts": 20,
                        "timeout": 10},
            "log": {"level": "DEBUG"},
        }
        for key, value in settings.items():
            if isinstance(value, dict) and isinstance(config.get(key), dict):
                config[key] = {**config[key], **value}
            else:
                config[key] = value
        self.config = config
        self.config_path = root / "node.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.proc: subprocess.Popen | None = None

    def start(self, echo: bool = True) -> Node:
        """Start and wait until it answers C-ECHO (or, echo=False, until it listens)."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        mark = self.log().count("listening on")
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dicom_deid.cli", "serve", "--config", str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        log.close()
        if echo:
            wait_for(self._ready, 60, what="the node to answer C-ECHO")
        else:
            wait_for(lambda: self._alive() and self.log().count("listening on") > mark, 60,
                     what="the node to listen")
        return self

    def _alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"node exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
        return True

    def _ready(self) -> bool:
        self._alive()
        return echoscu(self.port, extra=self.client_args).returncode == 0

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(10)
        self.proc = None
        return rc

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def audit(self) -> str:
        path = self.state_dir / "audit.log"
        return path.read_text() if path.exists() else ""

    def journal(self, sql: str, params: tuple = ()) -> list[tuple]:
        conn = sqlite3.connect(self.state_dir / "journal.sqlite", timeout=30)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def states(self) -> dict[str, int]:
        return dict(self.journal("SELECT state, COUNT(*) FROM instances GROUP BY state"))

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dicom_deid.cli", *args, "--config",
                               str(self.config_path)], capture_output=True, text=True,
                              timeout=60, cwd=REPO)
