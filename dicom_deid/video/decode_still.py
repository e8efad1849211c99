"""Frames of native and still-image-compressed multi-frame instances, through pydicom.

pydicom 3's iter_pixels reads one frame at a time from a path; its plugins (pylibjpeg, libjpeg,
openjpeg, RLE, pyjpegls) do the decompression and YBR_FULL/YBR_FULL_422 to RGB conversion.
What remains here is making every frame HxWx3 uint8 RGB: grey and palette data are expanded,
MONOCHROME1 is inverted, and data deeper than 8 bits is reduced to its 8 most significant bits.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, iter_pixels

from dicom_deid.video.errors import VideoError


def _to_uint8(arr: np.ndarray, bits_stored: int, signed: bool) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if signed:
        arr = arr.astype(np.int32) + (1 << (bits_stored - 1))
    shift = max(0, bits_stored - 8)
    return np.clip(arr.astype(np.int64) >> shift, 0, 255).astype(np.uint8)


def _ybr_partial_to_rgb(arr: np.ndarray) -> np.ndarray:
    # BT.601 limited range, the definition of YBR_PARTIAL in PS3.3 C.7.6.3.1.2.
    y = arr[..., 0].astype(np.float32) - 16.0
    cb = arr[..., 1].astype(np.float32) - 128.0
    cr = arr[..., 2].astype(np.float32) - 128.0
    r = 1.164 * y + 1.596 * cr
    g = 1.164 * y - 0.392 * cb - 0.813 * cr
    b = 1.164 * y + 2.017 * cb
    return np.clip(np.stack([r, g, b], axis=-1) + 0.5, 0, 255).astype(np.uint8)


def frame_to_rgb(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    """One decoded frame (as pydicom returns it, colour already converted) to HxWx3 uint8 RGB."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    bits_stored = int(ds.get("BitsStored", 8) or 8)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        bits = 16 if rgb.dtype != np.uint8 else 8
        return _to_uint8(rgb, bits, False)
    if arr.ndim == 2:
        grey = _to_uint8(arr, bits_stored, signed)
        if photometric == "MONOCHROME1":
            grey = 255 - grey
        return np.repeat(grey[:, :, None], 3, axis=2)
    rgb = _to_uint8(arr, bits_stored, signed)
    if photometric.startswith("YBR_PARTIAL"):
        rgb = _ybr_partial_to_rgb(rgb)
    return np.ascontiguousarray(rgb)


def iter_rgb(src: str | Dataset, ds: Dataset, name: str) -> Iterator[np.ndarray]:
    """Yield every frame of `src` (a path or a Dataset) as RGB uint8."""
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    # pydicom converts YBR_FULL(_422) itself; partial-range YBR (native only) is converted here.
    as_rgb = not photometric.startswith("YBR_PARTIAL")
    index = 0
    try:
        for arr in iter_pixels(src, as_rgb=as_rgb):
            index += 1
            yield frame_to_rgb(arr, ds)
    except VideoError:
        raise
    except Exception as exc:  # pydicom and its plugins raise many exception types on bad data
        raise VideoError(name, f"cannot decode frame {index + 1} ({type(exc).__name__}: {exc})") from exc
