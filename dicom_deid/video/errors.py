"""The one exception type the video stage raises for bad input or impossible output."""

from __future__ import annotations

from pathlib import Path

from dicom_deid.errors import DeidError


class VideoError(DeidError):
    """A video instance cannot be read or written; the message names the file and the problem."""

    def __init__(self, source: str | Path | None, problem: str) -> None:
        self.source = str(source) if source is not None else "<dataset>"
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")
