"""H.264 MP4 writing with PyAV (libx264, yuv420p), optionally with a mono AAC track."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from infra.synth.spec import EncodeSpec

AUDIO_RATE = 16_000


def write_mp4(
    path: Path,
    frames: Iterable[np.ndarray],
    fps: int,
    width: int,
    height: int,
    encode: EncodeSpec,
    *,
    audio: np.ndarray | None = None,
    faststart: bool = False,
) -> int:
    """Encode BGR frames (and float32 mono audio at AUDIO_RATE) into ``path``; return the frame count.

    x264 runs single-threaded with a fixed preset, so the same frames always give the same bytes.
    """
    options = {"movflags": "+faststart"} if faststart else {}
    count = 0
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(encode.crf), "preset": encode.preset, "threads": "1"}
        if encode.keyint:
            stream.options = {**stream.options, "g": str(encode.keyint), "keyint_min": str(encode.keyint)}
        stream.codec_context.time_base = Fraction(1, fps)
        audio_stream = None
        if audio is not None:
            audio_stream = container.add_stream("aac", rate=AUDIO_RATE)
            audio_stream.layout = "mono"
        for image in _prefetch(frames):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = count
            for packet in stream.encode(frame):
                container.mux(packet)
            count += 1
        for packet in stream.encode():
            container.mux(packet)
        if audio_stream is not None and audio is not None:
            _write_audio(container, audio_stream, audio)
    return count


def _write_audio(
    container: av.container.OutputContainer, stream: av.audio.stream.AudioStream, audio: np.ndarray
) -> None:
    step = 1024
    for start in range(0, len(audio), step):
        block = audio[start : start + step].astype(np.float32)
        frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = start
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


@dataclass(frozen=True)
class _Failure:
    error: BaseException


_DONE = object()


def _prefetch(frames: Iterable[np.ndarray], depth: int = 4) -> Iterator[np.ndarray]:
    """Draw the next frames on a worker thread while this one encodes.

    cv2, numpy and x264 release the GIL, so on two cores rendering and encoding overlap; the frames
    and their order are unchanged, so output bytes stay the same.
    """
    slots: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: object) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for image in frames:
                if not offer(image):
                    return
        except BaseException as exc:  # handed to the consumer, which re-raises it
            offer(_Failure(exc))
            return
        offer(_DONE)

    worker = threading.Thread(target=work, name="synth-render", daemon=True)
    worker.start()
    try:
        while (item := slots.get()) is not _DONE:
            if isinstance(item, _Failure):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        worker.join()
