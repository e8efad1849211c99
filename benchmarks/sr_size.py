#!/usr/bin/env python
"""Size and build time of the keypoint SR for a 60 s, 30 fps video (1800 frames).

Synthetic keypoints with every set in every frame (pose 33, both hands 21, face mesh 478: the
worst case), through `build_keypoint_sr` and `save_as`, for the profile's options: the full
mesh or the documented contour subset (FACE_CONTOUR_POINTS, 139 points), and frame_step 1, 2, 5.

Reference runs in the same script, so the numbers are comparable on a loaded machine:
- size: the bare float32 (x, y) payload of the same points (what any format must hold);
- time: the same full-mesh SR built the plain highdicom way (a ScoordContentItem and an
  ImageContentItem per frame and set), which is what build_keypoint_sr avoids.

    .venv/bin/python benchmarks/sr_size.py [--frames 1800] [--json out.json] [--no-reference]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pydicom.uid import generate_uid  # noqa: E402

from dicom_deid.keypoints import (  # noqa: E402
    FACE_CONTOUR_POINTS,
    SETS,
    FrameKeypoints,
    build_keypoint_sr,
    invariance,
    read_keypoint_sr,
)
from tests.keypoints.conftest import video_header  # noqa: E402


def synthesise(frames: int, width: int = 1280, height: int = 720, face: bool = True,
               seed: int = 0) -> list[FrameKeypoints]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(frames):
        def pts(n: int) -> np.ndarray:
            return (rng.uniform(0, 1, (n, 3)) * (width, height, width)).astype(np.float32)
        out.append(FrameKeypoints(width, height, pose=pts(33),
                                  pose_visibility=rng.uniform(0, 1, 33), left_hand=pts(21),
                                  right_hand=pts(21), face=pts(478) if face else None))
    return out


def naive_build(header, kps: list[FrameKeypoints]):
    """The same document with highdicom content items for every frame (the reference)."""
    import highdicom as hd
    from highdicom.sr import (
        CodedConcept,
        ContainerContentItem,
        ContentSequence,
        ImageContentItem,
        RelationshipTypeValues,
        ScoordContentItem,
    )

    from dicom_deid.keypoints.sr import SCHEME, SET_CODES

    contains = RelationshipTypeValues.CONTAINS
    source = CodedConcept("121112", "DCM", "Source of Measurement")
    root = ContainerContentItem(CodedConcept("KP-REPORT", SCHEME, "Keypoint report"),
                                is_content_continuous=False)
    groups = ContentSequence()
    for name in SETS:
        concept = CodedConcept(SET_CODES[name][0], SCHEME, SET_CODES[name][1])
        group = ContainerContentItem(concept, is_content_continuous=False,
                                     relationship_type=contains)
        items = ContentSequence()
        for i, kp in enumerate(kps):
            points = kp.get(name)
            if points is None:
                continue
            item = ScoordContentItem(concept, "MULTIPOINT", points[:, :2],
                                     relationship_type=contains)
            item.ContentSequence = ContentSequence([ImageContentItem(
                source, header.SOPClassUID, header.SOPInstanceUID, referenced_frame_numbers=i + 1,
                relationship_type=RelationshipTypeValues.SELECTED_FROM)])
            items.append(item)
        group.ContentSequence = items
        groups.append(group)
    root.ContentSequence = groups
    return hd.sr.ComprehensiveSR(evidence=[header], content=root, series_instance_uid=generate_uid(),
                                 series_number=1, sop_instance_uid=generate_uid(),
                                 instance_number=1, manufacturer="dicom-deid")


def measure(label: str, header, kps, metrics, tmp: Path, *, read_back: bool = False,
            **kwargs) -> dict:
    t0 = time.perf_counter()
    sr = build_keypoint_sr(header, kps, metrics, series_uid=generate_uid(),
                           sop_uid=generate_uid(), **kwargs)
    t1 = time.perf_counter()
    path = tmp / f"{label}.dcm"
    sr.save_as(path, enforce_file_format=True)
    t2 = time.perf_counter()
    row = {"case": label, "bytes": path.stat().st_size, "build_s": round(t1 - t0, 2),
           "write_s": round(t2 - t1, 2)}
    step = kwargs.get("frame_step", 1)
    face_n = len(kwargs["face_points"]) if kwargs.get("face_points") else SETS["face"]
    payload = sum(
        (face_n if name == "face" else SETS[name]) * 8
        for kp in kps[::step] for name in kp.present())
    row["payload_bytes"] = payload
    row["bytes_per_payload"] = round(row["bytes"] / payload, 3)
    if read_back:
        t3 = time.perf_counter()
        back = read_keypoint_sr(path)
        row["read_s"] = round(time.perf_counter() - t3, 2)
        assert len(back) == len(kps[::step])
        t4 = time.perf_counter()
        back = read_keypoint_sr(path, highdicom=False)
        row["read_pydicom_s"] = round(time.perf_counter() - t4, 2)
    path.unlink()
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1800, help="frames (60 s at 30 fps: 1800)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the plain-highdicom reference build (the slow one)")
    args = parser.parse_args()

    n = args.frames
    header = video_header(n)
    full = synthesise(n)
    metrics = invariance(full, full, fallback_frames=0, leak_frames=0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        # Warm-up: highdicom loads its IOD tables once per process (about 1 s).
        measure("warm-up", video_header(2), full[:2], None, tmp)
        rows.append(measure("all sets, face 478, every frame", header, full, metrics, tmp,
                            read_back=True))
        rows.append(measure("all sets, face contour 139, every frame", header, full, metrics,
                            tmp, face_points=FACE_CONTOUR_POINTS))
        rows.append(measure("all sets, face 478, frame_step 2", header, full, metrics, tmp,
                            frame_step=2))
        rows.append(measure("all sets, face 478, frame_step 5", header, full, metrics, tmp,
                            frame_step=5))
        rows.append(measure("pose and hands only, every frame", header, synthesise(n, face=False),
                            metrics, tmp))
        reference = None
        if not args.no_reference:
            t0 = time.perf_counter()
            sr = naive_build(header, full)
            t1 = time.perf_counter()
            sr.save_as(tmp / "naive.dcm", enforce_file_format=True)
            t2 = time.perf_counter()
            reference = {"case": "reference: plain highdicom items, face 478, every frame",
                         "bytes": (tmp / "naive.dcm").stat().st_size,
                         "build_s": round(t1 - t0, 2), "write_s": round(t2 - t1, 2)}
    main_row = rows[0]
    for row in rows:
        row["size_vs_full"] = round(row["bytes"] / main_row["bytes"], 3)
        if reference:
            row["build_vs_reference"] = round(row["build_s"] / reference["build_s"], 3)
            row["build_write_vs_reference"] = round(
                (row["build_s"] + row["write_s"]) / (reference["build_s"] + reference["write_s"]),
                3)
    print(f"keypoint SR for {n} frames ({n / 30:.0f} s at 30 fps)")
    for row in rows + ([reference] if reference else []):
        extra = ""
        if "build_write_vs_reference" in row:
            extra = f"  build+write x{row['build_write_vs_reference']} of reference"
        if "read_s" in row:
            extra += (f"  read back: highdicom {row['read_s']:.2f} s,"
                      f" pydicom {row['read_pydicom_s']:.2f} s")
        print(f"  {row['case']:<48} {row['bytes'] / 1e6:7.2f} MB  build {row['build_s']:6.2f} s"
              f"  write {row['write_s']:6.2f} s{extra}")
    if args.json:
        args.json.write_text(json.dumps({"frames": n, "rows": rows, "reference": reference},
                                        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
