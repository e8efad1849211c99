from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dicom_deid.config import ConfigError, known_keys, load_config, parse_config
from tests.helpers import REPO

EXAMPLE = REPO / "deploy" / "node.example.yaml"


def test_embedded_default_needs_no_file(monkeypatch, tmp_path):
    monkeypatch.setenv("DICOM_DEID_STATE", str(tmp_path / "st"))
    config = load_config(None)
    assert (config.listen.host, config.listen.port, config.listen.ae_title) == \
        ("127.0.0.1", 11112, "DICOM-DEID")
    assert config.state_dir == tmp_path / "st"
    assert config.key_file == tmp_path / "st" / "site.key"
    assert config.destinations == ()
    assert config.default_rule is not None and config.default_rule.destinations == ()


def test_errors_name_every_bad_key_path():
    with pytest.raises(ConfigError) as info:
        parse_config({
            "listen": {"prot": 104, "ae_title": "THIS-AE-TITLE-IS-TOO-LONG"},
            "destinations": [{"name": "archive", "ae_title": "ARCH", "host": "127.0.0.1",
                              "port": 0}],
            "rules": [{"match": {"sop_class": "NoSuchStorage", "study_description": "("},
                       "destinations": ["elsewhere"], "faces": "paint"}],
            "forward": {"jitter": 2},
        })
    problems = info.value.problems
    assert "destinations[0].port: must be 1..65535, got 0" in problems
    assert "listen.prot: unknown key (did you mean 'port'?)" in problems
    joined = "\n".join(problems)
    for path in ("listen.ae_title:", "rules[0].match.sop_class[0]:",
                 "rules[0].match.study_description: invalid regular expression",
                 "rules[0].destinations[0]: unknown destination 'elsewhere'",
                 "rules[0].faces:", "forward.jitter: must be 0..1, got 2"):
        assert path in joined


def test_non_loopback_listener_requires_allowlist():
    with pytest.raises(ConfigError, match=r"listen.allowed_calling_aets: required"):
        parse_config({"listen": {"host": "0.0.0.0"}})
    config = parse_config({"listen": {"host": "0.0.0.0", "allowed_calling_aets": "PACS"}})
    assert config.listen.allowed_calling_aets == ("PACS",)


def test_rules_destinations_and_default_rule_semantics():
    dests = [{"name": "a", "ae_title": "A", "host": "127.0.0.1", "port": 104},
             {"name": "b", "ae_title": "B", "host": "127.0.0.1", "port": 105}]
    config = parse_config({
        "destinations": dests,
        "rules": [{"name": "us", "match": {"modality": "us",
                                           "sop_class": "VideoEndoscopicImageStorage"},
                   "destinations": ["b"]},
                  {"name": "none", "destinations": []}],
    })
    assert config.rules[0].match.modality == ("US",)
    assert config.rules[0].match.sop_class == ("1.2.840.10008.5.1.4.1.1.77.1.1.1",)
    assert config.rules[0].destinations == ("b",)
    assert config.rules[1].destinations == ()
    assert config.default_rule.destinations == ("a", "b")  # omitted: all destinations
    assert parse_config({"default_rule": None}).default_rule is None


def test_sizes_and_relative_paths(tmp_path):
    path = tmp_path / "node.yaml"
    path.write_text("listen: {max_instance_size: 512M, min_free_disk: 2G}\n"
                    "state_dir: st\nlog: {file: logs/node.log}\n")
    config = load_config(path)
    assert config.listen.max_instance_size == 512 * 2**20
    assert config.listen.min_free_disk == 2 * 2**30
    assert config.state_dir == tmp_path / "st"
    assert config.log.file == tmp_path / "logs" / "node.log"


def test_bad_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "node.yaml"
    path.write_text("listen:\n  port: [1,\n")
    with pytest.raises(ConfigError, match=r"(?s)node.yaml.*line \d+, column"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def _keys(node: object, prefix: str = "") -> set[str]:
    out: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            out.add(f"{prefix}{key}")
            out |= _keys(value, f"{prefix}{key}.")
    elif isinstance(node, list):
        for item in node:
            out |= _keys(item, prefix)
    return out


def test_example_config_is_valid_and_documents_every_key():
    text = EXAMPLE.read_text()
    config = parse_config(yaml.safe_load(text), source=str(EXAMPLE), base_dir=Path("/"))
    assert config.destinations and config.rules
    # Every key the loader knows must appear in the example, active or commented out.
    known = {path.rsplit(".", 1)[-1] for path in known_keys()}
    documented = set(re.findall(r"^\s*#?\s*-?\s*([a-z_]+):", text, re.MULTILINE))
    assert known, "no keys found in config.py"
    assert not known - documented, f"keys missing from {EXAMPLE.name}: {sorted(known - documented)}"


def _serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dicom_deid.cli", "serve", *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO)


def test_serve_refuses_a_bad_config_at_start_naming_key_and_problem(tmp_path):
    path = tmp_path / "node.yaml"
    path.write_text(f"state_dir: {tmp_path / 'st'}\nlisten: {{port: 0}}\n"
                    "processing: {workers: two}\ndefault_rule: {profile: no-such-profile}\n")
    proc = _serve("--config", str(path))
    assert proc.returncode == 2
    assert "listen.port: must be 1..65535, got 0" in proc.stderr
    assert "processing.workers: must be an integer" in proc.stderr
    assert not (tmp_path / "st").exists()  # nothing started, nothing created
    path.write_text(f"state_dir: {tmp_path / 'st'}\ndefault_rule: {{profile: no-such-profile}}\n")
    proc = _serve("--config", str(path))
    assert proc.returncode == 2 and "default_rule.profile/options:" in proc.stderr, proc.stderr
    assert "no-such-profile" in proc.stderr
    checked = _serve("--config", str(EXAMPLE), "--check")
    assert checked.returncode == 0 and "configuration is valid" in checked.stdout, checked.stderr


def test_compose_config_is_valid():
    path = REPO / "deploy" / "compose" / "node.yaml"
    config = parse_config(yaml.safe_load(path.read_text()), source=str(path), base_dir=Path("/"))
    assert config.listen.allowed_calling_aets  # it listens on 0.0.0.0 in the container
    assert config.destinations[0].host == "archive"
    assert config.default_rule is not None and config.default_rule.faces != "none"


def test_dicomweb_destination_contract(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("secret\n")
    config = parse_config({
        "forward": {"timeout": 30},
        "destinations": [
            {"name": "pacs", "ae_title": "PACS", "host": "10.0.0.5", "port": 104},
            {"name": "web", "type": "dicomweb", "url": "https://archive.example/dicom-web",
             "auth": {"type": "basic", "username": "node", "password_file": str(secret)}},
            {"name": "web2", "type": "dicomweb", "url": "http://127.0.0.1:8042/dicom-web",
             "auth": {"type": "bearer", "token_file": "pw"}, "timeout": 5},
        ]}, base_dir=tmp_path)
    pacs, web, web2 = config.destinations
    assert (pacs.type, pacs.calling_ae_title, pacs.url, pacs.auth) == ("dicom", "DICOM-DEID", "", None)
    assert (web.type, web.url, web.timeout) == ("dicomweb", "https://archive.example/dicom-web", 30.0)
    assert web.auth is not None and (web.auth.type, web.auth.username) == ("basic", "node")
    assert web.auth.password_file == secret and web.auth.token_file is None
    assert web2.auth is not None and web2.auth.token_file == secret and web2.timeout == 5.0
    # host and port come from the url (they name the archive in logs)
    assert (web.ae_title, web.host, web.port) == ("", "archive.example", 443)
    assert (web2.host, web2.port) == ("127.0.0.1", 8042)


def test_destination_type_checks_are_reported_together(tmp_path):
    with pytest.raises(ConfigError) as info:
        parse_config({"destinations": [
            {"name": "web", "type": "dicomweb"},
            {"name": "ftp", "type": "ftp", "url": "ftp://x"},
            {"name": "pacs", "host": "10.0.0.5"},
            {"name": "auth", "type": "dicomweb", "url": "https://a/b",
             "auth": {"type": "bearer", "password_file": "nope"}},
            {"name": "web", "type": "dicomweb", "url": "https://a/b", "ae_title": "X"},
        ]}, base_dir=tmp_path)
    problems = info.value.problems
    joined = "\n".join(problems)
    assert "destinations[0].url: is required (a dicomweb destination needs url)" in problems
    assert "destinations[1].type: must be 'dicom' or 'dicomweb', got 'ftp'" in problems
    assert "destinations[1].url: must be an http:// or https:// URL" in joined
    assert "destinations[2].ae_title: is required (a dicom destination needs ae_title, port)" \
        in problems
    assert f"destinations[3].auth.password_file: file {tmp_path / 'nope'} does not exist" in joined
    assert "destinations[4].ae_title: is for type: dicom destinations" in joined
    assert len(problems) >= 5


def test_duplicate_names_and_wrong_shapes_name_their_paths():
    with pytest.raises(ConfigError) as info:
        parse_config({"destinations": [
            {"name": "a", "ae_title": "A", "host": "h", "port": 1},
            {"name": "a", "ae_title": "A", "host": "h", "port": 1}],
            "rules": "all", "retention": [], "log": {"level": "loud", "backups": True},
            "listen": {"tls": {"cert": None, "verify_hostname": False}}})
    problems = info.value.problems
    assert "destinations[1].name: duplicate destination name 'a'" in problems
    assert "rules: must be a list, got 'all' (str)" in problems
    assert "retention: must be a mapping, got a list" in problems
    assert "log.level: must be one of DEBUG, INFO, WARNING, ERROR, got 'loud'" in problems
    assert "log.backups: must be an integer, got true (a boolean)" in problems
    assert "listen.tls.verify_hostname: unknown key (verify_hostname is for destinations)" \
        in problems
