"""The evaluation manifest: a CSV of captures with identity labels, and their frames.

Columns: `path,identity,role[,deidentified]`. role is `gallery` (an original capture of the
identity), `probe` (another capture, de-identified by each method before the attacks) or
`distractor` (a gallery identity with no probe). `deidentified`, when present, points at an
already de-identified version of the row's capture (evaluated as the method `deidentified`).
Relative paths are relative to the manifest's folder. A path may be an image, a plain video or a
DICOM instance (single or multi-frame).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dicom_deid.errors import DeidError
from dicom_deid.faces.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES, is_dicom

ROLES = ("gallery", "probe", "distractor")
REQUIRED = ("path", "identity", "role")


class ManifestError(DeidError, ValueError):
    """A manifest that cannot be used, naming the file, the row and the problem."""


@dataclass(frozen=True)
class Entry:
    path: Path
    identity: str
    role: str
    kind: str                       # image | video | dicom
    deidentified: Path | None = None
    row: int = 0

    @property
    def name(self) -> str:
        return self.path.name


def media_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if is_dicom(path):
        return "dicom"
    raise ManifestError(f"{path}: not an image ({', '.join(IMAGE_SUFFIXES)}), a video "
                        f"({', '.join(VIDEO_SUFFIXES)}) or a DICOM file")


def read_manifest(path: str | Path) -> list[Entry]:
    """Entries of a manifest CSV; ManifestError naming the row for any bad value."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read the manifest ({exc.strerror})") from exc
    reader = csv.DictReader(text.splitlines())
    columns = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise ManifestError(f"{path}: missing column(s) {', '.join(missing)}; expected "
                            f"path,identity,role[,deidentified], found {','.join(columns) or 'none'}")
    base = path.parent
    entries: list[Entry] = []
    seen: set[tuple[Path, str]] = set()
    for number, raw in enumerate(reader, start=2):
        row = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        if not any(row.values()):
            continue
        where = f"{path}, row {number}"
        if not row["path"]:
            raise ManifestError(f"{where}: empty path")
        if not row["identity"]:
            raise ManifestError(f"{where}: empty identity")
        role = row["role"].lower()
        if role not in ROLES:
            raise ManifestError(f"{where}: role {row['role']!r} is not one of {', '.join(ROLES)}")
        media = (base / row["path"]).resolve()
        if not media.is_file():
            raise ManifestError(f"{where}: {row['path']} does not exist")
        deid = None
        if row.get("deidentified"):
            deid = (base / row["deidentified"]).resolve()
            if not deid.is_file():
                raise ManifestError(f"{where}: deidentified {row['deidentified']} does not exist")
        if (media, role) in seen:
            raise ManifestError(f"{where}: {row['path']} is listed twice as {role}")
        seen.add((media, role))
        try:
            kind = media_kind(media)
        except ManifestError as exc:
            raise ManifestError(f"{where}: {exc}") from exc
        entries.append(Entry(media, row["identity"], role, kind, deid, number))
    if not entries:
        raise ManifestError(f"{path}: no rows")
    return entries


@dataclass(frozen=True)
class Source:
    """Frames of one capture: fps and an iterator of RGB uint8 frames."""

    fps: float
    frames: Iterator[np.ndarray]


def open_source(path: Path, max_frames: int | None = None) -> Source:
    """Frames of an image (one), a video or a DICOM instance, at most max_frames."""
    kind = media_kind(path)
    if kind == "image":
        from dicom_deid.faces.media import read_image

        return Source(25.0, iter([read_image(path)]))
    if kind == "video":
        from dicom_deid.faces.media import probe_video, read_video

        fps = float(probe_video(path).fps)
        return Source(fps, _limit(read_video(path), max_frames))
    return Source(_dicom_fps(path), _limit(_dicom_frames(path), max_frames))


def _dicom_fps(path: Path) -> float:
    from dicom_deid.video import open_frames

    with open_frames(path) as reader:
        fps = getattr(reader.info, "fps", None)
    return float(fps) if fps else 25.0


def _dicom_frames(path: Path) -> Iterator[np.ndarray]:
    import pydicom

    from dicom_deid.video import has_video, open_frames

    ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    if has_video(ds):
        with open_frames(path) as reader:
            yield from reader
        return
    # A single-frame instance (a photograph).
    from pydicom.pixels import pixel_array

    arr = pixel_array(str(path))
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.dtype != np.uint8:
        arr = np.clip(arr.astype(np.float64) / max(1.0, float(arr.max())) * 255.0, 0, 255).astype(np.uint8)
    yield np.ascontiguousarray(arr)


def _limit(frames: Iterator[np.ndarray], max_frames: int | None) -> Iterator[np.ndarray]:
    for i, frame in enumerate(frames):
        if max_frames is not None and i >= max_frames:
            return
        yield np.ascontiguousarray(frame)
