"""The keypoint SR's dates and times follow the profile like any other date (issue 16, defect 5):
its own processing timestamps are removed, or shifted with the patient."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from dicom_deid.header import deidentify, load_key, load_profile
from dicom_deid.header.values import DUMMY_TEXT, shift_da
from dicom_deid.keypoints import build_keypoint_sr
from dicom_deid.pixel_stage import sr_dates_follow_profile
from tests.video.fixtures import VIDEO_PHOTOGRAPHIC, base_header


def _dates(ds, found=None) -> dict[str, list[str]]:
    found = {} if found is None else found
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                _dates(item, found)
        elif elem.VR in ("DA", "DT", "TM") and elem.value:
            found.setdefault(elem.keyword, []).append(str(elem.value))
    return found


def _sr(options: tuple[str, ...], key_file: Path):
    source = base_header(VIDEO_PHOTOGRAPHIC, 16, 16, 1)
    source.PixelData = b"\0" * (16 * 16 * 3)
    profile = load_profile("basic", options)
    header = deidentify(source, profile, load_key(key_file))
    sr = build_keypoint_sr(header.dataset, [{}], None, series_uid="2.25.1", sop_uid="2.25.2")
    today = datetime.date.today().strftime("%Y%m%d")
    assert str(sr.InstanceCreationDate) == today, "highdicom stamps the processing date"
    sr_dates_follow_profile(sr, header.dataset, profile.date_mode, header.offset_days)
    return sr, header, today


def test_sr_dates_removed_without_a_date_option(key_file: Path) -> None:
    sr, header, today = _sr((), key_file)
    assert "InstanceCreationDate" not in sr and "InstanceCreationTime" not in sr
    # The video's ContentDate was emptied (Z); the SR must have one (Type 1): the dummy.
    assert not header.dataset.get("ContentDate")
    assert (str(sr.ContentDate), str(sr.ContentTime)) == (DUMMY_TEXT["DA"], DUMMY_TEXT["TM"])
    assert not any(today in v for values in _dates(sr).values() for v in values)
    assert sr.LongitudinalTemporalInformationModified == "REMOVED"


def test_sr_dates_shift_with_the_patient(key_file: Path) -> None:
    sr, header, today = _sr(("retain-longitudinal-modified-dates",), key_file)
    offset = header.offset_days
    assert offset is not None and offset < 0
    assert str(sr.ContentDate) == str(header.dataset.ContentDate) == shift_da("20240101", offset)
    assert str(sr.InstanceCreationDate) == shift_da(today, offset)
    assert not any(today in v for values in _dates(sr).values() for v in values)


@pytest.mark.parametrize("option", ["retain-longitudinal-full-dates"])
def test_sr_dates_kept_with_full_dates(option: str, key_file: Path) -> None:
    sr, _, today = _sr((option,), key_file)
    assert str(sr.InstanceCreationDate) == today
    assert str(sr.ContentDate) == "20240101"

