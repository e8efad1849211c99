"""docs/PROFILES.md documents every profile key and option, and its example is a valid profile."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from dicom_deid.header import load_profile
from dicom_deid.header.options import OPTIONS
from dicom_deid.header.profile import PROFILE_KEYS
from tests.helpers import REPO

DOC = REPO / "docs" / "PROFILES.md"


def test_every_key_and_option_is_documented() -> None:
    text = DOC.read_text()
    documented = set(re.findall(r"^([a-z_]+):", text, re.MULTILINE))
    assert not PROFILE_KEYS - documented, sorted(PROFILE_KEYS - documented)
    for option in OPTIONS:
        assert f"| `{option}` |" in text, option


def test_the_example_loads(tmp_path: Path) -> None:
    block = re.search(r"```yaml\n(.*?)```", DOC.read_text(), re.DOTALL).group(1)
    data = yaml.safe_load(block)
    # The example names files beside it; give it small real ones.
    (tmp_path / "lookup.csv").write_text("original_patient_id,patient_id\nA1,P1\n")
    safe = yaml.safe_load((REPO / "profiles" / "safe_private.yaml").read_text())
    (tmp_path / "safe_private.yaml").write_text(yaml.safe_dump(safe))
    path = tmp_path / "my-site.yaml"
    path.write_text(yaml.safe_dump(data))
    profile = load_profile(str(path))
    assert profile.name == "my-site" and "clean-descriptors" in profile.options
