"""The background decode/encode threads (dicom_deid.overlap) and the writers built on them:
errors reach the caller, threads are always joined, a failed encode leaves no file."""

from __future__ import annotations

import threading
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from dicom_deid.overlap import BackgroundConsumer, prefetch


def _threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name]


def test_prefetch_same_items_and_joined() -> None:
    assert list(prefetch(iter(range(50)), depth=3, name="pf-same")) == list(range(50))
    assert not _threads("pf-same")


def test_prefetch_error_raised_in_caller_after_the_items_before_it() -> None:
    def source():
        yield 1
        yield 2
        raise KeyError("decoder broke")

    seen = []
    with pytest.raises(KeyError, match="decoder broke"):
        for item in prefetch(source(), depth=2, name="pf-error"):
            seen.append(item)
    assert seen == [1, 2]
    assert not _threads("pf-error")


def test_prefetch_early_stop_closes_the_source_in_its_thread() -> None:
    closed = []

    def source():
        try:
            yield from range(1000)
        finally:
            closed.append(threading.current_thread().name)

    it = prefetch(source(), depth=2, name="pf-stop")
    assert next(it) == 0
    it.close()                       # what a `break` or an exception in the loop does
    assert closed == ["pf-stop"]
    assert not _threads("pf-stop")


def test_consumer_in_order_and_joined() -> None:
    got: list[int] = []
    worker: BackgroundConsumer[int] = BackgroundConsumer(got.append, depth=2, name="bc-order")
    for i in range(100):
        worker.put(i)
    worker.close()
    assert got == list(range(100))
    assert not worker.alive and not _threads("bc-order")


def test_consumer_error_raised_by_put_or_close() -> None:
    def consume(item: int) -> None:
        if item == 3:
            raise ValueError("encoder broke")

    worker: BackgroundConsumer[int] = BackgroundConsumer(consume, depth=1, name="bc-error")
    with pytest.raises(ValueError, match="encoder broke"):
        for i in range(1000):
            worker.put(i)
    worker.abort()
    assert not worker.alive

    worker = BackgroundConsumer(consume, depth=8, name="bc-error")
    for i in range(5):
        worker.put(i)
    with pytest.raises(ValueError, match="encoder broke"):
        worker.close()
    assert not worker.alive and not _threads("bc-error")


def test_consumer_abort_drops_waiting_items() -> None:
    release = threading.Event()
    got: list[int] = []

    def consume(item: int) -> None:
        release.wait(5)
        got.append(item)

    worker: BackgroundConsumer[int] = BackgroundConsumer(consume, depth=4, name="bc-abort")
    for i in range(4):
        worker.put(i)
    release.set()
    worker.abort()
    assert not worker.alive
    assert len(got) < 4 or got == [0, 1, 2, 3]   # whatever was in hand, never more, in order
    assert got == sorted(got)


# -- faces/media.py VideoWriter and read_video ----------------------------------------------

def _frames(n: int, w: int = 64, h: int = 48):
    rng = np.random.default_rng(0)
    for _ in range(n):
        yield rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_media_writer_round_trip_and_buffer_reuse(tmp_path: Path) -> None:
    pytest.importorskip("av")
    from dicom_deid.faces.media import VideoInfo, VideoWriter, read_video

    out = tmp_path / "out.mp4"
    writer = VideoWriter(out, VideoInfo(10, Fraction(25), 64, 48, "h264"), depth=2)
    buffer = np.zeros((48, 64, 3), np.uint8)
    for i in range(10):
        buffer[...] = 20 * i            # the same array every time: write must copy it
        writer.write(buffer)
    writer.finish()
    means = [float(f.mean()) for f in read_video(out)]
    assert len(means) == 10
    assert means == pytest.approx([20.0 * i for i in range(10)], abs=3)
    assert not _threads("VideoWriter") and not _threads("read_video")


def test_media_producer_error_leaves_no_file(tmp_path: Path) -> None:
    pytest.importorskip("av")
    from dicom_deid.faces.media import VideoInfo, VideoWriter

    out = tmp_path / "out.mp4"

    def frames():
        yield from _frames(5)
        raise RuntimeError("face stage failed")

    writer = VideoWriter(out, VideoInfo(None, Fraction(25), 64, 48, "h264"))
    with pytest.raises(RuntimeError, match="face stage failed"):
        try:
            for rgb in prefetch(frames(), name="pf-media"):
                writer.write(rgb)
            writer.finish()
        except BaseException:
            writer.abort()
            raise
    assert list(tmp_path.iterdir()) == []
    assert not _threads("VideoWriter") and not _threads("pf-media")


def test_media_encoder_error_raised_and_no_file(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("av")
    from dicom_deid.faces import media

    calls = []

    def failing_encode(self, frame) -> None:
        calls.append(threading.current_thread().name)
        if len(calls) == 3:
            raise media.MediaError("encoder broke")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    monkeypatch.setattr(media.VideoWriter, "_encode", failing_encode)
    out = tmp_path / "out.mp4"
    writer = media.VideoWriter(out, media.VideoInfo(None, Fraction(25), 64, 48, "h264"))
    with pytest.raises(media.MediaError, match="encoder broke"):
        try:
            for rgb in _frames(20):
                writer.write(rgb)
            writer.finish()
        except BaseException:
            writer.abort()
            raise
    assert set(calls) == {"VideoWriter"}          # encoded in the writer's thread
    assert list(tmp_path.iterdir()) == []
    assert not _threads("VideoWriter")


# -- dicom_deid.video write_frames (MpegEncoder in its thread) ------------------------------

def _dicom_video(tmp_path: Path) -> Path:
    from tests.video import fixtures

    return fixtures.make_video(tmp_path / "src.dcm", codec="h264", width=64, height=48, frames=10)


def test_write_frames_producer_error_propagates_no_file(tmp_path: Path) -> None:
    from pydicom import dcmread

    from dicom_deid.video import open_frames, write_frames

    src = _dicom_video(tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    header = dcmread(src, stop_before_pixels=True)

    with open_frames(src) as reader:
        def frames():
            for i, rgb in enumerate(reader):
                if i == 6:
                    raise RuntimeError("face stage failed")
                yield rgb

        with pytest.raises(RuntimeError, match="face stage failed"):
            write_frames(header, frames(), out_dir / "out.dcm", reader.info)
    assert list(out_dir.iterdir()) == []
    assert not _threads("MpegEncoder")


def test_write_frames_encoder_error_propagates_no_file(tmp_path: Path, monkeypatch) -> None:
    from pydicom import dcmread

    from dicom_deid.video import VideoError, encode_mpeg, open_frames, write_frames

    original = encode_mpeg.MpegEncoder._encode_frame
    calls = []

    def failing(self, frame) -> None:
        calls.append(threading.current_thread().name)
        if len(calls) == 4:
            raise VideoError(self.name, "encoder broke")
        original(self, frame)

    monkeypatch.setattr(encode_mpeg.MpegEncoder, "_encode_frame", failing)
    src = _dicom_video(tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    header = dcmread(src, stop_before_pixels=True)
    with open_frames(src) as reader, pytest.raises(VideoError, match="encoder broke"):
        write_frames(header, reader, out_dir / "out.dcm", reader.info)
    assert set(calls) == {"MpegEncoder"}
    assert list(out_dir.iterdir()) == []
    assert not _threads("MpegEncoder")


def test_write_frames_reused_buffer_is_copied(tmp_path: Path) -> None:
    from pydicom import dcmread

    from dicom_deid.video import open_frames, write_frames

    src = _dicom_video(tmp_path)
    header = dcmread(src, stop_before_pixels=True)
    buffer = np.zeros((48, 64, 3), np.uint8)

    def frames():
        for i in range(10):
            buffer[...] = 20 * i          # the same array every time: the encoder must copy it
            yield buffer

    with open_frames(src) as reader:
        info = reader.info
    write_frames(header, frames(), tmp_path / "out.dcm", info)
    with open_frames(tmp_path / "out.dcm") as reader:
        means = [float(f.mean()) for f in reader]
    assert means == pytest.approx([20.0 * i for i in range(10)], abs=3)
    assert not _threads("MpegEncoder")


# -- dicom_deid.video open_frames (decoding in its thread) ----------------------------------

def test_open_frames_prefetch_same_frames(tmp_path: Path) -> None:
    from dicom_deid.video import open_frames

    src = _dicom_video(tmp_path)
    with open_frames(src, prefetch=0) as reader:
        serial = [f.copy() for f in reader]
    with open_frames(src, prefetch=2) as reader:
        threaded = list(reader)
        assert reader.decoded == len(serial) == 10
    assert all(np.array_equal(a, b) for a, b in zip(serial, threaded, strict=True))
    assert not _threads("FrameReader")


def test_open_frames_close_mid_stream_joins_the_decoder(tmp_path: Path) -> None:
    from dicom_deid.video import open_frames

    src = _dicom_video(tmp_path)
    with open_frames(src, prefetch=2) as reader:
        it = iter(reader)
        next(it)
        assert _threads("FrameReader")     # decoding ahead while the caller holds frame 1
    # Leaving the block closed the reader with the loop still suspended: thread joined.
    assert not _threads("FrameReader")


def test_open_frames_abandoned_loop_joins_the_decoder(tmp_path: Path) -> None:
    import gc

    from dicom_deid.video import open_frames

    src = _dicom_video(tmp_path)
    reader = open_frames(src, prefetch=2)
    for _ in reader:
        break                              # no close(), no with: the generator is dropped
    gc.collect()
    assert not _threads("FrameReader")
    reader.close()


def test_open_frames_consumer_error_propagates_and_joins(tmp_path: Path) -> None:
    from dicom_deid.video import open_frames

    src = _dicom_video(tmp_path)
    with pytest.raises(RuntimeError, match="face stage failed"), open_frames(src) as reader:
        for i, _rgb in enumerate(reader):
            if i == 3:
                raise RuntimeError("face stage failed")
    assert not _threads("FrameReader")


def test_faces_dicom_encoder_error_leaves_no_face_thread_and_no_file(tmp_path: Path, monkeypatch) -> None:
    """`dicom-deid faces` on DICOM video: an encoder failure mid-stream reaches the caller, the
    face stage's tracking thread is stopped and joined, and nothing is written."""
    from dicom_deid.faces import FaceReplacer
    from dicom_deid.faces.files import process_dicom
    from dicom_deid.video import VideoError, encode_mpeg

    original = encode_mpeg.MpegEncoder._encode_frame
    calls = []

    def failing(self, frame) -> None:
        calls.append(1)
        if len(calls) == 3:
            raise VideoError(self.name, "encoder broke")
        original(self, frame)

    class Key:
        def uid(self, name: str) -> str:
            return "2.25.1234567"

    monkeypatch.setattr(encode_mpeg.MpegEncoder, "_encode_frame", failing)
    src = _dicom_video(tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(VideoError, match="encoder broke"):
        process_dicom(src, out_dir / "out.dcm", lambda fps, study: FaceReplacer("blur", fps=fps), Key())
    assert list(out_dir.iterdir()) == []
    assert not _threads("faces-track")
    assert not _threads("MpegEncoder")
