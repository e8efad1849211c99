from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dicom_deid.config import ConfigError, load_config, parse_config
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
    source = Path(REPO / "dicom_deid" / "config.py").read_text()
    known: set[str] = set()
    for block in re.findall(r"section\([^,]+,\s*[^,]+,\s*\(([^)]*)\)", source):
        known |= set(re.findall(r'"([a-z_]+)"', block))
    for block in re.findall(r"known = \(([^)]*)\)", source):
        known |= set(re.findall(r'"([a-z_]+)"', block))
    known |= set(re.findall(r'_TOP_KEYS = \(([^)]*)\)', source)[0].replace('"', "").replace(
        ",", " ").split())
    known |= set(re.findall(r'_RULE_KEYS = \(([^)]*)\)', source)[0].replace('"', "").replace(
        ",", " ").split())
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
