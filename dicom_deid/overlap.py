"""Background threads that overlap codec work with frame work.

Decoding and encoding video (PyAV/FFmpeg), face tracking (MediaPipe) and detection
(onnxruntime) all spend most of their time in native code that releases the GIL. Run serially
they use one core; with the decoder a few frames ahead in one thread and the encoder a few
frames behind in another, the face work of frame n runs while frame n-1 is being encoded
(measured at 720p on 2 cores: benchmarks/faces_speed.py).

Both helpers keep their promises whatever happens:

- memory stays bounded: at most `depth` items wait in a queue;
- the thread is always joined before the helper is done (a consumer that stops early, an
  exception on either side, `abort`);
- an exception in the thread is raised in the caller, as the same exception object, at the
  point where the caller would have met it serially (the item it failed on, or `close`).

The thread runs only what it is given; objects it uses (a decoder, an encoder) must not be
used by another thread until the helper has joined it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")

# How often a blocked side looks whether the other has stopped (seconds). It bounds how long a
# stop takes, not how fast items move: a waiting get/put returns as soon as an item or slot is
# there.
_POLL_S = 0.05
DEFAULT_DEPTH = 4

_ITEM, _END, _ERROR = range(3)


def prefetch(iterable: Iterable[T], depth: int = DEFAULT_DEPTH,
             name: str = "prefetch") -> Generator[T, None, None]:
    """Iterate `iterable` in a background thread, at most `depth` items ahead of the caller.

    Items, their order and an exception raised by the iterable are the same as iterating it
    directly. When the caller stops early (break, an exception in its loop, closing or dropping
    this generator) the thread stops taking items, closes the iterable (a generator's cleanup
    runs in the thread that ran it) and is joined.
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    items: queue.Queue[tuple[int, object]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[int, object]) -> bool:
        while not stop.is_set():
            try:
                items.put(entry, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        it = iter(iterable)
        try:
            for item in it:
                if not put((_ITEM, item)):
                    return
            put((_END, None))
        except BaseException as exc:  # handed to the caller, who decides what it means
            put((_ERROR, exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            try:
                kind, value = items.get(timeout=_POLL_S)
            except queue.Empty:
                if not thread.is_alive() and items.empty():
                    raise RuntimeError(f"{name}: the producer thread ended without a result") from None
                continue
            if kind == _ITEM:
                yield value  # type: ignore[misc]
            elif kind == _END:
                return
            else:
                assert isinstance(value, BaseException)
                raise value
    finally:
        stop.set()
        thread.join()


class BackgroundConsumer(Generic[T]):
    """Call `consume(item)` in a background thread for each item `put`, in order.

    `put` blocks while `depth` items wait. An exception raised by `consume` stops the thread
    and is raised by the next `put` or by `close`; the items after it are not consumed.
    Every path ends in `close` (success: waits for all items) or `abort` (failure: drops what
    is waiting); both join the thread.
    """

    def __init__(self, consume: Callable[[T], object], depth: int = DEFAULT_DEPTH,
                 name: str = "consumer") -> None:
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self._consume = consume
        self._items: queue.Queue[tuple[int, T | None]] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._done = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                kind, item = self._items.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if kind == _END:
                return
            try:
                self._consume(item)  # type: ignore[arg-type]
            except BaseException as exc:  # raised again in the caller's thread
                self._error = exc
                return

    def _raise_error(self) -> None:
        if self._error is not None:
            self._join()
            raise self._error

    def put(self, item: T) -> None:
        """Queue item for the thread; raises what the thread raised on an earlier item."""
        if self._done:
            raise RuntimeError("BackgroundConsumer is closed")
        while True:
            self._raise_error()
            if not self._thread.is_alive():
                raise RuntimeError("the consumer thread has stopped")
            try:
                self._items.put((_ITEM, item), timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """Wait until every item is consumed and join the thread; raises the thread's error."""
        if self._done:
            self._raise_error()
            return
        while self._thread.is_alive() and self._error is None:
            try:
                self._items.put((_END, None), timeout=_POLL_S)
                break
            except queue.Full:
                continue
        self._join()
        self._raise_error()

    def abort(self) -> None:
        """Stop after the item in hand, drop the waiting ones and join; never raises."""
        self._stop.set()
        self._join()

    def _join(self) -> None:
        self._done = True
        if self._thread is not threading.current_thread():
            self._thread.join()

    @property
    def alive(self) -> bool:
        """Whether the thread is still running (false after close or abort)."""
        return self._thread.is_alive()
