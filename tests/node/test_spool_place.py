"""Spool.place: a received file renamed into its bucket, without a stat per instance."""

from __future__ import annotations

import shutil

import pytest

from dicom_deid.node.spool import Spool


def test_a_received_file_is_renamed_into_its_bucket(tmp_path):
    spool = Spool(tmp_path)
    received = spool.incoming / "tmp1.dcm"
    received.write_bytes(b"data")
    relative = spool.new_relative_path()
    final = spool.place(received, relative)
    assert final == tmp_path / relative
    assert final.read_bytes() == b"data"
    assert not received.exists()


def test_a_bucket_removed_since_the_start_is_made_again(tmp_path):
    spool = Spool(tmp_path)
    relative = spool.new_relative_path()
    shutil.rmtree((tmp_path / relative).parent)
    received = spool.incoming / "tmp2.dcm"
    received.write_bytes(b"data")
    final = spool.place(received, relative)
    assert final.read_bytes() == b"data"
    assert (final.parent.stat().st_mode & 0o777) == 0o700


def test_a_missing_received_file_is_an_error(tmp_path):
    spool = Spool(tmp_path)
    with pytest.raises(FileNotFoundError):
        spool.place(spool.incoming / "never-written.dcm", spool.new_relative_path())
