"""Drop the routine lines that MediaPipe's C++ code writes straight to file descriptor 2.

MediaPipe 0.10 logs through absl, which ignores GLOG_minloglevel and has no environment
switch, and TensorFlow Lite prints its delegate notes with fprintf. Neither passes through
Python, so the only place to sort them out is the descriptor itself: fd 2 becomes a pipe that
a thread copies to the real stderr, leaving out INFO and WARNING lines in those libraries'
formats. Errors (E/F lines) and anything else pass unchanged. Python's own sys.stderr is
re-opened on the real stderr, so progress bars still see a terminal.
"""

from __future__ import annotations

import atexit
import io
import os
import re
import sys
import threading

# glog/absl lines `I0000 00:00:1796595539.485334   18656 file.cc:114] ...` (I and W only),
# absl's note that precedes them, and TensorFlow Lite's `INFO: ...` lines.
NOISE = re.compile(
    rb"^(?:[IW]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w./-]+:\d+\]"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|INFO: (?:Created TensorFlow Lite|Initialized TensorFlow Lite))"
)


def is_noise(line: bytes) -> bool:
    return NOISE.match(line) is not None


def _pump(read_fd: int, write_fd: int) -> None:
    pending = b""
    with os.fdopen(read_fd, "rb", buffering=0) as source:
        while True:
            chunk = source.read(65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            out = b"".join(line + b"\n" for line in lines if not is_noise(line))
            if out:
                os.write(write_fd, out)
    if pending and not is_noise(pending):
        os.write(write_fd, pending)


def install() -> None:
    """Filter fd 2 for the rest of this process (and the processes it starts)."""
    try:
        real = os.dup(2)
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 2)
        os.close(write_fd)
    except OSError:
        return  # no usable stderr: nothing to filter
    sys.stderr.flush()
    sys.stderr = io.TextIOWrapper(os.fdopen(os.dup(real), "wb", buffering=0),
                                  encoding=sys.stderr.encoding or "utf-8",
                                  errors="backslashreplace", line_buffering=True,
                                  write_through=True)
    thread = threading.Thread(target=_pump, args=(read_fd, real), name="stderr-filter",
                              daemon=True)
    thread.start()

    def restore() -> None:
        # Putting the real stderr back closes our end of the pipe: the thread sees the end
        # of it (unless a child still holds it) and writes what is left.
        try:
            sys.stderr.flush()
            os.dup2(real, 2)
        except (OSError, ValueError):
            return
        thread.join(timeout=2)

    atexit.register(restore)
