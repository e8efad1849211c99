"""redact-phi: which recognised lines identify the patient."""

from __future__ import annotations

from pydicom.dataset import Dataset

from dicom_deid.text.phi import PhiTerms, date_forms


def _header() -> Dataset:
    ds = Dataset()
    ds.PatientName = "NAKAMURA^KENJI^LI"
    ds.PatientID = "PX-4471"
    ds.PatientBirthDate = "19570302"
    ds.AccessionNumber = "ACC99812"
    ds.StudyTime = "143207"
    ds.InstitutionName = "St Mary Riverside Hospital"
    return ds


def test_header_values_in_common_formats_are_identifying() -> None:
    terms = PhiTerms.from_dataset(_header())
    for line in ("NAKAMURA", "Kenji N.", "Pat: nakamura^kenji", "PX4471", "ID PX-4471",
                 "02.03.1957", "02MAR1957", "1957/03/02", "acc 99812", "Riverside", "Li"):
        assert terms.identifying(line, 0.95), line


def test_harmless_text_is_kept() -> None:
    terms = PhiTerms.from_dataset(_header())
    for line in ("LEFT", "ENDOSCOPY", "GENERAL HOSPITAL", "Gain 40", "Olympus CV-190", "x1.5"):
        assert not terms.identifying(line, 0.95), line


def test_generic_dates_times_and_ids_without_a_header() -> None:
    terms = PhiTerms.from_dataset(None)
    assert not terms
    for line in ("12/11/2023", "2023-11-12", "14:32", "3 NOV 2021", "MRN 1234567", "A12B34C56"):
        assert terms.identifying(line, 0.95), line
    assert not terms.identifying("ZOOM", 0.95)


def test_text_the_recogniser_is_unsure_of_is_covered() -> None:
    terms = PhiTerms.from_dataset(None)
    assert terms.identifying("ZOOM", 0.3)
    assert terms.identifying("", 0.99)


def test_date_forms() -> None:
    forms = date_forms("19570302")
    assert {"19570302", "02031957", "03021957", "02MAR1957", "2MAR1957", "321957"} <= forms
    assert date_forms("1957") == set()
