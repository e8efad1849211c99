"""Coded entries and nested times inside dummied or cleaned sequences (issue 16, defect 4):
codes of standard schemes stay; local or private schemes' values and meanings are free text and
follow the enclosing attribute's action; a TM that is not a time is not kept as one."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicom_deid.header import deidentify, load_key, load_profile
from dicom_deid.header.engine import standard_scheme

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
TOKEN = "Zyxwq"   # an invented surname, planted where free text can hide


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _sr() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = COMPREHENSIVE_SR
    ds.SOPInstanceUID = "1.2.3.4.5.6.7.8.1"
    ds.StudyInstanceUID = "1.2.3.4.5.6.7.8.2"
    ds.SeriesInstanceUID = "1.2.3.4.5.6.7.8.3"
    ds.PatientID = "MRN-0001"
    ds.PatientName = f"{TOKEN}^Anna"
    ds.Modality = "SR"
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([_code("126000", "DCM", "Imaging Measurement Report")])
    finding = Dataset()
    finding.RelationshipType = "CONTAINS"
    finding.ValueType = "CODE"
    finding.ConceptNameCodeSequence = Sequence([_code(f"{TOKEN}-77", "99HOSP",
                                                      f"Seen by Dr {TOKEN}")])
    finding.ConceptCodeSequence = Sequence([_code("22298006", "SCT", "Myocardial infarction")])
    when = Dataset()
    when.RelationshipType = "CONTAINS"
    when.ValueType = "TIME"
    when.ConceptNameCodeSequence = Sequence([_code("111526", "DCM", "DateTime Started")])
    when.Time = "101500"
    odd = Dataset()
    odd.RelationshipType = "CONTAINS"
    odd.ValueType = "TIME"
    odd.ConceptNameCodeSequence = Sequence([_code("111526", "DCM", "DateTime Started")])
    odd.Time = "101500"
    ds.ContentSequence = Sequence([finding, when, odd])
    # A TM carrying text (as a planted corpus or a broken writer leaves it).
    odd["Time"].value = TOKEN.upper()
    return ds


def _text(ds: Dataset) -> str:
    return str(ds)


@pytest.mark.parametrize("options", [(), ("retain-longitudinal-modified-dates",),
                                     ("clean-structured-content",)])
def test_local_codes_follow_the_enclosing_action(options, key_file: Path) -> None:
    out = deidentify(_sr(), load_profile("basic", options), load_key(key_file)).dataset
    assert TOKEN.lower() not in _text(out).lower()
    finding, when, odd = out.ContentSequence
    # Standard schemes stay as they are.
    concept = finding.ConceptCodeSequence[0]
    assert (concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning) == (
        "22298006", "SCT", "Myocardial infarction")
    assert out.ConceptNameCodeSequence[0].CodeMeaning == "Imaging Measurement Report"
    assert when.ConceptNameCodeSequence[0].CodeMeaning == "DateTime Started"
    # The local code's structure stays: a code item with a value and a meaning.
    local = finding.ConceptNameCodeSequence[0]
    assert local.CodingSchemeDesignator == "99HOSP"
    assert local.CodeValue and local.CodeMeaning is not None
    if "retain-longitudinal-modified-dates" in options:
        assert when.Time == "101500", "a time is kept: the date shift is whole days"
    else:
        assert when.Time != "101500"


def test_standard_scheme() -> None:
    assert standard_scheme(_code("1", "DCM", "x"))
    assert standard_scheme(_code("1", "sct", "x"))
    assert not standard_scheme(_code("1", "99HOSP", "x"))
    assert not standard_scheme(_code("1", "LOCAL", "x"))
    assert not standard_scheme(Dataset())


def test_required_reference_sequence_keeps_its_items_remapped(key_file: Path) -> None:
    """A segmentation's per-frame Source Image Sequence (Type 2, X/Z/U*): its items stay with
    their UIDs replaced by the one keyed mapping, so the instance's other references to the
    same images still match; text that happens to be inside is not kept."""
    key = load_key(key_file)
    source = Dataset()
    source.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    source.ReferencedSOPInstanceUID = "1.2.3.4.5.6.7.8.100"
    source.SegmentLabel = f"{TOKEN} liver"
    derivation = Dataset()
    derivation.SourceImageSequence = Sequence([source])
    frame = Dataset()
    frame.DerivationImageSequence = Sequence([derivation])
    ds = _sr()
    del ds.ContentSequence
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"   # Segmentation Storage
    ds.PerFrameFunctionalGroupsSequence = Sequence([frame])
    out = deidentify(ds, load_profile("basic"), key).dataset
    item = out.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].SourceImageSequence[0]
    assert item.ReferencedSOPInstanceUID == key.uid("1.2.3.4.5.6.7.8.100")
    assert item.ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert TOKEN.lower() not in str(out).lower()
