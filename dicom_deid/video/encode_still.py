"""Encode frames one at a time for the still-image syntaxes, into one spool file.

Native frames are appended raw. RLE, JPEG-LS and JPEG 2000 use pydicom's encoders (with the
pyjpegls and openjpeg plugins); baseline JPEG uses OpenCV with 4:2:2 chroma subsampling, which
is what YBR_FULL_422 declares. Each frame's (offset, length) in the spool is kept so the writer
can encapsulate one item per frame without reading the spool back into memory.

Quality: JPEG baseline, the libjpeg quality 1..100 (higher is better, default 95); JPEG-LS
near-lossless, the NEAR maximum error 1..255 (default 2); JPEG 2000 lossy, the target PSNR in dB
(default 50). Lossless syntaxes ignore it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np
from pydicom.uid import (
    JPEG2000,
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from dicom_deid.video.errors import VideoError

DEFAULT_STILL_QUALITY = {JPEGBaseline8Bit: 95, JPEGLSNearLossless: 2, JPEG2000: 50}
LOSSY_METHOD = {JPEGBaseline8Bit: "ISO_10918_1", JPEGLSNearLossless: "ISO_14495_1", JPEG2000: "ISO_15444_1"}
NATIVE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


@dataclass
class StillResult:
    frames: int
    segments: list[tuple[int, int]]
    photometric: str
    lossy: bool
    quality: float | None


def photometric_for(syntax: UID, grey: bool) -> str:
    if grey:
        return "MONOCHROME2"
    return {JPEGBaseline8Bit: "YBR_FULL_422", JPEG2000Lossless: "YBR_RCT", JPEG2000: "YBR_ICT"}.get(syntax, "RGB")


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of an RGB frame, for grey outputs."""
    y = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    return np.clip(y + 0.5, 0, 255).astype(np.uint8)


class StillEncoder:
    def __init__(self, fd: int, syntax: UID, rows: int, columns: int, grey: bool, quality: float | None, name: str) -> None:
        self.fd = fd
        self.syntax = syntax
        self.rows, self.columns = rows, columns
        self.grey = grey
        self.name = name
        self.quality = quality if quality is not None else DEFAULT_STILL_QUALITY.get(syntax)
        self.photometric = photometric_for(syntax, grey)
        self.segments: list[tuple[int, int]] = []
        self._offset = 0
        self._encoder = None
        self._kwargs: dict = {}
        if syntax in (RLELossless, JPEGLSLossless, JPEGLSNearLossless, JPEG2000Lossless, JPEG2000):
            from pydicom.pixels import get_encoder

            self._encoder = get_encoder(syntax)
            if not self._encoder.is_available:
                raise VideoError(name, f"no encoder plugin is installed for {syntax.name}")
            self._kwargs = {
                "rows": rows, "columns": columns, "samples_per_pixel": 1 if grey else 3,
                "photometric_interpretation": "MONOCHROME2" if grey else "RGB",
                "bits_allocated": 8, "bits_stored": 8, "pixel_representation": 0,
                "number_of_frames": 1, "planar_configuration": 0,
            }
            if syntax == JPEGLSNearLossless:
                assert self.quality is not None         # every lossy syntax has a default
                self._kwargs["jls_error"] = int(self.quality)
            elif syntax == JPEG2000:
                assert self.quality is not None
                self._kwargs["j2k_psnr"] = [float(self.quality)]
        elif syntax == JPEGBaseline8Bit:
            assert self.quality is not None
            q = int(self.quality)
            if not 1 <= q <= 100:
                raise ValueError(f"JPEG quality {q} is outside 1..100")
            self._jpeg_params = [cv2.IMWRITE_JPEG_QUALITY, q]
            if not grey:
                self._jpeg_params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422]
        elif syntax not in NATIVE:
            raise VideoError(name, f"cannot write {syntax}")

    @property
    def lossy(self) -> bool:
        return self.syntax in LOSSY_METHOD

    def encode(self, rgb: np.ndarray) -> None:
        pixels = luma(rgb) if self.grey else rgb
        if self.syntax in NATIVE:
            data = np.ascontiguousarray(pixels).tobytes()
        elif self.syntax == JPEGBaseline8Bit:
            image = pixels if self.grey else cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
            ok, buf = cv2.imencode(".jpg", image, self._jpeg_params)
            if not ok:
                raise VideoError(self.name, f"JPEG encoding failed at frame {len(self.segments) + 1}")
            data = buf.tobytes()
        else:
            try:
                data = self._encoder.encode(np.ascontiguousarray(pixels), **self._kwargs)  # type: ignore[union-attr]
            except Exception as exc:  # plugins raise their own types
                raise VideoError(self.name, f"{self.syntax.name} encoding failed at frame {len(self.segments) + 1} ({exc})") from exc
        written = os.write(self.fd, data)
        while written < len(data):
            written += os.write(self.fd, data[written:])
        self.segments.append((self._offset, len(data)))
        self._offset += len(data)

    def close(self) -> StillResult:
        return StillResult(len(self.segments), self.segments, self.photometric, self.lossy, self.quality if self.lossy else None)
