"""node/uid_memo.py: a UID found valid once is not validated again; everything else is
exactly pydicom's."""

from __future__ import annotations

import logging

import pytest
from pydicom import config
from pydicom.uid import UID, generate_uid

from dicom_deid.node import uid_memo


@pytest.fixture()
def memo():
    uid_memo.uninstall()  # a receiver started earlier in this process installed it
    uid_memo.install()
    try:
        yield uid_memo
    finally:
        uid_memo.uninstall()


def _count_validations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    from pydicom import valuerep

    seen: list[str] = []
    original = valuerep.VALIDATORS["UI"]

    def counting(vr, value):
        seen.append(str(value))
        return original(vr, value)

    monkeypatch.setitem(valuerep.VALIDATORS, "UI", counting)
    return seen


def test_a_valid_uid_is_validated_once_then_taken_as_known(memo, monkeypatch):
    seen = _count_validations(monkeypatch)
    fresh = generate_uid()
    first = UID(fresh)
    made = len(seen)
    assert made >= 1
    again = [UID(fresh) for _ in range(20)] + [UID(first)]
    assert len(seen) == made  # no validation after the first
    assert all(type(u) is UID and u == first and u.is_valid for u in again)
    assert all(u is not first for u in again)  # new objects: nothing shared, nothing mutated


def test_an_invalid_uid_is_validated_and_warned_about_every_time(memo, caplog):
    caplog.set_level(logging.WARNING)
    for _ in range(3):
        with pytest.warns(UserWarning, match="Invalid value for VR UI"):
            uid = UID("1.2.03.4")
        assert uid == "1.2.03.4" and not uid.is_valid
    assert not memo.known_valid("1.2.03.4")


def test_raise_mode_still_raises_for_an_invalid_uid(memo):
    with pytest.raises(ValueError):
        UID("1.2.x", validation_mode=config.RAISE)
    UID("1.2.3", validation_mode=config.RAISE)
    assert UID("1.2.3", validation_mode=config.RAISE) == "1.2.3"


def test_results_match_pydicom_without_the_memo(memo, recwarn):
    values = ["1.2.840.10008.1.2.1", " 1.2.3 ", "1.2.3\0", "1." + "1" * 70, "", "1.2.3\n"]
    with_memo = [(str(UID(v)), UID(v).is_valid) for v in values for _ in range(2)]
    uid_memo.uninstall()
    plain = [(str(UID(v)), UID(v).is_valid) for v in values for _ in range(2)]
    assert with_memo == plain


def test_a_private_transfer_syntax_keeps_its_encoding(memo):
    private = UID("1.2.3.4.5.6")
    private.set_private_encoding(False, True)
    copied = UID(private)
    assert copied._PRIVATE_TS_ENCODING == (False, True)
    assert not hasattr(UID("1.2.3.4.5.6"), "_PRIVATE_TS_ENCODING")


def test_the_memo_is_bounded(memo, monkeypatch):
    monkeypatch.setattr(uid_memo, "_MAX", 50)
    for n in range(200):
        UID(f"1.2.3.{n}")
    assert len(uid_memo._known) <= 50


def test_install_is_idempotent_and_uninstall_restores_pydicom():
    original = UID.__new__
    uid_memo.install()
    uid_memo.install()
    assert UID("1.2.3") == "1.2.3"
    uid_memo.uninstall()
    assert UID.__new__ is original
