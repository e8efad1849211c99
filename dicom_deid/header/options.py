"""The twelve PS3.15 options (DESIGN.md names) and their CID 7050 codes."""

from __future__ import annotations

from collections.abc import Iterable

# Option name -> (CID 7050 code value, code meaning). Order is the order they are reported in.
OPTION_CODES: dict[str, tuple[str, str]] = {
    "clean-pixel-data": ("113101", "Clean Pixel Data Option"),
    "clean-recognizable-visual-features": ("113102", "Clean Recognizable Visual Features Option"),
    "clean-graphics": ("113103", "Clean Graphics Option"),
    "clean-structured-content": ("113104", "Clean Structured Content Option"),
    "clean-descriptors": ("113105", "Clean Descriptors Option"),
    "retain-longitudinal-full-dates": (
        "113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    "retain-longitudinal-modified-dates": (
        "113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    "retain-patient-characteristics": ("113108", "Retain Patient Characteristics Option"),
    "retain-device-identity": ("113109", "Retain Device Identity Option"),
    "retain-uids": ("113110", "Retain UIDs Option"),
    "retain-safe-private": ("113111", "Retain Safe Private Option"),
    "retain-institution-identity": ("113112", "Retain Institution Identity Option"),
}
BASIC_PROFILE_CODE = ("113100", "Basic Application Confidentiality Profile")

OPTIONS: tuple[str, ...] = tuple(OPTION_CODES)

# Options that are carried out on the pixels, not in the header: the header engine only
# reports them, and only when the pixel stage says it did them (PixelStatus).
PIXEL_OPTIONS = frozenset({"clean-pixel-data", "clean-recognizable-visual-features"})
HEADER_OPTIONS = frozenset(OPTIONS) - PIXEL_OPTIONS


def check_options(options: str | Iterable[str] | None) -> tuple[str, ...]:
    """Validate option names; returns them de-duplicated in canonical order."""
    if isinstance(options, str):
        options = [options]
    names = [str(o).strip() for o in (options or ())]
    unknown = sorted(set(names) - set(OPTIONS))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)}; known: {', '.join(OPTIONS)}"
        )
    chosen = set(names)
    if {"retain-longitudinal-full-dates", "retain-longitudinal-modified-dates"} <= chosen:
        raise ValueError(
            "retain-longitudinal-full-dates and retain-longitudinal-modified-dates "
            "exclude each other: choose one"
        )
    return tuple(o for o in OPTIONS if o in chosen)
