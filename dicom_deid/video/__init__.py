"""Video stage: DICOM pixel data <-> RGB frames, and re-encoding.

    has_video(ds) -> bool
    with open_frames(path_or_dataset) as reader:   # streaming, bounded memory
        reader.info                                  # VideoInfo
        for rgb in reader: ...                       # HxWx3 uint8
    report = write_frames(template_ds, frames, out_path, reader.info, transfer_syntax="same",
                          quality=None, sop_instance_uid=..., source=(class_uid, instance_uid),
                          keep_audio=False, pixels_changed=False)

PyAV is imported by the modules that decode and encode, so importing this package costs what
PyAV costs; the CLI imports it inside its command functions.
"""

from dicom_deid.video.errors import VideoError
from dicom_deid.video.info import VideoInfo
from dicom_deid.video.reader import FrameReader, has_video, open_frames
from dicom_deid.video.writer import WriteReport, write_frames

__all__ = [
    "FrameReader",
    "VideoError",
    "VideoInfo",
    "WriteReport",
    "has_video",
    "open_frames",
    "write_frames",
]
