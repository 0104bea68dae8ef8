"""Damaged variants of a clip, for ingest's error codes: each one really is damaged."""

from __future__ import annotations

import shutil
from enum import StrEnum
from pathlib import Path

import av
import cv2
import numpy as np

from infra.synth.encode import AUDIO_RATE


class DamageKind(StrEnum):
    truncated = "truncated"  # moov atom at the end, cut off: cannot be opened
    truncated_faststart = "truncated_faststart"  # moov first, media cut: opens, decoding ends early
    no_video_stream = "no_video_stream"  # a real media file with only audio
    zero_bytes = "zero_bytes"
    wrong_container = "wrong_container"  # not a container at all, named .mp4
    not_a_video = "not_a_video"  # a PNG with its true extension


def _faststart_copy(source: Path, out: Path) -> None:
    """Remux ``source`` with the moov atom first."""
    with av.open(str(source)) as src, av.open(str(out), "w", options={"movflags": "+faststart"}) as dst:
        in_stream = src.streams.video[0]
        out_stream = dst.add_stream_from_template(in_stream)
        for packet in src.demux(in_stream):
            if packet.dts is None:
                continue
            packet.stream = out_stream
            dst.mux(packet)


def make_damaged(source: Path, kind: DamageKind, out: Path) -> Path:
    """Write the ``kind`` variant of ``source`` to ``out`` and return ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if kind is DamageKind.truncated:
        data = source.read_bytes()
        out.write_bytes(data[: len(data) * 6 // 10])
    elif kind is DamageKind.truncated_faststart:
        full = out.with_suffix(".full.mp4")
        _faststart_copy(source, full)
        data = full.read_bytes()
        out.write_bytes(data[: len(data) // 2])
        full.unlink()
    elif kind is DamageKind.no_video_stream:
        with av.open(str(out), "w", format="mp4") as container:
            stream = container.add_stream("aac", rate=AUDIO_RATE)
            stream.layout = "mono"
            tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(AUDIO_RATE * 2) / AUDIO_RATE)).astype(np.float32)
            for start in range(0, len(tone), 1024):
                frame = av.AudioFrame.from_ndarray(
                    tone[start : start + 1024].reshape(1, -1), format="flt", layout="mono"
                )
                frame.sample_rate = AUDIO_RATE
                frame.pts = start
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    elif kind is DamageKind.zero_bytes:
        out.write_bytes(b"")
    elif kind is DamageKind.wrong_container:
        out.write_bytes(b"This is a match report, not a video.\n" * 200)
    elif kind is DamageKind.not_a_video:
        image = np.full((64, 64, 3), (40, 140, 40), np.uint8)
        ok, encoded = cv2.imencode(".png", image)
        assert ok
        out.write_bytes(encoded.tobytes())
    else:  # pragma: no cover - StrEnum is closed
        shutil.copyfile(source, out)
    return out
