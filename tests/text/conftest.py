"""Fixtures of the text tests: the OCR models load once per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def detector():
    from dicom_deid.text.ppocr import shared_detector

    return shared_detector()


@pytest.fixture(scope="session")
def recognizer():
    from dicom_deid.text.ppocr import shared_recognizer

    return shared_recognizer()
