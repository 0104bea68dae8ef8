"""ingest: find every source of an event, probe it with PyAV, check the angles line up, plan chunks.

Which code a bad source gets (the registry in ``infra.errors`` holds the messages):

===============================================  ==============================
what is wrong                                    code
===============================================  ==============================
no source, or a local file that does not exist   missing_videos
malformed URL, unreachable host, HTTP error,     video_invalid_url
a local path outside the allowed roots
a download larger than the size limit            video_too_long
not a media container, or no video stream        video_unsupported_format
empty file, MP4 without its moov atom,           incomplete_video
decoding ends before the stated duration
longer than ``ingest.max_duration_s``            video_too_long
angles whose start, length or audio disagree     not_synchronized_camera_angles
===============================================  ==============================
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import av
import httpx
import numpy as np
from prefect import task
from pydantic import BaseModel, Field

from infra import errors
from infra.settings import IngestSettings, get_settings
from storage.artifacts import RunRef
from tasks.common import retry_transient, store

DECODE_TAIL_S = 2.0
STILL_IMAGE_CODECS = {"png", "bmp", "gif", "tiff", "webp", "jpegls", "qoi"}
STILL_IMAGE_FORMATS = {
    "image2",
    "png_pipe",
    "jpeg_pipe",
    "bmp_pipe",
    "gif",
    "webp_pipe",
    "tiff_pipe",
}  # how much of the end we decode to prove the file is complete


class Source(BaseModel):
    """One camera angle / video file of an event, as the client named it."""

    angle: str = Field(default="main", description="Camera angle name, unique within the event.")
    uri: str = Field(description="Local path (under an allowed root) or http(s) URL.")


class VideoProbe(BaseModel):
    """What ingest learned about one source."""

    angle: str
    uri: str
    path: str
    size_bytes: int
    container: str
    codec: str
    width: int
    height: int
    fps: float
    duration_s: float
    frame_count: int
    start_time_s: float
    has_audio: bool
    keyframes_s: list[float]
    last_decoded_s: float


class Chunk(BaseModel):
    """A piece of one angle processed by one detect_track task.

    Frames in ``[start_s, end_s)`` belong to this chunk; it also decodes up to ``decode_end_s`` (the
    overlap with the next chunk) so stitch can match tracks across the boundary.
    """

    index: int
    angle: str
    path: str
    start_s: float
    end_s: float
    decode_end_s: float


class IngestResult(BaseModel):
    probes: list[VideoProbe]
    chunks: list[Chunk]
    angle_offsets_s: dict[str, float]


@dataclass(frozen=True)
class Fetcher:
    """Downloads http(s) sources; the transport is injectable so tests need no patching."""

    settings: IngestSettings
    download_dir: Path
    transport: httpx.BaseTransport | None = None

    def fetch(self, url: str) -> Path:
        limit = self.settings.max_download_bytes
        deadline = time.monotonic() + self.settings.download_timeout_s
        self.download_dir.mkdir(parents=True, exist_ok=True)
        name = Path(urlparse(url).path).name or "video"
        try:
            with (
                httpx.Client(transport=self.transport, timeout=30.0, follow_redirects=True) as client,
                client.stream("GET", url) as response,
            ):
                if response.status_code >= 400:
                    raise errors.VideoInvalidUrl(f"{url} answered HTTP {response.status_code}", url=url)
                declared = int(response.headers.get("content-length") or 0)
                if declared > limit:
                    raise errors.VideoTooLong(
                        f"{url} is {declared} bytes, over the download limit of {limit} bytes", url=url
                    )
                return self._save(response, name, limit, deadline, url)
        except httpx.HTTPError as exc:
            raise errors.VideoInvalidUrl(f"{url} could not be downloaded: {exc}", url=url) from exc

    def _save(self, response: httpx.Response, name: str, limit: int, deadline: float, url: str) -> Path:
        # Download beside the destination and rename, so a half-downloaded file is never probed.
        fd, tmp_name = tempfile.mkstemp(prefix=".download-", dir=self.download_dir)
        tmp = Path(tmp_name)
        received = 0
        try:
            with open(fd, "wb") as out:
                for block in response.iter_bytes(1 << 20):
                    received += len(block)
                    if received > limit:
                        raise errors.VideoTooLong(
                            f"{url} exceeds the download limit of {limit} bytes", url=url
                        )
                    if time.monotonic() > deadline:
                        raise errors.VideoInvalidUrl(
                            f"{url} did not download within {self.settings.download_timeout_s:.0f} s",
                            url=url,
                        )
                    out.write(block)
            final = self.download_dir / f"{tmp.name[10:]}-{name}"
            tmp.replace(final)
            return final
        finally:
            tmp.unlink(missing_ok=True)


def resolve_source(source: Source, settings: IngestSettings, fetcher: Fetcher | None) -> Path:
    """A readable local file for ``source``, or the registry error that says why not."""
    parsed = urlparse(source.uri)
    if parsed.scheme in ("http", "https"):
        if not parsed.netloc:
            raise errors.VideoInvalidUrl(f"malformed URL {source.uri!r}", uri=source.uri)
        if fetcher is None:
            raise errors.VideoInvalidUrl("http(s) sources are not enabled here", uri=source.uri)
        return fetcher.fetch(source.uri)
    if parsed.scheme not in ("", "file"):
        raise errors.VideoInvalidUrl(
            f"unsupported URL scheme {parsed.scheme!r} in {source.uri!r}", uri=source.uri
        )
    path = Path(parsed.path if parsed.scheme == "file" else source.uri).expanduser().resolve()
    roots = [Path(r).expanduser().resolve() for r in settings.allowed_roots]
    if not any(path.is_relative_to(root) for root in roots):
        raise errors.VideoInvalidUrl(f"{source.uri!r} is outside the allowed footage folders", uri=source.uri)
    if not path.is_file():
        raise errors.MissingVideos(f"angle {source.angle!r}: {source.uri!r} does not exist", uri=source.uri)
    return path


def _looks_like_mp4(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(12)
    return head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide")


def probe_video(path: Path, *, angle: str = "main", uri: str | None = None) -> VideoProbe:
    """Open, demux and partly decode ``path``; raise the registry code that explains any damage."""
    size = path.stat().st_size
    if size == 0:
        raise errors.IncompleteVideo(f"angle {angle!r}: the file is empty (0 bytes)")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        if _looks_like_mp4(path):
            raise errors.IncompleteVideo(
                f"angle {angle!r}: the MP4 cannot be opened (truncated, no moov atom)"
            ) from exc
        raise errors.VideoUnsupportedFormat(
            f"angle {angle!r}: not a video container FFmpeg can read"
        ) from exc
    with container:
        if not container.streams.video:
            raise errors.VideoUnsupportedFormat(f"angle {angle!r}: the file has no video stream")
        stream = container.streams.video[0]
        codec = stream.codec_context.name
        if codec in STILL_IMAGE_CODECS or container.format.name in STILL_IMAGE_FORMATS:
            raise errors.VideoUnsupportedFormat(f"angle {angle!r}: a still image ({codec}), not a video")
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        if fps <= 0 or not stream.codec_context.width:
            raise errors.VideoUnsupportedFormat(f"angle {angle!r}: unreadable video stream ({codec})")
        tb = float(stream.time_base or 0)
        start = float(stream.start_time * tb) if stream.start_time is not None else 0.0
        if stream.duration:
            duration = float(stream.duration * tb)
        elif container.duration:
            duration = container.duration / 1e6
        else:
            duration = 0.0
        keyframes, last_pts = _scan_packets(container, stream, tb, angle)
        last_decoded = _decode_tail(path, angle, max(start, last_pts - DECODE_TAIL_S))
        probe = VideoProbe(
            angle=angle,
            uri=uri or str(path),
            path=str(path),
            size_bytes=size,
            container=container.format.name,
            codec=codec,
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            fps=fps,
            duration_s=duration,
            frame_count=stream.frames or round(duration * fps),
            start_time_s=start,
            has_audio=bool(container.streams.audio),
            keyframes_s=keyframes,
            last_decoded_s=last_decoded,
        )
    _check_complete(probe)
    return probe


def _scan_packets(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, tb: float, angle: str
) -> tuple[list[float], float]:
    """Keyframe times and the last packet time, by demuxing only (no decoding: cheap)."""
    keyframes: list[float] = []
    last = 0.0
    try:
        for packet in container.demux(stream):
            if packet.pts is None:
                continue
            t = float(packet.pts * tb)
            last = max(last, t)
            if packet.is_keyframe:
                keyframes.append(t)
    except av.error.FFmpegError as exc:
        raise errors.IncompleteVideo(f"angle {angle!r}: demuxing failed at {last:.2f} s ({exc})") from exc
    if not keyframes:
        raise errors.IncompleteVideo(f"angle {angle!r}: no decodable keyframe")
    return sorted(keyframes), last


def _decode_tail(path: Path, angle: str, from_s: float) -> float:
    """Decode from the first frame, then the last seconds; return the last decoded frame time."""
    last = -1.0
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            tb = float(stream.time_base or 0)
            for frame in container.decode(stream):
                last = float(frame.pts * tb) if frame.pts is not None else 0.0
                break
            if from_s > last:
                container.seek(int(from_s / tb), stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                if frame.pts is not None:
                    last = max(last, float(frame.pts * tb))
    except av.error.FFmpegError as exc:
        if last < 0:
            raise errors.IncompleteVideo(f"angle {angle!r}: the first frame cannot be decoded") from exc
        raise errors.IncompleteVideo(
            f"angle {angle!r}: decoding dies at {last:.2f} s ({type(exc).__name__})"
        ) from exc
    if last < 0:
        raise errors.IncompleteVideo(f"angle {angle!r}: no frame can be decoded")
    return last


def _check_complete(probe: VideoProbe) -> None:
    # A frame lasts 1/fps; allow one second of slack for containers that pad the duration.
    stated_end = probe.start_time_s + probe.duration_s
    if probe.last_decoded_s + 1.0 / probe.fps < stated_end - 1.0:
        raise errors.IncompleteVideo(
            f"angle {probe.angle!r}: the file states {probe.duration_s:.2f} s but decoding ends at "
            f"{probe.last_decoded_s:.2f} s",
            stated_s=probe.duration_s,
            decoded_s=probe.last_decoded_s,
        )


def check_duration(probe: VideoProbe, settings: IngestSettings) -> None:
    if probe.duration_s > settings.max_duration_s:
        raise errors.VideoTooLong(
            f"angle {probe.angle!r} lasts {probe.duration_s:.0f} s; the limit is "
            f"{settings.max_duration_s:.0f} s",
            duration_s=probe.duration_s,
        )


def audio_envelope(path: Path, rate: int = 100, max_s: float = 120.0) -> np.ndarray | None:
    """The audio's loudness sampled ``rate`` times a second (None without audio)."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        resampler = av.AudioResampler(format="flt", layout="mono", rate=8000)
        chunks: list[np.ndarray] = []
        total = 0
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                samples = out.to_ndarray().reshape(-1)
                chunks.append(samples)
                total += samples.size
            if total >= max_s * 8000:
                break
    if not chunks:
        return None
    signal = np.concatenate(chunks)
    hop = 8000 // rate
    usable = signal[: signal.size // hop * hop].reshape(-1, hop)
    return np.sqrt((usable.astype(np.float64) ** 2).mean(axis=1))


def audio_offset_s(reference: np.ndarray, other: np.ndarray, rate: int = 100) -> float:
    """How many seconds later ``other``'s content starts compared with ``reference``.

    Normalised cross-correlation of log loudness: the log keeps one loud event (a whistle heard by
    only one angle) from drowning the rest, and dividing by the overlap keeps short overlaps at the
    ends from winning by accident. Lags that overlap less than half the shorter clip are not considered.
    """

    def norm(x: np.ndarray) -> np.ndarray:
        y = np.log(x + 1e-4)
        return np.asarray((y - y.mean()) / (y.std() + 1e-9))

    a, b = norm(reference), norm(other)
    n = 1 << math.ceil(math.log2(a.size + b.size))

    def xcorr(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.asarray(np.fft.irfft(np.fft.rfft(x, n) * np.conj(np.fft.rfft(y, n)), n))

    overlap = np.rint(xcorr(np.ones_like(a), np.ones_like(b)))
    score = xcorr(a, b) / np.maximum(overlap, 1)
    score[overlap < min(a.size, b.size) / 2] = -np.inf
    lag = int(np.argmax(score))
    if lag > n // 2:
        lag -= n
    return lag / rate


def check_sync(probes: list[VideoProbe], settings: IngestSettings) -> dict[str, float]:
    """Measured offset of each angle against the first; raise when any exceeds the tolerance."""
    if not probes:
        return {}
    reference = probes[0]
    offsets = {reference.angle: 0.0}
    ref_audio = audio_envelope(Path(reference.path)) if reference.has_audio else None
    tol = settings.sync_tolerance_s
    for probe in probes[1:]:
        start_gap = probe.start_time_s - reference.start_time_s
        length_gap = probe.duration_s - reference.duration_s
        offset = start_gap
        other_audio = audio_envelope(Path(probe.path)) if probe.has_audio else None
        if ref_audio is not None and other_audio is not None:
            offset = start_gap + audio_offset_s(ref_audio, other_audio)
        offsets[probe.angle] = round(offset, 3)
        if abs(offset) > tol or abs(length_gap) > tol:
            raise errors.NotSynchronizedCameraAngles(
                f"angle {probe.angle!r} is offset by {offset:+.2f} s and its length differs by "
                f"{length_gap:+.2f} s from angle {reference.angle!r} (tolerance {tol:.2f} s)",
                offset_s=round(offset, 3),
                length_gap_s=round(length_gap, 3),
            )
    return offsets


def plan_chunks(
    probe: VideoProbe, chunk_s: float, overlap_s: float, *, min_chunks: int = 1, shortest_s: float = 0.0
) -> list[Chunk]:
    """Keyframe-aligned chunks of about ``chunk_s`` seconds, each decoding ``overlap_s`` past its end.

    A video shorter than ``min_chunks`` chunks (one per worker) is cut into ``min_chunks`` shorter
    ones, so every worker gets a share, but none under ``shortest_s`` seconds: below that the
    overlap and a task's own cost outweigh the second core.
    """
    if min_chunks > 1 and probe.duration_s < min_chunks * chunk_s:
        chunk_s = min(chunk_s, max(probe.duration_s / min_chunks, shortest_s))
    end_of_video = probe.start_time_s + probe.duration_s
    starts = [probe.keyframes_s[0]]
    for key in probe.keyframes_s[1:]:
        if key - starts[-1] >= chunk_s and end_of_video - key >= chunk_s / 2:
            starts.append(key)
    chunks = []
    for index, start in enumerate(starts):
        end = starts[index + 1] if index + 1 < len(starts) else end_of_video
        chunks.append(
            Chunk(
                index=index,
                angle=probe.angle,
                path=probe.path,
                start_s=start,
                end_s=end,
                decode_end_s=min(end + overlap_s, end_of_video) if index + 1 < len(starts) else end,
            )
        )
    return chunks


def ingest(
    sources: list[Source],
    settings: IngestSettings,
    *,
    chunk_s: float,
    overlap_s: float,
    min_chunks: int = 1,
    shortest_s: float = 0.0,
    fetcher: Fetcher | None = None,
) -> IngestResult:
    """The ingest stage: every source resolved, probed and checked, and the chunk plan
    (:func:`plan_chunks`)."""
    if not sources:
        raise errors.MissingVideos("the event has no video")
    angles = [s.angle for s in sources]
    if len(set(angles)) != len(angles):
        raise errors.MissingVideos(f"camera angle names must be unique, got {angles}")
    probes = []
    for source in sources:
        path = resolve_source(source, settings, fetcher)
        probe = probe_video(path, angle=source.angle, uri=source.uri)
        check_duration(probe, settings)
        probes.append(probe)
    offsets = check_sync(probes, settings)
    planned = [
        c
        for p in probes
        for c in plan_chunks(p, chunk_s, overlap_s, min_chunks=min_chunks, shortest_s=shortest_s)
    ]
    # One index space across angles: parts are stored by chunk index.
    chunks = [c.model_copy(update={"index": i}) for i, c in enumerate(planned)]
    return IngestResult(probes=probes, chunks=chunks, angle_offsets_s=offsets)


def copy_into_footage(path: Path, footage_dir: Path) -> Path:
    """Copy an upload into the footage folder (atomically), so ingest can read it under an allowed root."""
    footage_dir.mkdir(parents=True, exist_ok=True)
    target = footage_dir / path.name
    tmp = footage_dir / f".{path.name}.part"
    shutil.copyfile(path, tmp)
    tmp.replace(target)
    return target


@task(name="ingest", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_transient)
def ingest_task(ref: RunRef, sources: list[Source], chunk_s: float, overlap_s: float) -> IngestResult:
    """Probe and check every source of the run's event; plan the chunks (at least one per Dask worker
    the settings name, when the video is long enough)."""
    settings = get_settings()
    fetcher = Fetcher(settings.ingest, Path(settings.storage.footage_dir) / "downloads")
    result = ingest(
        sources,
        settings.ingest,
        chunk_s=chunk_s,
        overlap_s=overlap_s,
        min_chunks=settings.dask.n_workers,
        shortest_s=settings.detect.min_chunk_seconds,
        fetcher=fetcher,
    )
    store().update_manifest(ref, videos=[p.model_dump() for p in result.probes])
    return result
