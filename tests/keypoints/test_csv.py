"""The tidy keypoint CSV."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from dicom_deid.keypoints import SETS, point_names, write_keypoints_csv
from tests.keypoints.conftest import synthetic_keypoints


def test_csv_rows_and_values(tmp_path: Path) -> None:
    kps = synthetic_keypoints(5)
    path = write_keypoints_csv(tmp_path / "kp.csv", kps)
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["frame", "set", "point", "name", "x", "y", "z", "visibility"]
    assert len(rows) == sum(SETS[s] for kp in kps for s in kp.present())
    assert [p.name for p in tmp_path.iterdir()] == ["kp.csv"], "no temp file left behind"
    by_key = {(int(r["frame"]), r["set"], int(r["point"])): r for r in rows}
    for index, kp in enumerate(kps):
        for name in SETS:
            points = kp.get(name)
            present = {k for k in by_key if k[0] == index + 1 and k[1] == name}
            if points is None:
                assert not present
                continue
            assert len(present) == SETS[name]
            for i in range(SETS[name]):
                row = by_key[(index + 1, name, i)]
                assert row["name"] == point_names(name)[i]
                got = np.float32([row["x"], row["y"], row["z"]])
                assert np.array_equal(got, points[i]), (index, name, i)
                if name == "pose":
                    assert np.float32(row["visibility"]) == kp.pose_visibility[i]
                else:
                    assert row["visibility"] == ""


def test_csv_of_no_keypoints_has_a_header_only(tmp_path: Path) -> None:
    path = write_keypoints_csv(tmp_path / "empty.csv", [])
    assert path.read_text() == "frame,set,point,name,x,y,z,visibility\n"
