"""Progress of a CLI run over files: tqdm bars on a terminal (files, and frames with an ETA
inside videos), plain lines when stderr is redirected, so that a log shows the run advancing.
Videos report their frames through dicom_deid.progress while a RunProgress is open."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

LINE_EVERY = 30.0  # seconds between progress lines inside a video when stderr is redirected


class RunProgress:
    """A file bar and, inside long videos, a frame bar with ETA (tqdm) on a terminal; one
    line per finished file when stderr is redirected, so a log shows the run advancing."""

    def __init__(self, total: int, unit_desc: str, file_lines: bool = True):
        import time

        from tqdm import tqdm

        from dicom_deid.progress import reporting

        self.total, self.done, self.tty = total, 0, sys.stderr.isatty()
        self.file_lines = file_lines
        self.last = time.monotonic()
        self.files = tqdm(total=total, unit="file", file=sys.stderr, disable=not self.tty,
                          desc=unit_desc, position=0)
        self._reporting = reporting(self._frames if self.tty else self._frame_lines)
        self._reporting.__enter__()

    def _frame_lines(self, total: int | None):
        """Redirected: a line every LINE_EVERY seconds inside a long video, with an ETA."""
        import time

        started = last = time.monotonic()
        count = 0

        def tick() -> None:
            nonlocal last, count
            count += 1
            now = time.monotonic()
            if now - last < LINE_EVERY:
                return
            last = now
            rate = count / (now - started)
            eta = f", about {(total - count) / rate:.0f} s left" if total and rate else ""
            print(f"[{self.done + 1}/{self.total}]   frame {count}"
                  + (f"/{total}" if total else "") + f" ({rate:.1f} frames/s{eta})",
                  file=sys.stderr, flush=True)
        return tick

    def _frames(self, total: int | None):
        from tqdm import tqdm

        bar = tqdm(total=total, unit="frame", file=sys.stderr, leave=False, position=1,
                   desc="  frames")
        self._bar = bar

        def tick() -> None:
            bar.update(1)
            if total is not None and bar.n >= total:
                bar.close()
        return tick

    def file_done(self, path: Path, ok: bool) -> None:
        import time

        self.done += 1
        bar = getattr(self, "_bar", None)
        if bar is not None:
            bar.close()
            self._bar = None
        if self.tty:
            self.files.update(1)
            return
        now = time.monotonic()
        if not self.file_lines:
            return
        print(f"[{self.done}/{self.total}] {path.name}: {'done' if ok else 'FAILED'} "
              f"({now - self.last:.1f} s)", file=sys.stderr, flush=True)
        self.last = now

    def close(self) -> None:
        bar = getattr(self, "_bar", None)
        if bar is not None:
            bar.close()
        self.files.close()
        self._reporting.__exit__(None, None, None)

    def iterate(self, items: Iterable[Any]) -> Iterator[Any]:
        """Yield items (a path, or a tuple starting with one), counting each as done when the
        loop comes back for the next, then close."""
        try:
            for item in items:
                yield item
                self.file_done(Path(item[0] if isinstance(item, tuple) else item), True)
        finally:
            self.close()
