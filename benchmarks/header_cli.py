"""Header de-identification as a user runs it: file to file through each tool's CLI.

    .venv/bin/python benchmarks/header_cli.py [--copies N] [--rounds R] [--json PATH]

Corpus: the files of benchmarks/header_throughput.py (pydicom's bundled test files that both
tools write, and the bundled sample study), each copied --copies times with fresh Study, Series
and SOP Instance UIDs (so that neither tool sees a duplicate), into a temporary folder.
- dicom-deid: `dicom-deid deidentify CORPUS --output OUT --faces none --key-file K`
  (the basic profile; the face stage off, so only the header is timed);
- dicognito: `python -m dicognito --output-directory OUT --seed S CORPUS`.
Each run is a fresh process (interpreter start, imports, reading, writing: what a user waits
for); rounds alternate the two tools; reported are the median times, their ratio
dicognito / dicom-deid (above 1: dicom-deid is faster) and the median of the per-round ratios
(each round's two runs share the shared host's load). The in-process ratio of
header_throughput.py (datasets parsed once, no disk) is measured in the same run beside it.

Then pydicom's whole bundled test folder goes once through dicognito's CLI, as the
comparison for tests/pipeline/test_pydicom_corpus.py: files, outputs, inputs it failed on,
and inputs whose output another input overwrote (dicognito names outputs by the new SOP
Instance UID, which it derives from the old one).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pydicom
import pydicom.data
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent))
import header_throughput  # noqa: E402 (the in-process benchmark, run beside this one)

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PYDICOM_TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"


def make_corpus(folder: Path, copies: int) -> int:
    sources = [PYDICOM_TEST_FILES / f for f in header_throughput.FILES]
    sources += sorted((REPO / "tests/data/sample").glob("*.dcm"))
    n = 0
    for copy_index in range(copies):
        study = generate_uid()
        for source in sources:
            if not source.exists():
                continue
            ds = pydicom.dcmread(source, force=True)
            ds.StudyInstanceUID = study
            ds.SeriesInstanceUID = generate_uid()
            ds.SOPInstanceUID = generate_uid()
            if getattr(ds, "file_meta", None) is not None:
                ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.save_as(folder / f"{copy_index:03d}_{source.name}")
            n += 1
    return n


def timed(command: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    return time.perf_counter() - start, proc


def ours(corpus: Path, out: Path, key: Path) -> list[str]:
    return [str(BIN / "dicom-deid"), "deidentify", str(corpus), "--output", str(out),
            "--faces", "none", "--key-file", str(key)]


def dicognito(corpus: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "dicognito", "--output-directory", str(out),
            "--seed", "benchmark", "--quiet", str(corpus)]


def count_dcm(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*.dcm") if "quarantine" not in p.parts)


def pydicom_folder_through_dicognito(work: Path) -> dict:
    inputs = work / "pydicom_in"
    shutil.copytree(PYDICOM_TEST_FILES, inputs)
    files = sorted(p for p in inputs.rglob("*") if p.is_file())
    out = work / "pydicom_dicognito"
    failed, written, sources = [], 0, {}
    # One file at a time: dicognito stops at the first file it cannot read.
    for path in files:
        before = {p.name for p in out.glob("*.dcm")} if out.exists() else set()
        proc = subprocess.run(dicognito(path, out), capture_output=True, text=True, check=False)
        after = {p.name for p in out.glob("*.dcm")} if out.exists() else set()
        if proc.returncode != 0:
            failed.append(path.name)
            continue
        new = after - before
        written += 1
        if not new:
            # Nothing new appeared: its output has the name of an earlier one, overwritten.
            sources[path.name] = "overwrote an earlier output"
    return {
        "files": len(files),
        "accepted": written,
        "failed": len(failed),
        "outputs": count_dcm(out),
        "overwrote_an_earlier_output": len(sources),
        "note": "dicognito run once per file (it stops at the first unreadable file in a folder)",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--skip-pydicom-folder", action="store_true",
                        help="leave out the pass of pydicom's test folder through dicognito")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    work = Path(tempfile.mkdtemp(prefix="header_cli_"))
    try:
        corpus = work / "corpus"
        corpus.mkdir()
        n = make_corpus(corpus, args.copies)
        key = work / "site.key"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("0123456789abcdef" * 4 + "\n")
        times: dict[str, list[float]] = {"dicom-deid": [], "dicognito": []}
        outputs: dict[str, int] = {}
        for round_index in range(args.rounds):
            for name in ("dicom-deid", "dicognito"):
                out = work / f"{name}_{round_index}"
                command = ours(corpus, out, key) if name == "dicom-deid" else dicognito(corpus, out)
                seconds, proc = timed(command)
                if proc.returncode != 0:
                    print(f"{name} failed (exit {proc.returncode}): {proc.stderr[-2000:]}",
                          file=sys.stderr)
                    return 1
                times[name].append(seconds)
                outputs[name] = count_dcm(out)
                shutil.rmtree(out)
        ours_s = statistics.median(times["dicom-deid"])
        theirs_s = statistics.median(times["dicognito"])
        datasets = header_throughput.corpus()
        header_throughput.run_dicom_deid(datasets, 1)
        header_throughput.run_dicognito(datasets, 1)
        copying = header_throughput.run_copy_only(datasets, args.copies)
        in_ours = header_throughput.run_dicom_deid(datasets, args.copies) - copying
        in_theirs = header_throughput.run_dicognito(datasets, args.copies) - copying
        result = {
            "instances": n,
            "rounds": args.rounds,
            "cli": {
                "dicom_deid_s": round(ours_s, 3),
                "dicognito_s": round(theirs_s, 3),
                "dicom_deid_instances_per_s": round(n / ours_s, 1),
                "dicognito_instances_per_s": round(n / theirs_s, 1),
                "ratio_dicognito_over_dicom_deid": round(theirs_s / ours_s, 2),
                # The two runs of one round are next to each other in time, so they share the
                # host's load: the median of those paired ratios is the steadier number.
                "paired_ratio_median": round(statistics.median(
                    t / o for o, t in zip(times["dicom-deid"], times["dicognito"],
                                          strict=True)), 2),
                "outputs": outputs,
                "all_s": {k: [round(v, 3) for v in vals] for k, vals in times.items()},
            },
            "in_process": {
                "instances": len(datasets) * args.copies,
                "ratio_dicognito_over_dicom_deid": round(in_theirs / in_ours, 2),
            },
        }
        if not args.skip_pydicom_folder:
            result["pydicom_test_files_through_dicognito"] = pydicom_folder_through_dicognito(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    target = args.json or (REPO / "benchmarks" / "results" / datetime.date.today().isoformat()
                           / "header_cli.json")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
