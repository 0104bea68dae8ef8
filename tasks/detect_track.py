"""detect_track: decode one chunk, sample it at the analysis rate, detect people in batches, track them.

Frames are sampled on the *global* frame grid (frame index divisible by the stride), so two chunks that
overlap sample exactly the same frames there — which is what lets stitch match their tracks.
PyAV scales each sampled frame straight to the model's input size (swscale is cheaper than converting
the full 720p frame and resizing it again); boxes are scaled back to source pixels.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import av
import cv2
import numpy as np
import polars as pl
from prefect import task
from pydantic import BaseModel, Field

from storage.artifacts import ArtifactRef, RunRef
from storage.schemas import polars_schema
from tasks.appearance import YuvPlanes, appearance_image, appearance_vectors, rect_pixels, warm_appearance
from tasks.common import retry_transient, store
from tasks.decoding import FrameGrid, decode_wanted
from tasks.detector import FrameBoxes, detect_batch, load_model
from tasks.ingest import Chunk
from tasks.tracker import make_tracker


class DetectParams(BaseModel):
    """Everything that changes detect_track's output (part of the stage cache key)."""

    weights: str = Field(default="", description="YOLO weights; empty = bundled detector.")
    imgsz: int = 640
    conf: float = 0.25
    # NMS: at 0.8 two overlapping players keep both boxes more often, but one player gets two far more
    # often: on the five quality sets players over 3 % of the clip 23 -> 45, tracks MOTA 0.89-0.92 ->
    # 0.82-0.85 (bench/tracking_quality.py, fresh tracks).
    iou: float = 0.7
    analysis_fps: float = 5.0
    batch: int = 1  # per frame: in two busy workers batches of 8 ran ~10% slower a frame (cache misses)
    tracker: str = "botsort"  # with global motion compensation: broadcast cameras pan
    association: Literal["motion", "iou"] = Field(
        default="motion",
        description="BoT-SORT's association cost: 'motion' = centre distance to the Kalman prediction with "
        "a kit-colour veto (tasks/tracker.py), 'iou' = ultralytics' stock IoU/ReID cost.",
    )
    # A tracker that keeps a lost track long re-finds the lost player on a team-mate who walks into
    # his predicted place (seen 4-5 s after the loss); gaps past the buffer are joined by stitch's
    # link step (up to 4.5 s, by motion and kit) and by the cluster stage, which compare the players'
    # looks too. bench/tracking_quality.py, three clip sets (tuned / seeds + 100 / + 200), mean
    # screen-time error per player, default preset: 5 s 1.57 / 1.98 / 1.32 %, 2.5 s 1.42 / 1.99 /
    # 1.32 % (tuned q-tight-shaky's worst player 13.4 -> 9.0 %); track IDF1 0.878 / 0.827 / 0.892 ->
    # 0.881 / 0.823 / 0.893. With the link and cluster rules before them: 5 s 1.61 / 2.22 / 1.96 %,
    # 3.5 s 1.41 / 2.24 / 1.96 %, 2.5 s 1.42 / 1.99 / 1.96 %, 1.5 s 1.39 / 1.99 / 1.93 %.
    track_buffer_s: float = Field(default=2.5, gt=0, description="Seconds a lost track is kept to re-find.")
    box_buffer: float = Field(
        default=2.5,
        ge=0.0,
        description="Boxes are widened by this fraction of their width (and half of it in height) on each "
        "side before association: at 5 analysed frames per second a running player moves about his own "
        "width between samples, so raw boxes would not overlap (buffered IoU, as in C-BIoU).",
    )
    threads: int = 1
    appearance: bool = Field(
        default=True,
        description="BoT-SORT: also match on kit colour (CIELAB of shirt and shorts) as the ReID feature.",
    )
    tracker_options: dict[str, float | str | bool] = Field(
        # measured on the quality set (bench/tracking_quality.py): tracks start and are matched first on
        # confident boxes only (0.4/0.6); boxes between conf and 0.4 extend existing tracks (ByteTrack's
        # second stage); match_thresh bounds the association cost (tasks/tracker.py)
        default_factory=lambda: dict[str, float | str | bool](
            match_thresh=0.95, track_high_thresh=0.4, new_track_thresh=0.6
        ),
        description="Overrides of the ultralytics tracker YAML (e.g. match_thresh).",
    )


DETECTION_COLUMNS = {
    "angle": pl.Utf8,
    "chunk": pl.Int32,
    "frame": pl.Int32,
    "time_s": pl.Float64,
    "x1": pl.Float32,
    "y1": pl.Float32,
    "x2": pl.Float32,
    "y2": pl.Float32,
    "conf": pl.Float32,
    "cls": pl.Int16,
    "local_track_id": pl.Int32,
}


@dataclass
class SampledFrame:
    frame: int
    time_s: float
    image: np.ndarray  # BGR at model scale
    scale: float  # source pixels per model pixel
    # the source frame (appearance_image) until its appearance vectors are computed
    full: YuvPlanes | np.ndarray | None = None


@dataclass
class ChunkStats:
    decoded: int = 0
    sampled: int = 0
    decode_s: float = 0.0
    infer_s: float = 0.0
    track_s: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


def frame_stride(fps: float, analysis_fps: float) -> int:
    return max(1, round(fps / analysis_fps))


def model_size(width: int, height: int, imgsz: int) -> tuple[int, int]:
    """The frame size PyAV scales to: long side = imgsz, even dimensions."""
    scale = imgsz / max(width, height)
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def sample_frames(
    chunk: Chunk, analysis_fps: float, imgsz: int, stats: ChunkStats, full: bool = False
) -> Iterator[SampledFrame]:
    """Decode ``[chunk.start_s, chunk.decode_end_s)`` and yield the frames on the sampling grid.

    Frames off the grid that no other frame refers to are not decoded at all (:mod:`tasks.decoding`).
    ``full`` also keeps each frame at source size, as the decoder's YUV planes (no conversion: embed's
    appearance vectors convert only the pixels they read).
    """
    with av.open(chunk.path) as container:
        stream = container.streams.video[0]
        grid = FrameGrid.of(stream)
        stride = frame_stride(grid.fps, analysis_fps)
        width, height = model_size(stream.codec_context.width, stream.codec_context.height, imgsz)
        scale = stream.codec_context.width / width
        if chunk.start_s > grid.origin:
            container.seek(int(chunk.start_s / grid.time_base), stream=stream, backward=True)
        half_frame = 0.5 / grid.fps
        start, end = chunk.start_s - grid.origin - half_frame, chunk.decode_end_s - grid.origin - half_frame

        def count(pts: int) -> None:
            if start <= grid.time(pts) < end:
                stats.decoded += 1

        started = time.perf_counter()
        for pts, frame in decode_wanted(container, stream, lambda i: i % stride == 0, grid, count):
            t = grid.time(pts)
            if t < start:
                continue
            if t >= end:
                break
            index = grid.index(pts)
            if index % stride:
                continue
            image = frame.reformat(width=width, height=height, format="bgr24").to_ndarray()
            stats.decode_s += time.perf_counter() - started
            source = None
            if full:  # reading the source-size frame is part of the appearance vectors' cost
                started = time.perf_counter()
                source = appearance_image(frame)
                converted = time.perf_counter() - started
                stats.extra["appearance_s"] = stats.extra.get("appearance_s", 0.0) + converted
            yield SampledFrame(index, t, image, scale, source)
            started = time.perf_counter()
        stats.decode_s += time.perf_counter() - started


class _TrackerInput:
    """The minimal numpy-backed Boxes view ultralytics' trackers read (conf, cls, xywh, xyxy, [mask]).

    Boxes are buffered (widened) for association only: rows map back to the raw detections by index.
    """

    def __init__(self, boxes: FrameBoxes, buffer: float = 0.0) -> None:
        self._boxes = boxes
        self._buffer = buffer
        xy = (boxes.xyxy[:, :2] + boxes.xyxy[:, 2:]) / 2
        wh = (boxes.xyxy[:, 2:] - boxes.xyxy[:, :2]) * np.array([1 + 2 * buffer, 1 + buffer], np.float32)
        self.xywh = np.concatenate([xy, wh], axis=1)
        self.xyxy = np.concatenate([xy - wh / 2, xy + wh / 2], axis=1)
        self.conf = boxes.conf
        self.cls = boxes.cls.astype(np.float32)

    def __len__(self) -> int:
        return int(self.conf.shape[0])

    def __getitem__(self, mask: Any) -> _TrackerInput:
        b = self._boxes
        return _TrackerInput(FrameBoxes(b.xyxy[mask], b.conf[mask], b.cls[mask]), self._buffer)


def warm_worker(params: DetectParams) -> bool:
    """Load what every chunk of this process needs, once: the detector, ultralytics' tracker code
    (the ONNX detector does not import ultralytics or torch; the tracker does, ~3 s) and the
    appearance vectors' colour table. Returns True (for ``Client.run``)."""
    load_model(params.weights, params.threads)
    tracker_for(params)
    warm_appearance()
    return True


def tracker_for(params: DetectParams) -> Any:
    """A fresh tracker configured as ``params`` say (one per chunk: tracks are chunk-local)."""
    return make_tracker(
        params.tracker,
        params.analysis_fps,
        params.track_buffer_s,
        params.tracker_options,
        params.appearance,
        params.association,
    )


def detect_track_chunk(chunk: Chunk, params: DetectParams) -> tuple[pl.DataFrame, ChunkStats]:
    """Detections with chunk-local track ids for every sampled frame of ``chunk`` (pure but for decoding)."""
    detections, _, stats = detect_track_appearance(chunk, params, appearance=False)
    return detections, stats


def detect_track_appearance(
    chunk: Chunk, params: DetectParams, *, appearance: bool = True
) -> tuple[pl.DataFrame, pl.DataFrame, ChunkStats]:
    """:func:`detect_track_chunk`, plus (``appearance``) embed's appearance vector of every detection.

    The vectors are computed from the source-size frame while it is decoded anyway (the
    ``appearance`` table: one row per detection, an empty vector for a box too small to embed), so
    embed need not decode the video a second time. ``stats.extra["appearance_s"]`` is their cost
    (converting the source-size frames and computing the vectors).
    """
    model = load_model(params.weights, params.threads)
    tracker = tracker_for(params)
    use_features = params.appearance and params.tracker == "botsort"
    stats = ChunkStats()
    rows: list[dict[str, Any]] = []
    vectors: list[dict[str, Any]] = []
    batch: list[SampledFrame] = []
    vectors_s = 0.0

    def flush() -> None:
        nonlocal vectors_s
        started = time.perf_counter()
        detections = detect_batch(
            model, [s.image for s in batch], imgsz=params.imgsz, conf=params.conf, iou=params.iou
        )
        stats.infer_s += time.perf_counter() - started
        started = time.perf_counter()
        for sampled, boxes in zip(batch, detections, strict=True):
            feats = kit_features(sampled.image, boxes.xyxy) if use_features else None
            tracked = _track_frame(tracker, chunk, sampled, boxes, params.box_buffer, feats)
            rows.extend(tracked)
            if sampled.full is not None:
                begun = time.perf_counter()
                vectors.extend(_appearance_rows(sampled.full, tracked))
                sampled.full = None
                vectors_s += time.perf_counter() - begun
        stats.track_s += time.perf_counter() - started
        stats.sampled += len(batch)
        batch.clear()

    for sampled in sample_frames(chunk, params.analysis_fps, params.imgsz, stats, full=appearance):
        batch.append(sampled)
        if len(batch) >= params.batch:
            flush()
    if batch:
        flush()
    stats.track_s -= vectors_s  # the vectors were computed inside the tracking loop
    if appearance:
        stats.extra["appearance_s"] = stats.extra.get("appearance_s", 0.0) + vectors_s
    table = pl.DataFrame(vectors, schema=polars_schema("appearance"))
    return pl.DataFrame(rows, schema=DETECTION_COLUMNS), table, stats


def _appearance_rows(image: YuvPlanes | np.ndarray, detections: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One appearance row per detection row; boxes rounded to float32 first, as the parts store them
    (embed clips the stored box, so the vector must come from exactly that box)."""
    boxes: list[tuple[float, float, float, float]] = [
        (_f32(row["x1"]), _f32(row["y1"]), _f32(row["x2"]), _f32(row["y2"])) for row in detections
    ]
    out = []
    for row, box, vector in zip(detections, boxes, appearance_vectors(image, boxes), strict=True):
        x1, y1, x2, y2 = box
        out.append(
            {
                "angle": row["angle"],
                "frame": row["frame"],
                "x1": x1,
                "y1": y1,
                "x2": x2,
                "y2": y2,
                "vector": [] if vector is None else vector.tolist(),
            }
        )
    return out


KIT_BANDS = ((0.22, 0.48), (0.48, 0.62))
"""kit_features' shirt and shorts bands, as fractions of the box height (the middle half of its width)."""


def kit_features(image: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
    """Per box, the CIELAB colour of the shirt band and the shorts band, as a unit vector (the ReID feature).

    Lightness is down-weighted (shadows and the pitch change it), the colour axes carry the kit. Only
    the bands' pixels are converted to CIELAB (a few percent of the frame's), all boxes' in one call.
    """
    h, w = image.shape[:2]
    n = len(xyxy)
    out = np.zeros((n, 2, 3), np.float32)
    if n:
        x1, y1, x2, y2 = np.asarray(xyxy, np.float32).T
        bh = np.maximum(np.float32(1.0), y2 - y1)
        xa = np.maximum(0, x1 + 0.25 * (x2 - x1)).astype(np.intp)
        xb = np.minimum(w, (np.minimum(np.float32(w), x2 - 0.25 * (x2 - x1)) + 1).astype(np.intp))
        rects = []
        for top, bottom in KIT_BANDS:
            ya = np.maximum(0, y1 + top * bh).astype(np.intp)
            yb = np.minimum(h, (np.minimum(np.float32(h), y1 + bottom * bh) + 1).astype(np.intp))
            rects.append(np.stack([ya, yb, xa, xb], axis=1))
        rows, cols, band = rect_pixels(np.stack(rects, axis=1).reshape(-1, 4))  # box-major
        if len(band):
            lab = cv2.cvtColor(np.ascontiguousarray(image[rows, cols])[None], cv2.COLOR_BGR2LAB)[0]
            count = np.bincount(band, minlength=2 * n)
            sums = np.stack([np.bincount(band, lab[:, c], minlength=2 * n) for c in range(3)], axis=1)
            mean = sums / np.maximum(count, 1)[:, None]
            scaled = (mean - 128) / (255.0, 32.0, 32.0)
            out.reshape(-1, 3)[count > 0] = scaled[count > 0]
    flat = out.reshape(n, 6)
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    return np.asarray(flat / np.maximum(norms, 1e-6))


def _f32(value: float) -> float:
    return float(np.float32(value))


def _track_frame(
    tracker: Any,
    chunk: Chunk,
    sampled: SampledFrame,
    boxes: FrameBoxes,
    buffer: float,
    feats: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    tracked = tracker.update(_TrackerInput(boxes, buffer), sampled.image, feats=feats)
    track_of = {int(row[7]): int(row[4]) for row in tracked} if len(tracked) else {}
    out = []
    for i in range(len(boxes)):
        x1, y1, x2, y2 = (float(v) * sampled.scale for v in boxes.xyxy[i])
        out.append(
            {
                "angle": chunk.angle,
                "chunk": chunk.index,
                "frame": sampled.frame,
                "time_s": sampled.time_s,
                "x1": x1,
                "y1": y1,
                "x2": x2,
                "y2": y2,
                "conf": float(boxes.conf[i]),
                "cls": int(boxes.cls[i]),
                "local_track_id": track_of.get(i),
            }
        )
    return out


@task(
    name="detect_track",
    retries=2,
    retry_delay_seconds=1,
    retry_condition_fn=retry_transient,
    task_run_name="detect_track-{chunk.angle}-{chunk.index}",
)
def detect_track_task(ref: RunRef, chunk: Chunk, params: DetectParams) -> ArtifactRef:
    """One chunk → its detections part and its appearance part (skipped when a previous attempt wrote both).

    The appearance part is written first: a detections part on disk means both are whole.
    """
    artifacts = store()
    if artifacts.has_part(ref, "detections", chunk.index) and artifacts.has_part(
        ref, "appearance", chunk.index
    ):
        return artifacts.part_ref(ref, "detections", chunk.index)
    table, appearance, _ = detect_track_appearance(chunk, params)
    artifacts.write_part(ref, "appearance", chunk.index, appearance)
    return artifacts.write_part(
        ref, "detections", chunk.index, table.with_columns(track_id=pl.lit(None, pl.Int64))
    )
