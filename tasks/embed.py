"""embed: one vector per sampled detection — jersey appearance for games, a face descriptor for episodes.

Games: **appearance** vectors (:mod:`tasks.appearance`); episodes: **face** descriptors
(:mod:`tasks.faces`).

Frames are read with PyAV in decode order, once per chunk, and only the sampled frames are
converted to pixels; a track is sampled at most every ``sample_every_s`` seconds. For games the
video is not decoded again: detect_track computes the appearance vector of every detection while
its frame is in memory (the ``appearance`` parts, :func:`appearance_vectors`), and embed picks the
samples' vectors from them by box (:func:`embed_from_appearance`). Neither converts a whole frame:
the vectors read the decoder's YUV planes and convert only the bands' pixels, all boxes of a frame
at once (~2 ms a 720p frame of 11 players, was ~10 ms; :class:`YuvPlanes`).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from typing import Any, Final, Literal

import av
import numpy as np
import polars as pl
from prefect import task
from pydantic import BaseModel, ConfigDict, Field

from storage.artifacts import ArtifactRef, ArtifactStore, RunRef
from storage.schemas import polars_schema, validate_table
from tasks.appearance import YuvPlanes, appearance_image, appearance_vectors, clip_box
from tasks.common import as_frame, retry_transient, store
from tasks.decoding import FrameGrid, decode_wanted
from tasks.faces import detect_faces, face_descriptors
from tasks.ingest import Chunk


class EmbedParams(BaseModel):
    """Everything that changes embed's output (:meth:`for_faces` gives the episode defaults)."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["appearance", "face"] = "appearance"
    sample_every_s: float = Field(default=0.4, ge=0, description="Minimum time between samples of a track.")
    dense_below: int = Field(default=10, ge=0, description="Tracks with fewer rows keep every row.")
    max_per_track: int = Field(default=0, ge=0, description="Most samples per track (0 = no limit).")
    min_box_height_px: float = Field(default=24.0, ge=0, description="Smaller boxes are not embedded.")
    fast_decode: bool = Field(
        default=False,
        description="Skip H.264 deblocking: decoding ~30 % faster, but the blockier skin and hair colours "
        "of small players cost fragment merges (measured); off by default.",
    )
    detect_in_box: bool = Field(
        default=False, description="Faces: run HOG inside each box (else box = face)."
    )
    face_upsample: int = Field(default=1, ge=0, le=2, description="HOG upsampling (faces are small).")
    face_jitter: int = Field(default=0, ge=0, description="dlib num_jitters (0 = one pass; more is slower).")

    @classmethod
    def for_faces(cls, **changes: Any) -> EmbedParams:
        """Episodes: a track's first face, then one every 5 s of it.

        A track lives within one shot and its faces agree within ~0.2 (clustering cuts at 0.5), so
        more samples of a short track buy nothing but time; a long track still gets one per 5 s in
        case a face is poor. The first face is the cheap one to decode: a track mostly starts at
        its shot's cut, where the video has a keyframe, so :func:`iter_frames` seeks straight to it,
        and the shot's other tracks start on the same frame. On four generated 60 s episodes this
        gives the same purity (1.000) and screen-time errors as two samples spread over each track,
        for ~2.5x less time (decoding a sample in mid-shot costs more than describing it).
        """
        base = {
            "kind": "face",
            "sample_every_s": 5.0,
            "dense_below": 0,
            "max_per_track": 0,
            "min_box_height_px": 40,
        }
        return cls(**{**base, **changes})


# --- sampling and frames -------------------------------------------------------------------------


def select_samples(tracks: pl.DataFrame, params: EmbedParams) -> pl.DataFrame:
    """The track rows to embed: per track, a sample at most every ``sample_every_s`` seconds.

    Greedy in time order on each track, so a track's first row is always kept; tracks with fewer
    than ``dense_below`` rows keep every row (a short track needs all the evidence it has); boxes
    smaller than ``min_box_height_px`` are skipped (too few pixels for a colour or a face).
    """
    rows = tracks.filter((pl.col("y2") - pl.col("y1")) >= params.min_box_height_px).sort(
        "angle", "track_id", "frame"
    )
    if rows.is_empty() or params.sample_every_s <= 0:
        return rows
    keep = np.zeros(rows.height, bool)
    tid, ang, t = rows["track_id"].to_numpy(), rows["angle"].to_list(), rows["time_s"].to_numpy()
    dense = rows.select(pl.len().over("angle", "track_id") < params.dense_below).to_series().to_numpy()
    last_key: tuple[str, int] | None = None
    last_t = -np.inf
    for i in range(rows.height):
        key = (ang[i], int(tid[i]))
        if dense[i] or key != last_key or t[i] - last_t >= params.sample_every_s - 1e-6:
            keep[i] = True
            last_key, last_t = key, t[i]
    chosen = rows.filter(pl.Series(keep))
    if params.max_per_track <= 0:
        return chosen
    # evenly spread the allowed samples over each track: the first row of each of m equal buckets
    rank = pl.int_range(pl.len()).over("angle", "track_id")
    bucket = (rank * params.max_per_track) // pl.len().over("angle", "track_id")
    first = bucket != bucket.shift(1).over("angle", "track_id")
    return chosen.with_columns(_first=first.fill_null(True)).filter(pl.col("_first")).drop("_first")


def iter_frames(
    path: str,
    frames: Iterable[int],
    *,
    start_s: float = 0.0,
    rgb: bool = False,
    fast: bool = False,
    seek: bool = False,
) -> Iterator[tuple[int, np.ndarray]]:
    """Decode ``path`` once, in order, and yield ``(frame index, BGR/RGB array)`` for the wanted frames
    (:func:`decoded_frames`)."""
    for index, frame in decoded_frames(path, frames, start_s=start_s, fast=fast, seek=seek):
        yield index, frame.to_ndarray(format="rgb24" if rgb else "bgr24")


def iter_appearance_images(
    path: str, frames: Iterable[int], *, start_s: float = 0.0, fast: bool = False
) -> Iterator[tuple[int, YuvPlanes | np.ndarray]]:
    """:func:`iter_frames` for appearance vectors: each wanted frame's :func:`appearance_image`."""
    for index, frame in decoded_frames(path, frames, start_s=start_s, fast=fast):
        yield index, appearance_image(frame)


def decoded_frames(
    path: str,
    frames: Iterable[int],
    *,
    start_s: float = 0.0,
    fast: bool = False,
    seek: bool = False,
) -> Iterator[tuple[int, av.VideoFrame]]:
    """Decode ``path`` once, in order, and yield ``(frame index, PyAV frame)`` for the wanted frames.

    Frame indices follow detect_track's convention: ``round((pts_time - stream start) * fps)``.
    Decoding seeks to the keyframe before ``start_s``, stops after the last wanted frame, and skips
    the unwanted frames no other frame refers to (:mod:`tasks.decoding`). With ``seek``, it also
    jumps over every GOP that holds no wanted frame: to the keyframe before the next wanted frame
    when that keyframe is ahead of the decoder (sparse samples in a clip with a keyframe at each
    cut, as episodes are, decode a few frames per shot instead of every reference frame).
    """
    wanted = sorted(set(frames))
    if not wanted:
        return
    wanted_set = set(wanted)
    keyframes = _keyframes(path, start_s, wanted[-1]) if seek else []
    key_index = [index for index, _ in keyframes]
    with av.open(path) as container:
        stream = container.streams.video[0]
        if fast:
            # Skipping H.264's deblocking filter cuts decoding by ~30 %, at the price of blockier
            # colours in small boxes (see EmbedParams.fast_decode).
            stream.codec_context.options = {"skip_loop_filter": "all"}
        grid = FrameGrid.of(stream)
        if start_s > 0 and grid.time_base:
            container.seek(int((start_s + grid.origin) / grid.time_base), stream=stream, backward=True)
        decoded = decode_wanted(container, stream, wanted_set.__contains__, grid)
        position, frame = -1, None  # the last frame the decoder produced, and its index
        for target in wanted:
            key = bisect.bisect_right(key_index, target) - 1
            jumped = key >= 0 and key_index[key] > position + 1
            if jumped:
                # the decoder reads on from the keyframe (PyAV flushes its buffers on a seek)
                container.seek(keyframes[key][1], stream=stream, backward=True)
            while position < target:
                produced = next(decoded, None)
                if produced is None:
                    return
                position, frame = grid.index(produced[0]), produced[1]
                if jumped and position > target:  # the seek overshot: decode from the start, no seeking
                    container.seek(keyframes[0][1], stream=stream, backward=True)
                    key_index, position, jumped = [], -1, False
            if position == target and frame is not None:
                yield target, frame


def _keyframes(path: str, start_s: float, last: int) -> list[tuple[int, int]]:
    """(frame index, pts) of the keyframes from ``start_s`` to frame ``last`` (packets only: no decoding)."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        grid = FrameGrid.of(stream)
        if start_s > 0 and grid.time_base:
            container.seek(int((start_s + grid.origin) / grid.time_base), stream=stream, backward=True)
        out: list[tuple[int, int]] = []
        for packet in container.demux(stream):
            if packet.pts is None:
                continue
            if grid.index(packet.pts) > last and packet.is_keyframe:
                break
            if packet.is_keyframe:
                out.append((grid.index(packet.pts), packet.pts))
        return sorted(out)


def _clip_box(row: dict[str, Any], w: int, h: int) -> tuple[int, int, int, int]:
    return clip_box(row["x1"], row["y1"], row["x2"], row["y2"], w, h)


def embed_frames(
    frames: Iterable[tuple[int, Any]],
    samples: pl.DataFrame,
    params: EmbedParams,
    *,
    angle: str,
    engine: Literal["onnx", "dlib"] = "onnx",
) -> pl.DataFrame:
    """Embeddings of ``samples`` (track rows of one angle) from decoded ``frames`` (pure but for models).

    Frames must be :func:`appearance_image`'s for appearance (:func:`iter_appearance_images`, as
    detect_track reads them) and RGB arrays for faces (:func:`iter_frames`' ``rgb``); ``engine``
    runs the face ResNet (:func:`face_descriptors`).
    """
    by_frame: dict[int, list[dict[str, Any]]] = {}
    for row in samples.filter(pl.col("angle") == angle).iter_rows(named=True):
        by_frame.setdefault(int(row["frame"]), []).append(row)
    out: list[dict[str, Any]] = []
    for index, image in frames:
        rows = by_frame.get(index)
        if not rows:
            continue
        if params.kind == "appearance":
            boxes = [(row["x1"], row["y1"], row["x2"], row["y2"]) for row in rows]
            for row, vector in zip(rows, appearance_vectors(image, boxes), strict=True):
                if vector is not None:
                    out.append(_row(angle, row, index, "appearance", vector, None))
        else:
            out.extend(_face_rows(image, rows, params, angle, index, engine))
    return pl.DataFrame(out, schema=polars_schema("embeddings"))


def _face_rows(
    image: np.ndarray,
    rows: list[dict[str, Any]],
    params: EmbedParams,
    angle: str,
    index: int,
    engine: Literal["onnx", "dlib"],
) -> list[dict[str, Any]]:
    h, w = image.shape[:2]
    faces: list[tuple[dict[str, Any], tuple[float, float, float, float]]] = []
    for row in rows:
        x1, y1, x2, y2 = _clip_box(row, w, h)
        if x2 - x1 < 8 or y2 - y1 < 8:
            continue
        if not params.detect_in_box:
            faces.append((row, (x1, y1, x2, y2)))
            continue
        found = detect_faces(np.ascontiguousarray(image[y1:y2, x1:x2]), params.face_upsample)
        if found:
            fx1, fy1, fx2, fy2, _ = max(found, key=lambda f: f[4])
            faces.append((row, (x1 + fx1, y1 + fy1, x1 + fx2, y1 + fy2)))
    vectors = face_descriptors(image, [box for _, box in faces], params.face_jitter, engine=engine)
    return [
        _row(angle, row, index, "face", vector, box)
        for (row, box), vector in zip(faces, vectors, strict=True)
    ]


def _row(
    angle: str,
    row: dict[str, Any],
    frame: int,
    kind: str,
    vector: np.ndarray,
    face: tuple[float, float, float, float] | None,
) -> dict[str, Any]:
    fx1, fy1, fx2, fy2 = face if face is not None else (None, None, None, None)
    return {
        "angle": angle,
        "track_id": int(row["track_id"]),
        "frame": frame,
        "kind": kind,
        "vector": vector.astype(np.float32).tolist(),
        "face_x1": fx1,
        "face_y1": fy1,
        "face_x2": fx2,
        "face_y2": fy2,
    }


def embed_video(
    path: str,
    tracks: pl.DataFrame,
    params: EmbedParams,
    *,
    angle: str,
    start_s: float = 0.0,
    end_s: float = float("inf"),
    engine: Literal["onnx", "dlib"] = "onnx",
) -> pl.DataFrame:
    """Embeddings of one angle's tracks in ``[start_s, end_s)`` (one chunk): decode once, embed samples.

    Faces are a few samples per shot and episodes have a keyframe at each cut, so their decoding
    seeks over the GOPs that hold no sample (:func:`iter_frames`' ``seek``; the same frames).
    """
    samples = select_samples(_chunk_rows(tracks, angle, start_s, end_s), params)
    faces = params.kind == "face"
    wanted = samples["frame"].to_list()
    frames = (
        iter_frames(path, wanted, start_s=start_s, rgb=True, fast=params.fast_decode, seek=True)
        if faces
        else iter_appearance_images(path, wanted, start_s=start_s, fast=params.fast_decode)
    )
    table = embed_frames(frames, samples, params, angle=angle, engine=engine)
    validate_table("embeddings", table)
    return table


def _chunk_rows(tracks: pl.DataFrame, angle: str, start_s: float, end_s: float) -> pl.DataFrame:
    return tracks.filter(
        (pl.col("angle") == angle) & (pl.col("time_s") >= start_s - 1e-6) & (pl.col("time_s") < end_s - 1e-6)
    )


APPEARANCE_KEY: Final = ("angle", "frame", "x1", "y1", "x2", "y2")
"""A track row finds its detection's vector by its exact box: stitch copies detect_track's boxes unchanged."""


def embed_from_appearance(
    path: str,
    tracks: pl.DataFrame,
    appearance: pl.DataFrame,
    params: EmbedParams,
    *,
    angle: str,
    start_s: float = 0.0,
    end_s: float = float("inf"),
) -> tuple[pl.DataFrame, int]:
    """Games: :func:`embed_video`'s table, read from detect_track's appearance parts instead of decoding.

    Returns the table and how many samples had no row in ``appearance`` (a part missing or written by
    older code): only those are decoded, so the table is the same either way.
    """
    samples = select_samples(_chunk_rows(tracks, angle, start_s, end_s), params)
    key = list(APPEARANCE_KEY)
    vectors = appearance.select(*key, "vector").unique(subset=key, keep="first")
    joined = samples.join(vectors, on=key, how="left")
    missing = joined.filter(pl.col("vector").is_null()).drop("vector")
    found = joined.filter(pl.col("vector").list.len() > 0).select(
        "angle",
        "track_id",
        "frame",
        kind=pl.lit("appearance"),
        vector="vector",
        face_x1=pl.lit(None),
        face_y1=pl.lit(None),
        face_x2=pl.lit(None),
        face_y2=pl.lit(None),
    )
    table = found.cast(polars_schema("embeddings"))
    if not missing.is_empty():
        frames = iter_appearance_images(
            path, missing["frame"].to_list(), start_s=start_s, fast=params.fast_decode
        )
        table = pl.concat([table, embed_frames(frames, missing, params, angle=angle)])
    table = table.sort("frame", "track_id")  # embed_video's order: decode order, then samples' order
    validate_table("embeddings", table)
    return table, missing.height


# --- the stage -------------------------------------------------------------------------------------


@task(
    name="embed",
    retries=2,
    retry_delay_seconds=1,
    retry_condition_fn=retry_transient,
    task_run_name="embed-{chunk.angle}-{chunk.index}",
)
def embed_task(ref: RunRef, chunk: Chunk, params: EmbedParams) -> ArtifactRef:
    """One chunk's tracks → its embeddings part (skipped when a previous attempt wrote it)."""
    artifacts = store()
    if artifacts.has_part(ref, "embeddings", chunk.index):
        return artifacts.part_ref(ref, "embeddings", chunk.index)
    tracks = pl.from_arrow(artifacts.read_table(ref, "tracks"))
    assert isinstance(tracks, pl.DataFrame)
    angle, start_s, end_s = chunk.angle, chunk.start_s, chunk.end_s
    if params.kind == "face":  # faces need pixels
        table = embed_video(chunk.path, tracks, params, angle=angle, start_s=start_s, end_s=end_s)
    else:
        appearance = read_appearance(artifacts, ref, chunk)
        table, _ = embed_from_appearance(
            chunk.path, tracks, appearance, params, angle=angle, start_s=start_s, end_s=end_s
        )
    return artifacts.write_part(ref, "embeddings", chunk.index, table)


def read_appearance(artifacts: ArtifactStore, ref: RunRef, chunk: Chunk) -> pl.DataFrame:
    """detect_track's appearance rows that can hold this chunk's track boxes: stitch gives the frames of the
    overlap to the chunk before, so that chunk's part is read too (chunk indices are consecutive
    within an angle)."""
    frames = [
        as_frame(artifacts.read_part(ref, "appearance", index))
        for index in (chunk.index - 1, chunk.index)
        if index >= 0 and artifacts.has_part(ref, "appearance", index)
    ]
    empty = pl.DataFrame(schema=polars_schema("appearance"))
    return pl.concat([empty, *frames]).filter(pl.col("angle") == chunk.angle)


@task(name="embed-collect", retries=2, retry_delay_seconds=1, retry_condition_fn=retry_transient)
def collect_embeddings_task(ref: RunRef, chunks: list[Chunk]) -> ArtifactRef:
    """Every chunk's embeddings part → the run's embeddings.parquet."""
    artifacts = store()
    parts = (artifacts.read_part(ref, "embeddings", c.index) for c in chunks)
    return artifacts.write_table(ref, "embeddings", parts)
