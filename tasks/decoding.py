"""Decoding only what a stage needs: the decoder skips the frames nothing depends on.

detect_track analyses every 5th frame and embed a subset of those, but H.264 must still decode every
frame other frames are predicted from. It need not decode the *non-reference* ones (most B-frames:
x264's default GOP has ~40 % of them): before each packet is sent, the decoder is told to skip it
if it is a non-reference frame that is not wanted (``skip_frame = NONREF``); a reference frame is
decoded anyway, so the wanted frames come out bit-identical. Measured on a 20 s 720p synthetic clip:
310 of 500 frames decoded, decoding time -35 to -60 %.

The decoder runs without frame threads (``thread_count = 1``, one core per Dask worker), so the
setting applies to exactly the packet that follows it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import av
import av.container
import av.video


@dataclass(frozen=True)
class FrameGrid:
    """Frame indices of a stream: ``round((pts x time_base - origin) x fps)``, filmroom's convention."""

    time_base: float
    fps: float
    origin: float

    @classmethod
    def of(cls, stream: av.video.stream.VideoStream) -> FrameGrid:
        tb = float(stream.time_base or 0)
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        origin = float(stream.start_time * tb) if stream.start_time is not None else 0.0
        return cls(tb, fps, origin)

    def time(self, pts: int) -> float:
        """Seconds since the stream's start."""
        return float(pts * self.time_base) - self.origin

    def index(self, pts: int) -> int:
        return round(self.time(pts) * self.fps)


def decode_wanted(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    wanted: Callable[[int], bool],
    grid: FrameGrid,
    on_packet: Callable[[int], None] | None = None,
) -> Iterator[tuple[int, av.VideoFrame]]:
    """``(pts, frame)`` of every frame the decoder produces, in presentation order; unwanted
    non-reference frames are skipped. ``on_packet`` sees the pts of every packet read (skipped or not)."""
    codec = stream.codec_context
    codec.thread_count = 1
    for packet in container.demux(stream):
        if packet.pts is not None:
            codec.skip_frame = "DEFAULT" if wanted(grid.index(packet.pts)) else "NONREF"
            if on_packet is not None:
                on_packet(packet.pts)
        for frame in codec.decode(packet):
            if frame.pts is not None:
                yield frame.pts, frame
