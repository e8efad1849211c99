"""Bad input: a clear VideoError that names the file and the problem, and nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import HEVCMP51, MPEG4HP41, JPEGBaseline8Bit

from dicom_deid.video import VideoError, open_frames, write_frames
from tests.video import fixtures

W, H, N = 64, 48, 10


def _stream(codec: str, fmt: str) -> bytes:
    encoder = {"h264": "libx264", "hevc": "libx265", "mpeg2": "mpeg2video"}[codec]
    return fixtures.encode_stream(fixtures.pattern_frames(N, W, H), encoder, fmt)


def _video(path: Path, codec: str = "h264", **kwargs) -> Path:
    return fixtures.make_video(path, codec=codec, width=W, height=H, frames=N, **kwargs)


def transcode_fails(src: Path, out_dir: Path, strict: bool = True) -> VideoError:
    """Run the read -> write path; return the VideoError and check that nothing was left."""
    out_dir.mkdir(exist_ok=True)
    with pytest.raises(VideoError) as info:
        header = dcmread(src, stop_before_pixels=True) if src.exists() else None
        with open_frames(src, strict=strict) as reader:
            write_frames(header, reader, out_dir / "out.dcm", reader.info)
    assert list(out_dir.iterdir()) == [], "a failed write left files behind"
    exc = info.value
    assert str(exc).startswith(str(src)), f"message does not name the file: {exc}"
    return exc


def _corrupt_fragment(fragments: list[bytes], index: int) -> list[bytes]:
    out = list(fragments)
    out[index] = bytes(len(out[index]))
    return out


def test_truncated_elementary_stream(tmp_path: Path) -> None:
    data = _stream("h264", "h264")
    src = _video(tmp_path / "cut.dcm", stream_bytes=data[: len(data) // 2])
    exc = transcode_fails(src, tmp_path / "out")
    assert "damaged" in exc.problem or "truncated" in exc.problem


def test_truncated_mp4_box(tmp_path: Path) -> None:
    data = _stream("h264", "mp4")  # moov at the end: the cut loses the index
    src = _video(tmp_path / "cut.dcm", container="mp4", stream_bytes=data[: len(data) // 2])
    exc = transcode_fails(src, tmp_path / "out")
    assert "cannot read the H.264 stream" in exc.problem


@pytest.mark.parametrize("codec", ["mpeg2", "hevc"])
def test_truncated_stream_other_codecs(codec: str, tmp_path: Path) -> None:
    data = _stream(codec, {"mpeg2": "mpeg2video", "hevc": "hevc"}[codec])
    src = _video(tmp_path / "cut.dcm", codec=codec, stream_bytes=data[: len(data) * 2 // 5])
    exc = transcode_fails(src, tmp_path / "out")
    assert any(word in exc.problem for word in ("corrupt", "damaged", "truncated", "decoded"))


def test_truncated_file(tmp_path: Path) -> None:
    src = _video(tmp_path / "whole.dcm")
    cut = tmp_path / "cut.dcm"
    raw = src.read_bytes()
    cut.write_bytes(raw[: len(raw) - 1500])
    exc = transcode_fails(cut, tmp_path / "out")
    assert "truncated" in exc.problem


@pytest.mark.parametrize(
    ("codec", "label", "expected"),
    [
        ("h264", HEVCMP51, "does not match the data"),
        ("mpeg2", MPEG4HP41, "does not match the data"),
        ("hevc", MPEG4HP41, "does not match the data"),
    ],
    ids=["h264-labelled-hevc", "mpeg2-labelled-h264", "hevc-labelled-h264"],
)
def test_transfer_syntax_that_does_not_match(codec, label, expected, tmp_path: Path) -> None:
    src = _video(tmp_path / "wrong.dcm", codec=codec, syntax=label)
    exc = transcode_fails(src, tmp_path / "out")
    assert expected in exc.problem


def test_video_labelled_as_jpeg(tmp_path: Path) -> None:
    src = _video(tmp_path / "wrong.dcm", syntax=JPEGBaseline8Bit)
    exc = transcode_fails(src, tmp_path / "out")
    assert "frame 1" in exc.problem


def test_mpeg_syntax_on_native_pixel_data(tmp_path: Path) -> None:
    src = fixtures.make_multiframe(tmp_path / "native.dcm")
    ds = dcmread(src)
    ds.file_meta.TransferSyntaxUID = MPEG4HP41
    # Written by hand (dcmwrite refuses this): explicit VR little endian, only the label is wrong.
    with open(src, "wb") as handle:
        handle.write(b"\0" * 128 + b"DICM")
        fp = DicomFileLike(handle)
        fp.is_little_endian, fp.is_implicit_VR = True, False
        write_file_meta_info(fp, ds.file_meta, enforce_standard=True)
        write_dataset(fp, ds)
    exc = transcode_fails(src, tmp_path / "out")
    assert "native" in exc.problem


def test_zero_frames(tmp_path: Path) -> None:
    src = _video(tmp_path / "zero.dcm", number_of_frames=0)
    assert "zero frames" in transcode_fails(src, tmp_path / "out").problem
    empty = _video(tmp_path / "empty.dcm", stream_bytes=b"")
    assert "zero frames" in transcode_fails(empty, tmp_path / "out2").problem


def test_writer_refuses_zero_frames(tmp_path: Path) -> None:
    src = _video(tmp_path / "in.dcm")
    with open_frames(src) as reader:
        info = reader.info
    with pytest.raises(VideoError, match="zero frames"):
        write_frames(dcmread(src, stop_before_pixels=True), [], tmp_path / "out" / "x.dcm", info)
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize(
    ("codec", "fmt", "container"),
    [("h264", "h264", "es"), ("h264", "mp4", "mp4"), ("hevc", "hevc", "es"), ("mpeg2", "mpeg2video", "es")],
    ids=["h264-es", "h264-mp4", "hevc-es", "mpeg2-es"],
)
def test_corrupt_fragment(codec, fmt, container, tmp_path: Path) -> None:
    fragments = fixtures.split(_stream(codec, fmt), 4)
    damaged = b"".join(_corrupt_fragment(fragments, 2))
    src = _video(tmp_path / "damaged.dcm", codec=codec, container=container, stream_bytes=damaged, fragments=4)
    exc = transcode_fails(src, tmp_path / "out")
    assert any(word in exc.problem for word in ("corrupt", "damaged", "truncated"))


@pytest.mark.parametrize("mode", ["dropped", "repeated"])
def test_missing_or_repeated_fragment(mode: str, tmp_path: Path) -> None:
    fragments = fixtures.split(_stream("h264", "h264"), 4)
    if mode == "dropped":
        del fragments[2]
    else:
        fragments.insert(2, fragments[1])
    src = _video(tmp_path / "damaged.dcm", stream_bytes=b"".join(fragments), fragments=4)
    transcode_fails(src, tmp_path / "out")


def test_corrupt_item_tag(tmp_path: Path) -> None:
    src = _video(tmp_path / "in.dcm", fragments=3)
    raw = bytearray(src.read_bytes())
    # The second fragment's item tag (the basic offset table item comes first).
    first = raw.find(b"\xfe\xff\x00\xe0")
    second = raw.find(b"\xfe\xff\x00\xe0", first + 8)
    third = raw.find(b"\xfe\xff\x00\xe0", second + 8)
    raw[third : third + 4] = b"\xfe\xff\x00\xe1"
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(bytes(raw))
    exc = transcode_fails(bad, tmp_path / "out")
    assert "corrupt Pixel Data" in exc.problem


def test_frame_count_that_disagrees_with_the_stream(tmp_path: Path) -> None:
    src = _video(tmp_path / "count.dcm", number_of_frames=N + 3)
    exc = transcode_fails(src, tmp_path / "out")
    assert f"decoded {N} frames but NumberOfFrames is {N + 3}" in exc.problem
    # Lenient reading writes what the stream holds and says so.
    out = tmp_path / "lenient" / "out.dcm"
    header = dcmread(src, stop_before_pixels=True)
    with open_frames(src, strict=False) as reader:
        report = write_frames(header, reader, out, reader.info)
    assert report.frames == N
    assert any(f"{N} frames written; the source had {N + 3}" in note for note in report.notes)
    assert int(dcmread(out, stop_before_pixels=True).NumberOfFrames) == N


def test_missing_and_non_dicom_files(tmp_path: Path) -> None:
    exc = transcode_fails(tmp_path / "absent.dcm", tmp_path / "out")
    assert "not found" in exc.problem
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"this is not DICOM" * 20)
    with pytest.raises(VideoError, match="not a readable DICOM file") as info:
        open_frames(junk)
    assert str(info.value).startswith(str(junk))


def test_frame_size_change_mid_stream_is_refused(tmp_path: Path) -> None:
    src = _video(tmp_path / "in.dcm")
    with open_frames(src) as reader:
        info = reader.info
    frames = fixtures.pattern_frames(3, W, H) + fixtures.pattern_frames(1, W + 2, H)
    out_dir = tmp_path / "out"
    with pytest.raises(VideoError, match="frame 4 is"):
        write_frames(dcmread(src, stop_before_pixels=True), frames, out_dir / "x.dcm", info)
    assert list(out_dir.iterdir()) == []
