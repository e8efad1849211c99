"""Video stage: DICOM pixel data <-> RGB frames, and re-encoding.

    has_video(ds) -> bool
    with open_frames(path_or_dataset) as reader:   # streaming, bounded memory
        reader.info                                  # VideoInfo
        for rgb in reader: ...                       # HxWx3 uint8
    report = write_frames(template_ds, frames, out_path, reader.info, transfer_syntax="same",
                          quality=None, sop_instance_uid=..., source=(class_uid, instance_uid),
                          keep_audio=False, pixels_changed=False)

PyAV and NumPy are imported by the modules that decode and encode, which this package loads
on first use of what they define: `from dicom_deid.video.errors import VideoError` (the
pipeline's except clause, every header-only run) costs nothing of them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dicom_deid.video.errors import VideoError
from dicom_deid.video.info import VideoInfo

if TYPE_CHECKING:
    from dicom_deid.video.reader import FrameReader, has_video, open_frames
    from dicom_deid.video.writer import WriteReport, write_frames

_LAZY = {"FrameReader": "reader", "has_video": "reader", "open_frames": "reader",
         "WriteReport": "writer", "write_frames": "writer"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value

__all__ = [
    "FrameReader",
    "VideoError",
    "VideoInfo",
    "WriteReport",
    "has_video",
    "open_frames",
    "write_frames",
]
