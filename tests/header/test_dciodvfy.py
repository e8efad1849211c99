"""dciodvfy, the reference IOD validator, reports no new errors on what the header stage writes."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from dicom_deid.header import load_key, load_profile
from dicom_deid.pipeline import StudyOptions, process_study
from tests.helpers import new_dciodvfy_errors, shared_data

# pydicom's bundled test files (no download): several IODs, syntaxes and nesting.
PYDICOM_FILES = (
    "CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "rtstruct.dcm", "rtdose.dcm", "reportsi.dcm",
    "JPEG2000.dcm", "SC_rgb_jpeg_dcmtk.dcm", "examples_ybr_color.dcm",
)
OPTION_SETS = ((), ("retain-longitudinal-modified-dates", "retain-safe-private", "clean-descriptors"))


def _test_file(name: str) -> Path:
    path = Path(pydicom.__file__).parent / "data" / "test_files" / name
    if not path.exists():
        pytest.skip(f"{name} is not bundled with this pydicom")
    return path


def _check(source: Path, tmp_path: Path, key_file: Path, options: tuple[str, ...]) -> None:
    profile = load_profile("basic", options)
    result = process_study([source], tmp_path / "out", StudyOptions(profile, faces="none"),
                           load_key(key_file), tmp_path / "q")
    assert result.ok, result.failures
    assert new_dciodvfy_errors(source, result.outputs[0]) == []


@pytest.mark.parametrize("options", OPTION_SETS, ids=["basic", "options"])
@pytest.mark.parametrize("name", PYDICOM_FILES)
def test_pydicom_files(name: str, options: tuple[str, ...], tmp_path: Path, key_file: Path) -> None:
    _check(_test_file(name), tmp_path, key_file, options)


@pytest.mark.parametrize("name", [
    "A_h264_high_es_720x576.dcm", "A_h264_high_mp4box_720x576.dcm", "B_mpeg2_mpml_720x576.dcm",
    "C_jpeg_baseline_multiframe_360x288.dcm", "D_hevc_main_720x576.dcm",
    "E_native_rgb_multiframe_360x288.dcm",
])
def test_shared_videos_header_only(name: str, tmp_path: Path, key_file: Path) -> None:
    _check(shared_data("dicom", "video", name), tmp_path, key_file, ())
