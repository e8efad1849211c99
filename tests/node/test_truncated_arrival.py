"""An instance cut off before its Study Instance UID is quarantined as truncated."""

from __future__ import annotations


def test_a_truncated_instance_is_named_truncated(tmp_path):
    from dicom_deid.node.receiver import missing_study_problem, read_header
    from tests.helpers import REPO

    data = (REPO / "tests" / "data" / "sample" / "CT-01-01.dcm").read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:400])  # ends inside the header, before the Study Instance UID
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's note on the cut-off UID value
        assert read_header(cut)["StudyInstanceUID"] == ""
        assert "truncated" in missing_study_problem(cut)
    whole = tmp_path / "whole.dcm"
    from pydicom import dcmread

    ds = dcmread(REPO / "tests" / "data" / "sample" / "CT-01-01.dcm")
    del ds.StudyInstanceUID
    ds.save_as(whole)
    assert missing_study_problem(whole) == "no StudyInstanceUID in the header"
