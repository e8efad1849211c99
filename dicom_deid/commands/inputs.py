"""What every command does with its INPUT arguments and its output folder, in one place.

A file named on the command line is processed, and fails with its reason when it cannot be.
In a folder (searched recursively), hidden files, DICOMDIR and files of a kind the command
does not take are skipped, and each is listed as `skipped PATH: reason` on stderr, so that a
stray notes.txt neither fails a run nor disappears silently.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Inputs:
    files: list[tuple[Path, bool]] = field(default_factory=list)  # (file, named explicitly)
    missing: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def paths(self) -> list[Path]:
        return [path for path, _ in self.files]


def looks_like_dicom(path: Path) -> bool:
    """A DICOM file: the 'DICM' prefix, or a bare dataset with SOP Class and Instance UIDs
    (what the pipeline's reader accepts too)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return True  # let the command report why it cannot be read
    if len(head) == 132 and head[128:132] == b"DICM":
        return True
    import warnings

    from pydicom import dcmread

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(path, force=True, stop_before_pixels=True,
                         specific_tags=["SOPClassUID", "SOPInstanceUID"])
        return "SOPClassUID" in ds and "SOPInstanceUID" in ds
    except Exception:  # noqa: BLE001 (any parser failure: not DICOM)
        return False


def find_inputs(inputs: list[Path], accept: Callable[[Path], str | None] | None = None,
                exclude: tuple[Path, ...] = ()) -> Inputs:
    """Files to process in a stable order, without duplicates.

    accept(path) returns None for a file found in a folder that the command takes, else why
    it is skipped (default: not DICOM). Files under an `exclude` folder (the command's own
    output) are left out without a word.
    """
    if accept is None:
        def accept(path: Path) -> str | None:
            return None if looks_like_dicom(path) else "not a DICOM file"
    excluded = tuple(e.resolve() for e in exclude)
    found = Inputs()
    seen: set[Path] = set()
    for item in inputs:
        if item.is_dir():
            candidates = []
            for path in sorted(item.rglob("*")):
                rel = path.relative_to(item)
                if any(part.startswith(".") for part in rel.parts) or not path.is_file():
                    continue
                if path.name.upper() == "DICOMDIR":
                    found.skipped.append((path, "a DICOMDIR (media index), not an instance"))
                    continue
                candidates.append(path)
            explicit = False
        elif item.is_file():
            candidates, explicit = [item], True
        elif item.exists():
            found.missing.append((item, "not a regular file or folder"))
            continue
        else:
            found.missing.append((item, "no such file or folder"))
            continue
        for path in candidates:
            resolved = path.resolve()
            if resolved in seen or any(resolved.is_relative_to(e) for e in excluded):
                continue
            seen.add(resolved)
            if not explicit:
                why = accept(path)
                if why is not None:
                    found.skipped.append((path, why))
                    continue
            found.files.append((path, explicit))
    return found


def print_skipped(inputs: Inputs) -> None:
    for path, why in inputs.skipped:
        print(f"skipped {path}: {why}", file=sys.stderr)


def output_folder_problem(path: Path) -> str | None:
    """Create the output folder; what is wrong with it (None when it is usable)."""
    if path.exists() and not path.is_dir():
        return f"output {path} exists and is not a folder"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except NotADirectoryError:
        return f"cannot create output folder {path}: a part of its path is a file"
    except OSError as exc:
        return f"cannot create output folder {path}: {exc.strerror or exc}"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"output folder {path} is not writable by this user"
    return None


def find_media_inputs(inputs: list[Path]) -> Inputs:
    """Inputs found; in folders, files that are neither images, videos nor DICOM are skipped
    and listed."""
    from dicom_deid.faces.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES, is_dicom

    def accept(path: Path) -> str | None:
        if path.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES or is_dicom(path):
            return None
        return "not an image, a video or DICOM"

    return find_inputs(inputs, accept)


def output_name(path: Path, inputs: list[Path]) -> Path:
    """The output path relative to the output folder: folders keep their inner layout."""
    for item in inputs:
        if item.is_dir() and path.is_relative_to(item):
            return path.relative_to(item)
    return Path(path.name)


def gather_media(command: str, inputs: list[Path],
                 output: Path) -> tuple[Inputs, list[tuple[Path, Path]]] | None:
    """The inputs of a pixels-only command (`faces`, `text`) with their output names, skips
    listed; None (after saying why on stderr) when there is nothing to do or the output
    folder is unusable."""
    found = find_media_inputs(inputs)
    print_skipped(found)
    items = [(p, output_name(p, inputs)) for p in found.paths]
    if not items and not found.missing:
        print(f"dicom-deid {command}: no input files found", file=sys.stderr)
        return None
    problem = output_folder_problem(output)
    if problem:
        print(f"dicom-deid {command}: {problem}", file=sys.stderr)
        return None
    return found, items


def claim_output(src: Path, dst: Path, output: Path, seen: set[Path]) -> None:
    """Check that `dst` may be written for `src` (one output per input, never the input
    itself, never outside `output`), record it in `seen` and create its folder.

    Raises MediaError naming the input. Used by the commands that keep input file names
    (faces, text)."""
    from dicom_deid.faces.media import MediaError

    if not src.is_file():
        raise MediaError(f"{src}: no such file")
    target = dst.resolve()
    if target in seen:
        raise MediaError(f"{src}: output {dst} would overwrite another input's output")
    if target == src.resolve():
        raise MediaError(f"{src}: output would overwrite the input itself")
    if not target.is_relative_to(output.resolve()):
        raise MediaError(f"{src}: output path escapes {output}")
    seen.add(target)
    dst.parent.mkdir(parents=True, exist_ok=True)
