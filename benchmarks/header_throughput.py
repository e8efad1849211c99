"""Header de-identification throughput: dicom-deid's whole Annex E table vs dicognito.

    .venv/bin/python benchmarks/header_throughput.py [--copies N] [--json PATH]

Both tools get the same corpus in the same process: pydicom's bundled test files plus the
bundled sample study, each repeated --copies times (parsed once; every run de-identifies a
fresh deep copy, so parsing and disk are out of the measurement for both). Reports instances
per second for each and the ratio dicom-deid / dicognito (goal: >= 1.0).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import warnings
from pathlib import Path

import pydicom

REPO = Path(__file__).resolve().parent.parent
FILES = ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "rtstruct.dcm", "rtdose.dcm",
         "reportsi.dcm", "JPEG2000.dcm", "SC_rgb_jpeg_dcmtk.dcm", "examples_ybr_color.dcm")


def corpus() -> list[pydicom.Dataset]:
    test_files = Path(pydicom.__file__).parent / "data" / "test_files"
    paths = [test_files / f for f in FILES] + sorted((REPO / "tests/data/sample").glob("*.dcm"))
    return [pydicom.dcmread(p, force=True) for p in paths if p.exists()]


def run_dicom_deid(datasets: list[pydicom.Dataset], copies: int) -> float:
    from dicom_deid.header import SiteKey, deidentify_dataset, load_profile

    profile = load_profile("basic")
    key = SiteKey(b"0123456789abcdef" * 4)
    start = time.perf_counter()
    for _ in range(copies):
        for ds in datasets:
            deidentify_dataset(copy.deepcopy(ds), profile, key)
    return time.perf_counter() - start


def run_dicognito(datasets: list[pydicom.Dataset], copies: int) -> float:
    from dicognito.anonymizer import Anonymizer

    anonymizer = Anonymizer(seed="benchmark")
    start = time.perf_counter()
    for _ in range(copies):
        for ds in datasets:
            anonymizer.anonymize(copy.deepcopy(ds))
    return time.perf_counter() - start


def run_copy_only(datasets: list[pydicom.Dataset], copies: int) -> float:
    start = time.perf_counter()
    for _ in range(copies):
        for ds in datasets:
            copy.deepcopy(ds)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    datasets = corpus()
    n = len(datasets) * args.copies
    # Warm both once (imports, table loading) outside the timing.
    run_dicom_deid(datasets, 1)
    run_dicognito(datasets, 1)
    copying = run_copy_only(datasets, args.copies)
    ours = run_dicom_deid(datasets, args.copies) - copying
    theirs = run_dicognito(datasets, args.copies) - copying
    rows = {
        "instances": n,
        "dicom_deid_per_s": n / ours,
        "dicognito_per_s": n / theirs,
        "ratio_dicom_deid_over_dicognito": theirs / ours,
        "deepcopy_s_subtracted": copying,
    }
    print(f"{'tool':<12} {'instances/s':>12}")
    print(f"{'dicom-deid':<12} {rows['dicom_deid_per_s']:>12.1f}")
    print(f"{'dicognito':<12} {rows['dicognito_per_s']:>12.1f}")
    print(f"ratio dicom-deid / dicognito: {rows['ratio_dicom_deid_over_dicognito']:.2f} "
          f"({n} instances each)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
