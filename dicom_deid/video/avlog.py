"""Collect FFmpeg's error messages while a stream is decoded.

FFmpeg conceals many bitstream errors (a damaged slice becomes a smeared block) and reports them
only through its log; a frame-accurate reader must see them. PyAV's logging is process-wide and
off by default, so it is switched to ERROR while at least one watcher is active and restored
afterwards.
"""

from __future__ import annotations

import threading

import av.logging

_lock = threading.Lock()
_active = 0
_saved_level: int | None = None
_capture: av.logging.Capture | None = None
_logs_ref: list[list[tuple[int, str, str]]] = []

_IGNORED_PREFIXES = ("libx264", "libx265", "swscaler")


class DecoderErrors:
    """Context manager: `errors()` lists the error messages logged since it was entered."""

    def __init__(self) -> None:
        self._start = 0

    def __enter__(self) -> DecoderErrors:
        global _active, _saved_level, _capture
        with _lock:
            if _active == 0:
                _saved_level = av.logging.get_level()
                if _saved_level is None or _saved_level < av.logging.ERROR:
                    av.logging.set_level(av.logging.ERROR)
                _capture = av.logging.Capture(local=False)
                _capture.__enter__()
                # Capture appends into its own list; alias it so watchers can index into it.
                _logs_ref.clear()
                _logs_ref.append(_capture.logs)
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
                av.logging.set_level(_saved_level)

