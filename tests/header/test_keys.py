from __future__ import annotations

import os
import stat

import pytest

from dicom_deid.header.keys import KeyFileError, SiteKey, default_key_path, load_key


def test_uid_is_keyed_stable_and_valid(key_file):
    key = load_key(key_file)
    uid = key.uid("1.2.3.4")
    assert uid == load_key(key_file).uid("1.2.3.4")
    assert uid.startswith("2.25.") and len(uid) <= 64
    assert uid != key.uid("1.2.3.5")
    other = SiteKey(b"x" * 32)
    assert other.uid("1.2.3.4") != uid


def test_default_key_created_private_and_reused():
    key = load_key()
    path = default_key_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key().secret == key.secret


def test_refuses_readable_by_others(key_file):
    os.chmod(key_file, 0o644)
    with pytest.raises(KeyFileError, match="group or others"):
        load_key(key_file)


def test_refuses_short_key(tmp_path):
    path = tmp_path / "short.key"
    path.write_text("tooshort")
    os.chmod(path, 0o600)
    with pytest.raises(KeyFileError, match="at least 32"):
        load_key(path)


def test_repr_hides_secret(key_file):
    assert "0123" not in repr(load_key(key_file))
