"""Keep the audio track of a source video (only on explicit request: a voice identifies a person).

The video is encoded first into a timestamped container; this module then remuxes it together
with the source's audio packets (copied, not re-encoded) into the final container, reading both
inputs packet by packet in time order so memory stays bounded.
"""

from __future__ import annotations

import heapq
from pathlib import Path
from typing import Any

import av
import av.error

from dicom_deid.video.errors import VideoError
from dicom_deid.video.pixeldata import ConcatStream, open_path_or_dataset

_MUXER = {"mp4": "mp4", "mpeg-ps": "vob", "mpeg-ts": "mpegts"}


def _packets(container: Any, stream: Any, key: int):
    for packet in container.demux(stream):
        if packet.dts is None and packet.pts is None:
            continue  # the flush packet at the end of a demux
        ts = packet.dts if packet.dts is not None else packet.pts
        yield (float(ts * packet.time_base), key, packet)


def mux_with_audio(video_path: Path, origin: Any, out_path: Path, container: str, name: str) -> int:
    """Write out_path holding the video of video_path and every audio track of origin.

    Returns the number of audio tracks kept.
    """
    _, layout, _, _ = open_path_or_dataset(origin)
    source_stream = ConcatStream(layout.opener, layout.items)
    try:
        with av.open(source_stream, mode="r") as source, av.open(str(video_path), mode="r") as video:
            audio_in = list(source.streams.audio)
            if not audio_in:
                return 0
            muxer = _MUXER[container]
            opts = {"movflags": "+faststart"} if muxer == "mp4" else {}
            with av.open(str(out_path), mode="w", format=muxer, options=opts) as out:
                v_in = video.streams.video[0]
                v_out = out.add_stream_from_template(v_in)
                a_out = [out.add_stream_from_template(s) for s in audio_in]
                feeds = [_packets(video, v_in, 0)]
                feeds += [_packets(source, s, i + 1) for i, s in enumerate(audio_in)]
                targets = [v_out, *a_out]
                # Audio packets come from a different demuxer than the video; merge by time.
                for _, key, packet in heapq.merge(*feeds, key=lambda item: (item[0], item[1])):
                    packet.stream = targets[key]
                    out.mux(packet)
            return len(audio_in)
    except av.error.FFmpegError as exc:
        raise VideoError(name, f"cannot keep the audio track ({exc})") from exc
    finally:
        source_stream.close()
