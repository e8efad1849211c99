"""Every file of pydicom's bundled test data through `dicom-deid deidentify`, default profile.

Real-world files from many vendors and many quirks (issue 16). The folder comes from the
installed package (never pydicom's get_testdata_files, which may download). The CLI runs once
over a copy of the whole folder, in this process; tests/pipeline/corpus_audit.py then judges
the run from what it left on disk:
- no input lost, none crashed, every quarantine reason names the file's actual problem;
- pixels bit-identical wherever no face was replaced;
- every reference to an instance that was written resolves to an output instance;
- inputs sharing a SOP Instance UID never overwrite each other;
- dciodvfy reports no error on an output that it did not report on its input.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from pathlib import Path

import pydicom.data
import pytest

from dicom_deid.cli import main
from dicom_deid.header import load_key
from tests.helpers import new_dciodvfy_errors, require_tool
from tests.pipeline.corpus_audit import Audit, audit_run, category, skipped_reasons

PYDICOM_TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"

pytestmark = pytest.mark.slow

# Files whose one right outcome is quarantine, and the reason category that must name why.
MUST_QUARANTINE = {
    "README.txt": "not DICOM",
    "crayons.icc": "not DICOM",
    "zipMR.gz": "not DICOM",
    "rtplan.dump": "not DICOM",
    "MR_truncated.dcm": "truncated",
    "rtplan_truncated.dcm": "truncated",
    "dicomdirtests/DICOMDIR": "DICOMDIR",
    "dicomdirtests/DICOMDIR-bigEnd": "DICOMDIR",
    "dicomdirtests/README.txt": "not DICOM",
    "JPEGLSNearLossless_08.dcm": "no Study/Series/SOP Instance UID",
}
# Valid files that were quarantined only because of the face stage or the reader (defect 2),
# and images the face stage used to destroy (defect 1): each must come out de-identified.
MUST_WRITE = (
    "image_dfl.dcm", "SC_rgb_jpeg.dcm", "JPEG2000-embedded-sequence-delimiter.dcm",
    "JPEG-lossy.dcm", "SC_rgb_jpeg_dcmtk.dcm", "CT_small.dcm", "MR_small.dcm", "rtplan.dcm",
    "liver_1frame.dcm",
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Audit, Path, Path, int]:
    if not PYDICOM_TEST_FILES.is_dir():
        pytest.skip(f"pydicom's test data folder {PYDICOM_TEST_FILES} is not installed")
    root = tmp_path_factory.mktemp("corpus")
    inputs = root / "in"
    shutil.copytree(PYDICOM_TEST_FILES, inputs)
    key_file = root / "site.key"
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("fedcba9876543210" * 4 + "\n")
    out = root / "out"
    quarantine = root / "quarantine"
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = main(["deidentify", str(inputs), "--output", str(out), "--key-file",
                     str(key_file), "--quarantine", str(quarantine)])
    files = sorted(p for p in inputs.rglob("*") if p.is_file())
    audit = audit_run(files, out, quarantine, load_key(key_file),
                      skipped=skipped_reasons(stderr.getvalue()))
    print(audit.summary())
    return audit, inputs, out, code


def test_no_input_is_lost_or_crashes(corpus) -> None:
    audit, _, _, code = corpus
    assert audit.files > 150, "pydicom's test data is there"
    assert audit.lost == []
    assert audit.crashes == []
    assert len(audit.written) + len(audit.quarantined) + len(audit.skipped) == audit.files
    assert code == 1, "some inputs are not instances: the exit status says so"


def test_every_quarantine_reason_is_specific(corpus) -> None:
    audit, *_ = corpus
    vague = {n: r for n, r in audit.quarantined.items() if category(r) in ("other", "crash")}
    assert vague == {}
    # Files in a folder that are not instances at all are skipped and listed (issue 19's rule
    # for every command) instead of quarantined; either way their reason must be specific.
    accounted = {**audit.quarantined, **audit.skipped}
    for name, expected in MUST_QUARANTINE.items():
        assert name in accounted, f"{name} should be quarantined or skipped with its reason"
        assert category(accounted[name]) == expected, (name, accounted[name])
    vague_skips = {n: r for n, r in audit.skipped.items() if category(r) not in
                   ("not DICOM", "DICOMDIR")}
    assert vague_skips == {}


def test_valid_files_are_written(corpus) -> None:
    audit, *_ = corpus
    missing = [n for n in MUST_WRITE if n not in audit.written]
    assert missing == [], {n: audit.quarantined.get(n) for n in missing}


def test_pixels_change_only_where_a_face_was_replaced(corpus) -> None:
    audit, *_ = corpus
    assert audit.pixel_changes == []


def test_every_reference_resolves(corpus) -> None:
    audit, *_ = corpus
    assert audit.references > 0, "the corpus has cross-file references to check"
    assert audit.dangling == []


def test_duplicates_never_overwrite(corpus) -> None:
    audit, *_ = corpus
    assert audit.overwritten == []
    duplicates = [n for n, r in audit.quarantined.items()
                  if category(r) == "duplicate SOP Instance UID"]
    assert len(duplicates) >= 20, "pydicom's data re-uses SOP Instance UIDs across files"


def test_dciodvfy_finds_no_new_error(corpus) -> None:
    require_tool("dciodvfy")
    audit, inputs, out, _ = corpus
    key = load_key(out.parent / "site.key")
    from pydicom import dcmread
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    outputs = {p.stem: p for p in out.rglob("*.dcm")}
    new: dict[str, list[str]] = {}
    for name in audit.written:
        source = inputs / name
        meta = getattr(dcmread(source, stop_before_pixels=True, force=True), "file_meta", None)
        if str(getattr(meta, "TransferSyntaxUID", "")) == DeflatedExplicitVRLittleEndian:
            continue  # dciodvfy does not inflate: it cannot read the input either
        uid = str(dcmread(source, stop_before_pixels=True, force=True).SOPInstanceUID)
        errors = new_dciodvfy_errors(source, outputs[key.uid(uid)])
        if errors:
            new[name] = errors
    assert new == {}
