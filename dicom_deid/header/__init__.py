"""Header stage: PS3.15 Annex E de-identification (see docs/CONTRACTS.md).

    profile = load_profile("basic", options=("retain-uids",))
    new_ds = deidentify_dataset(ds, profile, key, pixels=None)
"""

from dicom_deid.header.engine import (
    DeidentificationError,
    HeaderResult,
    deidentify,
    deidentify_dataset,
    mark_pixels,
)
from dicom_deid.header.fileio import InputError, read_instance, write_atomic
from dicom_deid.header.keys import KeyFileError, SiteKey, load_key
from dicom_deid.header.options import OPTIONS
from dicom_deid.header.pixels import PixelStatus, has_pixels, may_show_face
from dicom_deid.header.profile import (
    Profile,
    ProfileError,
    load_profile,
    shipped_profiles,
)

__all__ = [
    "OPTIONS",
    "DeidentificationError",
    "HeaderResult",
    "InputError",
    "KeyFileError",
    "PixelStatus",
    "Profile",
    "ProfileError",
    "SiteKey",
    "deidentify",
    "deidentify_dataset",
    "has_pixels",
    "load_key",
    "load_profile",
    "mark_pixels",
    "may_show_face",
    "read_instance",
    "shipped_profiles",
    "write_atomic",
]
