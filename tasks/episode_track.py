"""episode_track: people in broadcast episodes, tracked by their faces within each shot.

Episodes are hard-cut head-and-shoulders shots, not a pitch seen from afar: the person detector of
detect_track (trained on match footage) is the wrong tool, and a face is what identifies a cast
member anyway. So for an episode this stage takes detect_track's place and writes the same
detections table (``DETECTION_COLUMNS``, boxes = face boxes), which ``stitch`` turns into global
tracks across chunks as usual:

1. every decoded frame gets a 64x36 grey thumbnail; a mean absolute change between consecutive
   frames above both ``cut_threshold`` grey levels and ``cut_ratio`` times the median change of
   the previous second is a cut (a new shot) — the ratio keeps pans and fast motion, which change
   every frame a lot, from looking like cuts; synthetic and studio cuts change 12-55 levels where
   a still shot changes < 1;
2. frames on the analysis grid (the same grid as detect_track) are scaled so the smallest face
   expected (``min_face_frac`` of the frame height) is ≥ 80 px for dlib's HOG detector — upsampling
   once when the frame is too small for that — and searched for frontal faces;
3. faces are linked to the shot's live tracks by IoU (Hungarian over the pairs ≥ ``link_iou``, so
   two poor pairs never outweigh a good one); a track survives
   ``max_missed`` analysed frames without a face, and every track ends at a cut.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
import polars as pl
from prefect import task
from pydantic import BaseModel, ConfigDict, Field
from scipy.optimize import linear_sum_assignment

from storage.artifacts import ArtifactRef, RunRef
from tasks.common import retry_transient, store
from tasks.detect_track import DETECTION_COLUMNS, frame_stride
from tasks.faces import detect_faces
from tasks.ingest import Chunk

HOG_WINDOW_PX = 80  # dlib's frontal detector finds faces of about this size and larger


class EpisodeTrackParams(BaseModel):
    """Everything that changes episode_track's output."""

    model_config = ConfigDict(frozen=True)

    analysis_fps: float = Field(default=5.0, gt=0, description="Frames per second searched for faces.")
    min_face_frac: float = Field(
        default=0.14, gt=0, le=1, description="Smallest face, share of frame height."
    )
    cut_threshold: float = Field(default=6.0, gt=0, description="Least mean grey-level change of a cut.")
    cut_ratio: float = Field(
        default=4.0, gt=1, description="A cut changes this much more than recent frames."
    )
    face_threshold: float = Field(
        default=-0.2, description="HOG SVM margin a face needs (dlib's default 0; lower finds more faces)."
    )
    link_iou: float = Field(default=0.3, gt=0, le=1, description="IoU linking a face to a live track.")
    max_missed: int = Field(default=2, ge=0, description="Analysed frames a track may miss its face.")


@dataclass
class _Live:
    track: int
    box: np.ndarray
    missed: int = 0


@dataclass
class _Linker:
    """IoU linking of per-frame face boxes into shot-bound tracks."""

    params: EpisodeTrackParams
    live: list[_Live] = field(default_factory=list)
    next_id: int = 1

    def cut(self) -> None:
        self.live.clear()

    def step(self, boxes: np.ndarray) -> list[int]:
        ids = [-1] * len(boxes)
        if self.live and len(boxes):
            iou = _iou_matrix(np.stack([t.box for t in self.live]), boxes)
            iou[iou < self.params.link_iou] = 0.0  # a pair under link_iou must not win the sum
            rows, cols = linear_sum_assignment(-iou)
            for r, c in zip(rows, cols, strict=True):
                if iou[r, c] >= self.params.link_iou:
                    ids[c] = self.live[r].track
                    self.live[r].box, self.live[r].missed = boxes[c], -1
        for t in self.live:
            t.missed += 1
        self.live = [t for t in self.live if t.missed <= self.params.max_missed]
        for c, tid in enumerate(ids):
            if tid < 0:
                ids[c] = self.next_id
                self.live.append(_Live(self.next_id, boxes[c]))
                self.next_id += 1
        return ids


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return np.asarray(inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9))


def detection_scale(height: int, params: EpisodeTrackParams) -> tuple[float, int]:
    """(resize factor, HOG upsampling) that brings the smallest expected face to HOG's window size."""
    needed = HOG_WINDOW_PX * 1.05 / (params.min_face_frac * height)
    if needed <= 1.0:
        return needed, 0
    return min(1.0, needed / 2), 1


@dataclass(frozen=True)
class SampledFaces:
    frame: int
    time_s: float
    cut_before: bool  # a cut happened since the previous analysed frame
    boxes: np.ndarray  # (n, 4) source pixels
    scores: np.ndarray  # (n,)


def iter_faces(chunk: Chunk, params: EpisodeTrackParams) -> Iterator[SampledFaces]:
    """Decode ``[chunk.start_s, chunk.decode_end_s)``: cuts on every frame, faces on the analysis grid."""
    with av.open(chunk.path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        tb = float(stream.time_base or 0)
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        origin = float(stream.start_time * tb) if stream.start_time is not None else 0.0
        stride = frame_stride(fps, params.analysis_fps)
        width, height = stream.codec_context.width, stream.codec_context.height
        scale, upsample = detection_scale(height, params)
        det_w, det_h = max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)
        if chunk.start_s > origin and tb:
            container.seek(int(chunk.start_s / tb), stream=stream, backward=True)
        half = 0.5 / fps
        previous: np.ndarray | None = None
        recent: deque[float] = deque(maxlen=max(3, round(fps)))
        cut = True
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            t = float(frame.pts * tb)
            if t < chunk.start_s - half:
                continue
            if t >= chunk.decode_end_s - half:
                break
            thumb = frame.reformat(width=64, height=36, format="gray").to_ndarray().astype(np.int16)
            if previous is not None:
                change = float(np.abs(thumb - previous).mean())
                usual = float(np.median(recent)) if recent else 0.0
                if change > max(params.cut_threshold, params.cut_ratio * usual):
                    cut = True
                    recent.clear()
                else:
                    recent.append(change)
            previous = thumb
            index = round((t - origin) * fps)
            if index % stride:
                continue
            image = frame.reformat(width=det_w, height=det_h, format="rgb24").to_ndarray()
            found = detect_faces(image, upsample, params.face_threshold)
            boxes = np.asarray([f[:4] for f in found], np.float64).reshape(-1, 4) * (width / det_w)
            scores = np.asarray([f[4] for f in found], np.float64)
            yield SampledFaces(index, t - origin, cut, boxes, scores)
            cut = False


def link_faces(
    sampled: Iterator[SampledFaces], params: EpisodeTrackParams, *, angle: str, chunk: int
) -> pl.DataFrame:
    """Face boxes → detections with chunk-local track ids (pure: no decoding)."""
    linker = _Linker(params)
    rows: list[dict[str, Any]] = []
    for s in sampled:
        if s.cut_before:
            linker.cut()
        ids = linker.step(s.boxes)
        for box, score, tid in zip(s.boxes, s.scores, ids, strict=True):
            rows.append(
                {
                    "angle": angle,
                    "chunk": chunk,
                    "frame": s.frame,
                    "time_s": s.time_s,
                    "x1": float(box[0]),
                    "y1": float(box[1]),
                    "x2": float(box[2]),
                    "y2": float(box[3]),
                    "conf": float(np.clip(0.5 + score / 4, 0.0, 1.0)),  # HOG margin ~ -0.5..2
                    "cls": 0,
                    "local_track_id": tid,
                }
            )
    return pl.DataFrame(rows, schema=DETECTION_COLUMNS)


def episode_track_chunk(chunk: Chunk, params: EpisodeTrackParams) -> pl.DataFrame:
    """One chunk of an episode → face detections with chunk-local track ids."""
    return link_faces(iter_faces(chunk, params), params, angle=chunk.angle, chunk=chunk.index)


@task(
    name="episode_track",
    retries=2,
    retry_delay_seconds=1,
    retry_condition_fn=retry_transient,
    task_run_name="episode_track-{chunk.angle}-{chunk.index}",
)
def episode_track_task(ref: RunRef, chunk: Chunk, params: EpisodeTrackParams) -> ArtifactRef:
    """One episode chunk → its detections part (what detect_track writes for games)."""
    artifacts = store()
    if artifacts.has_part(ref, "detections", chunk.index):
        return artifacts.part_ref(ref, "detections", chunk.index)
    table = episode_track_chunk(chunk, params)
    return artifacts.write_part(
        ref, "detections", chunk.index, table.with_columns(track_id=pl.lit(None, pl.Int64))
    )
