"""The engine's behaviour beyond the table: private tags, UIDs, dates, pseudonyms, pixels."""

from __future__ import annotations

import copy
import io
from datetime import datetime

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicom_deid.header import (
    PixelStatus,
    ProfileError,
    deidentify_dataset,
    load_profile,
    mark_pixels,
)
from dicom_deid.header.engine import deidentify
from dicom_deid.header.keys import SiteKey
from dicom_deid.header.values import clean_text, shift_da, shift_dt
from tests.header.phi import base_instance, with_file_meta

KEY = SiteKey(b"engine-test-key-0123456789abcdef0123")
CT = "1.2.840.10008.5.1.4.1.1.2"


def roundtrip(ds: Dataset) -> tuple[Dataset, bytes]:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return dcmread(io.BytesIO(buf.getvalue())), buf.getvalue()


def reread(ds: Dataset) -> Dataset:
    """The dataset as read from a file (raw elements), which is what the engine meets."""
    return roundtrip(with_file_meta(ds))[0]


def private_instance() -> Dataset:
    ds = base_instance(CT)
    ds.add_new(0x00190010, "LO", "SIEMENS MR HEADER")
    ds.add_new(0x0019100C, "IS", "1000")               # B_value: on the safe list
    ds.add_new(0x00191099, "LO", "PHIPRIVATE-Doe")      # same creator, not on the list
    ds.add_new(0x00290010, "LO", "OTHER VENDOR")
    ds.add_new(0x00291001, "LO", "PHIOTHER-Doe")
    item = Dataset()
    item.add_new(0x00190010, "LO", "SIEMENS MR HEADER")
    item.add_new(0x0019100C, "IS", "500")
    item.add_new(0x00191098, "LO", "PHINESTED-Doe")
    ds.add_new(0x00081115, "SQ", Sequence([item]))     # unlisted sequence
    return reread(ds)


def test_private_removed_without_the_option():
    out, data = roundtrip(deidentify_dataset(private_instance(), load_profile("basic"), KEY))
    assert not [e.tag for e in out.iterall() if e.tag.is_private]
    assert b"PHIPRIVATE" not in data and b"PHIOTHER" not in data and b"PHINESTED" not in data
    assert b"SIEMENS MR HEADER" not in data


def test_safe_private_kept_with_its_creator():
    profile = load_profile("basic", ("retain-safe-private",))
    out, data = roundtrip(deidentify_dataset(private_instance(), profile, KEY))
    assert out[0x00190010].value == "SIEMENS MR HEADER"
    assert out[0x0019100C].value == "1000"
    nested = out[0x00081115].value[0]
    assert nested[0x0019100C].value == "500" and nested[0x00190010].value == "SIEMENS MR HEADER"
    assert 0x00191099 not in out and 0x00290010 not in out and 0x00291001 not in out
    assert b"PHIPRIVATE" not in data and b"PHIOTHER" not in data and b"PHINESTED" not in data
    assert "option retain-safe-private" in list(out.DeidentificationMethod)
    assert "113111" in [c.CodeValue for c in out.DeidentificationMethodCodeSequence]


def test_profile_extends_the_safe_list(tmp_path):
    profile_file = tmp_path / "site.yaml"
    profile_file.write_text(
        "profile: site\nbase: basic\noptions: [retain-safe-private]\n"
        "safe_private:\n  - {group: 0x0029, creator: OTHER VENDOR, element: 0x01, name: x}\n"
    )
    out, _ = roundtrip(deidentify_dataset(private_instance(), load_profile(profile_file), KEY))
    assert out[0x00291001].value == "PHIOTHER-Doe" and out[0x00290010].value == "OTHER VENDOR"
    assert out[0x0019100C].value == "1000"  # the shipped list still applies


def study_instances() -> list[Dataset]:
    """Two instances of one study; the second references the first inside sequences."""
    first = base_instance(CT)
    first.SOPInstanceUID = "1.2.826.0.1.3680043.9.7433.10.1"
    first.FrameOfReferenceUID = "1.2.826.0.1.3680043.9.7433.10.9"
    first.StudyDate, first.ContentDate, first.AcquisitionDateTime = "20200110", "20200110", "20200110083000"
    second = base_instance(CT)
    second.SOPInstanceUID = "1.2.826.0.1.3680043.9.7433.10.2"
    second.FrameOfReferenceUID = first.FrameOfReferenceUID
    second.StudyDate, second.ContentDate = "20200110", "20200325"
    ref = Dataset()
    ref.ReferencedSOPClassUID = CT
    ref.ReferencedSOPInstanceUID = first.SOPInstanceUID
    inner = Dataset()
    inner.ReferencedSOPSequence = Sequence([ref])
    inner.SeriesInstanceUID = first.SeriesInstanceUID
    evidence = Dataset()
    evidence.StudyInstanceUID = first.StudyInstanceUID
    evidence.ReferencedSeriesSequence = Sequence([inner])
    second.CurrentRequestedProcedureEvidenceSequence = Sequence([evidence])  # unlisted, depth 3
    return [reread(first), reread(second)]


def test_uids_consistent_across_instances_and_references():
    profile = load_profile("basic")
    first, second = (deidentify_dataset(ds, profile, KEY) for ds in study_instances())
    assert first.StudyInstanceUID == second.StudyInstanceUID != study_instances()[0].StudyInstanceUID
    assert first.FrameOfReferenceUID == second.FrameOfReferenceUID
    evidence = second.CurrentRequestedProcedureEvidenceSequence[0]
    series = evidence.ReferencedSeriesSequence[0]
    assert evidence.StudyInstanceUID == first.StudyInstanceUID
    assert series.SeriesInstanceUID == first.SeriesInstanceUID
    assert series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == first.SOPInstanceUID
    assert series.ReferencedSOPSequence[0].ReferencedSOPClassUID == CT  # a class: never remapped
    assert first.SOPClassUID == CT and first.file_meta.MediaStorageSOPInstanceUID == first.SOPInstanceUID
    # another key, other UIDs; same key again, same UIDs
    other = deidentify_dataset(study_instances()[0], profile, SiteKey(b"another-key-0123456789abcdef01234"))
    assert other.SOPInstanceUID != first.SOPInstanceUID
    assert deidentify_dataset(study_instances()[0], profile, KEY).SOPInstanceUID == first.SOPInstanceUID


def test_well_known_uids_are_never_remapped():
    ds = base_instance(CT)
    ds.FrameOfReferenceUID = "1.2.840.10008.1.4.1.1"   # a well-known frame of reference
    ds.add_new(0x00081150, "UI", CT)
    out = deidentify_dataset(reread(ds), load_profile("basic"), KEY)
    assert out.FrameOfReferenceUID == "1.2.840.10008.1.4.1.1"
    assert out.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"


def _days(a: str, b: str) -> int:
    return (datetime.strptime(b[:8], "%Y%m%d") - datetime.strptime(a[:8], "%Y%m%d")).days


def test_date_shift_keeps_intervals_and_agrees_across_runs():
    profile = load_profile("basic", ("retain-longitudinal-modified-dates",))
    first, second = (deidentify_dataset(ds, profile, KEY) for ds in study_instances())
    assert _days(first.ContentDate, second.ContentDate) == _days("20200110", "20200325")
    offset = _days("20200110", first.StudyDate)
    low, high = profile.date_shift_days
    assert low <= offset <= high
    assert _days("20200110", first.AcquisitionDateTime) == offset
    assert first.AcquisitionDateTime[8:] == "083000"
    assert first.LongitudinalTemporalInformationModified == "MODIFIED"
    again = deidentify_dataset(study_instances()[0], profile, KEY)
    assert again.StudyDate == first.StudyDate
    # another patient: an offset of their own (keyed on the Patient ID)
    offsets = set()
    for n in range(8):
        ds = study_instances()[0]
        ds.PatientID = f"OTHER-{n}"
        offsets.add(_days("20200110", deidentify_dataset(ds, profile, KEY).StudyDate))
    assert len(offsets) > 1


def test_date_shift_range_from_profile(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("profile: p\nbase: basic\noptions: [retain-longitudinal-modified-dates]\n"
                    "date_shift_days: [-10, -5]\n")
    for n in range(6):
        ds = study_instances()[0]
        ds.PatientID = f"P{n}"
        out = deidentify_dataset(ds, load_profile(path), KEY)
        assert -10 <= _days("20200110", out.StudyDate) <= -5
    path.write_text("profile: p\ndate_shift_days: [-10, 5]\n")
    with pytest.raises(ProfileError, match="includes 0"):
        load_profile(path)


def test_shift_helpers():
    assert shift_da("20200301", -1) == "20200229"
    assert shift_da("20200101-20200105", 2) == "20200103-20200107"
    assert shift_da("2020-03-01", 1) is None
    assert shift_dt("202003011230+0100", -1) == "202002291230+0100"
    assert shift_dt("2020", 400) == "2021"


def test_pseudonyms_keyed_and_lookup(tmp_path):
    ds = study_instances()[0]
    out = deidentify_dataset(ds, load_profile("basic"), KEY)
    assert out.PatientID == KEY.token("patient-id", "PHI-MRN-0001", 16)
    assert str(out.PatientName).startswith("ANONYMOUS^") and "Doe" not in str(out.PatientName)
    (tmp_path / "lookup.csv").write_text(
        "original_patient_id,patient_id,patient_name\nPHI-MRN-0001,TRIAL-007,Subject^Seven\n"
    )
    (tmp_path / "p.yaml").write_text(
        "profile: trial\nbase: basic\npseudonym_lookup: lookup.csv\npseudonym_lookup_required: true\n"
    )
    profile = load_profile(tmp_path / "p.yaml")
    out = deidentify_dataset(study_instances()[0], profile, KEY)
    assert out.PatientID == "TRIAL-007" and str(out.PatientName) == "Subject^Seven"
    stranger = study_instances()[0]
    stranger.PatientID = "NOT-IN-TABLE"
    from dicom_deid.header import DeidentificationError

    with pytest.raises(DeidentificationError, match="lookup") as info:
        deidentify_dataset(stranger, profile, KEY)
    assert "NOT-IN-TABLE" not in str(info.value)


def test_overrides(tmp_path):
    (tmp_path / "p.yaml").write_text(
        "profile: custom\nbase: basic\noverrides:\n"
        "  StudyDescription: keep\n"
        '  "(0008,103E)": {replace: RESEARCH SERIES}\n'
        "  BodyPartExamined: remove\n"
        "  Manufacturer: dummy\n"
    )
    ds = base_instance(CT)
    ds.StudyDescription = "Knee MRI"
    ds.SeriesDescription = "PHI Doe series"
    ds.BodyPartExamined = "KNEE"
    ds.Manufacturer = "Vendor"
    out = deidentify_dataset(reread(ds), load_profile(tmp_path / "p.yaml"), KEY)
    assert out.StudyDescription == "Knee MRI"
    assert out.SeriesDescription == "RESEARCH SERIES"
    assert "BodyPartExamined" not in out and out.Manufacturer == "ANONYMIZED"
    (tmp_path / "bad.yaml").write_text("profile: bad\noverrides:\n  StudyDescription: shred\n")
    with pytest.raises(ProfileError, match="StudyDescription"):
        load_profile(tmp_path / "bad.yaml")
    (tmp_path / "bad2.yaml").write_text("profile: bad\nfaces: smudge\n")
    with pytest.raises(ProfileError, match="faces"):
        load_profile(tmp_path / "bad2.yaml")
    (tmp_path / "bad3.yaml").write_text("profile: bad\nopts: []\n")
    with pytest.raises(ProfileError, match="opts"):
        load_profile(tmp_path / "bad3.yaml")
    with pytest.raises(ValueError, match="exclude"):
        load_profile("basic", ("retain-longitudinal-full-dates", "retain-longitudinal-modified-dates"))


def test_clean_descriptors_keeps_vocabulary_only():
    terms = load_profile("basic").clean_terms
    assert clean_text("AX T1 BRAIN post contrast Doe 12/03/2021 MRN 4711", terms, frozenset()) == \
        "AX T1 BRAIN post contrast"
    assert clean_text("Jane Doe", terms, frozenset()) == "CLEANED"
    assert clean_text("Head CT of Head", terms, frozenset({"head"})) == "CT of"
    ds = base_instance(CT)
    ds.SeriesDescription = "AX T1 Doe"
    ds.StationAETitle = "CTROOM4"
    ds.PatientName = "Head^Axial"
    ds.StudyDescription = "Head and neck"
    profile = load_profile("basic", ("clean-descriptors", "retain-device-identity"))
    out = deidentify_dataset(reread(ds), profile, KEY)
    assert out.SeriesDescription == "AX T1"
    assert out.StudyDescription == "and neck"      # the patient is called Head
    assert out.StationAETitle.startswith("AE") and out.StationAETitle != "CTROOM4"


def test_input_is_not_modified():
    ds = study_instances()[1]
    before = copy.deepcopy(ds)
    out = deidentify_dataset(ds, load_profile("research"), KEY)
    out.PatientComments = "changed"
    out.CurrentRequestedProcedureEvidenceSequence[0].StudyInstanceUID = "9.9"
    assert ds == before


def test_pixel_status_drives_the_claims():
    ds = base_instance("1.2.840.10008.5.1.4.1.1.77.1.4.1")  # video photographic: may show a face
    ds.Modality = "XC"
    ds.RecognizableVisualFeatures = "NO"
    ds.BurnedInAnnotation = "NO"
    ds.add_new(0x7FE00010, "OB", b"\x00" * 16)
    src = reread(ds)
    profile = load_profile("basic")
    untouched = deidentify_dataset(src, profile, KEY)
    codes = [c.CodeValue for c in untouched.DeidentificationMethodCodeSequence]
    assert codes == ["113100"]
    assert untouched.RecognizableVisualFeatures == "YES"    # not claimed clean
    assert untouched.PatientIdentityRemoved == "YES"
    assert "pixels not modified" in list(untouched.DeidentificationMethod)
    cleaned = deidentify_dataset(src, profile, KEY, pixels=PixelStatus(True, True, "swap"))
    codes = [c.CodeValue for c in cleaned.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113101", "113102"]
    assert cleaned.RecognizableVisualFeatures == "NO" and cleaned.BurnedInAnnotation == "NO"
    mark_pixels(untouched, profile, PixelStatus(False, True, "mask3d"))
    assert untouched.RecognizableVisualFeatures == "NO"
    assert "faces replaced (mask3d)" in list(untouched.DeidentificationMethod)


def test_truncated_nested_value_is_refused():
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import BaseTag

    from dicom_deid.header import DeidentificationError

    ds = reread(base_instance(CT))
    ds._dict[BaseTag(0x00081030)] = RawDataElement(BaseTag(0x00081030), "LO", 20, b"PHI short", 0, False, True)
    with pytest.raises(DeidentificationError, match="truncated"):
        deidentify(ds, load_profile("basic", ("clean-descriptors",)), KEY)
