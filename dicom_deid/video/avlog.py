"""Collect FFmpeg's error messages while a stream is decoded.

FFmpeg conceals many bitstream errors (a damaged slice becomes a smeared block) and reports them
only through its log; a frame-accurate reader must see them. PyAV's logging is process-wide and
off by default, so it is switched to ERROR while at least one watcher is active and restored
afterwards. PyAV holds back a message identical to the previous one and releases it, with a
repeat count, only when a different message arrives, which would credit one stream's error to
the next stream decoded; repeat suppression is therefore off while watching, and a marker is
logged on entry to release anything still held back before the watch starts.
"""

from __future__ import annotations

import gc
import threading

import av.logging

_lock = threading.Lock()
_active = 0
_saved_level: int | None = None
_saved_skip: bool = True
_capture: av.logging.Capture | None = None
_logs_ref: list[list[tuple[int, str, str]]] = []

_MARKER = "dicom_deid.avlog"
_IGNORED_PREFIXES = ("libx264", "libx265", "swscaler", _MARKER)


class DecoderErrors:
    """Context manager: `errors()` lists the error messages logged since it was entered."""

    def __init__(self) -> None:
        self._start = 0

    def __enter__(self) -> DecoderErrors:
        global _active, _saved_level, _saved_skip, _capture
        with _lock:
            if _active == 0:
                # Free unreachable codec contexts (threaded ones from other readers) now, while
                # no log callback is installed: freed under the watch, their worker threads
                # could log into a callback that waits for the GIL this thread holds.
                gc.collect()
                _saved_level = av.logging.get_level()
                _saved_skip = av.logging.get_skip_repeated()
                if _saved_level is None or _saved_level < av.logging.ERROR:
                    av.logging.set_level(av.logging.ERROR)
                av.logging.set_skip_repeated(False)
                _capture = av.logging.Capture(local=False)
                _capture.__enter__()
                # Capture appends into its own list; alias it so watchers can index into it.
                _logs_ref.clear()
                _logs_ref.append(_capture.logs)
                # FATAL, not ERROR: PyAV counts ERROR lines into the "last error" of exceptions.
                av.logging.log(av.logging.FATAL, _MARKER, "watch started")
            _active += 1
            self._start = len(_logs_ref[0])
        return self

    def errors(self) -> list[str]:
        logs = _logs_ref[0] if _logs_ref else []
        return [
            f"{name}: {message.strip()}"
            for level, name, message in logs[self._start :]
            if level <= av.logging.ERROR and not name.startswith(_IGNORED_PREFIXES)
        ]

    def __exit__(self, *exc: object) -> None:
        global _active, _capture
        with _lock:
            _active -= 1
            if _active == 0 and _capture is not None:
                _capture.__exit__(None, None, None)
                _capture = None
                av.logging.set_skip_repeated(_saved_skip)
                av.logging.set_level(_saved_level)

