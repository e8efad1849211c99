"""Per-frame progress of long videos, reported to whoever asked for it.

The pixel stage calls `start_frames(total)` when it opens a video and the returned function
once per frame. Nothing is reported unless a caller (the CLI, when its stderr is a terminal)
installed a reporter with `reporting(factory)`; the node installs none, so this costs a
function call per frame there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any

Tick = Callable[[], None]
Factory = Callable[[int | None], Tick]

_factory: ContextVar[Factory | None] = ContextVar("dicom_deid_frame_progress", default=None)


def _nothing() -> None:
    return None


def start_frames(total: int | None) -> Tick:
    """A function to call once per frame of a video of `total` frames (None: unknown)."""
    factory = _factory.get()
    return factory(total) if factory is not None else _nothing


@contextlib.contextmanager
def reporting(factory: Factory) -> Iterator[None]:
    """Within this block, videos report their frames through factory(total) -> tick."""
    token = _factory.set(factory)
    try:
        yield
    finally:
        _factory.reset(token)


def counted(frames: Iterable[Any], total: int | None) -> Iterator[Any]:
    """frames, reporting each one as it is taken (for code that hands an iterable on)."""
    tick = start_frames(total)
    for frame in frames:
        tick()
        yield frame
