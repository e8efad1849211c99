"""The node's logging: no data set value, no forged line, bounded floods, private files."""

from __future__ import annotations

import logging
import stat
import threading
import warnings

import pytest

from dicom_deid.node.logs import RateLimiter, escape_controls, redact_quoted, setup_logging


@pytest.fixture()
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    hook, show = threading.excepthook, warnings.showwarning
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    threading.excepthook, warnings.showwarning = hook, show


def test_quoted_values_are_masked_but_words_with_apostrophes_survive():
    assert redact_quoted("Invalid value for VR UI: 'LEAKME^Patient'.") == \
        "Invalid value for VR UI: '<redacted>'."
    text = redact_quoted("can't read b'\\x00DOE' or \"O'BRIEN\" here")
    assert "DOE" not in text and "BRIEN" not in text and text.startswith("can't read")


def test_control_characters_are_escaped():
    assert escape_controls("EVIL\nFAKE\x1b[31m\u2028") == "EVIL\\x0aFAKE\\x1b[31m\\u2028"


def test_rate_limiter_counts_what_it_suppresses():
    limiter = RateLimiter(burst=2, window=0.2)
    assert [limiter.allow("a")[0] for _ in range(5)] == [True, True, False, False, False]
    assert limiter.allow("b") == (True, 0)  # keys are independent
    import time

    time.sleep(0.25)
    assert limiter.allow("a") == (True, 3)


def test_log_file_is_private_rotated_and_phi_free(tmp_path, restore_logging):
    path = tmp_path / "logs" / "node.log"
    path.parent.mkdir()
    path.write_text("")
    path.chmod(0o644)  # an older, wider file is tightened
    setup_logging("INFO", path, max_bytes=64 * 1024, backups=2)
    library = logging.getLogger("pydicom")
    library.warning("Invalid value for VR UI: %r", "LEAKME^Patient")
    for _ in range(50):  # a flood of one library message: at most the burst gets through
        library.error("Unknown PDU type received '0x%02X'", 9)
    logging.getLogger("dicom_deid.node.receiver").warning("calling AE %s", "EVIL\nFAKE")
    for _ in range(1300):  # about 155 KB: two rotations, the first lines now in .2
        logging.getLogger("dicom_deid.node").info("x" * 60)
    for handler in logging.getLogger().handlers:
        handler.flush()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    rotated = sorted(tmp_path.glob("logs/node.log*"))
    assert len(rotated) == 3  # node.log, .1, .2
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in rotated)
    text = "".join(p.read_text() for p in rotated)
    assert "LEAKME" not in text
    assert "EVIL\\x0aFAKE" in text and "\nFAKE" not in text
    assert text.count("Unknown PDU type") <= 10
