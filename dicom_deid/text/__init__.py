"""Burned-in text: find text in the pixels and cover it (the clean-pixel-data option).

    stage = TextStage(mode="redact-all" | "redact-phi" | "off", phi=PhiTerms.from_dataset(ds))
    for out in stage.stream(frames): ...      # video: key frames + region checks, fail closed
    out = stage.process_image(rgb)            # stills
    report = stage.close()                    # TextReport (counts only)

Detection and recognition are PP-OCRv4 on ONNX Runtime (ppocr.py, models/ppocr); the
recogniser is loaded only for redact-phi.
"""

from dicom_deid.text.phi import PhiTerms
from dicom_deid.text.stage import DEFAULT_KEY_INTERVAL, MODES, TextReport, TextStage

__all__ = ["DEFAULT_KEY_INTERVAL", "MODES", "PhiTerms", "TextReport", "TextStage"]
