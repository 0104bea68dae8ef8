"""The int8 detector build: it finds the people the float model finds, and quantize-detector rebuilds it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from infra.synth import SynthClip
from tasks.detect_track import ChunkStats, sample_frames
from tasks.detector import BUNDLED_FLOAT_WEIGHTS, FrameBoxes, detect_batch, load_model
from tasks.evaluate import iou_matrix
from tasks.ingest import Chunk
from tasks.quantize import HEAD_PREFIX, QuantizeConfig, head_float_nodes, quantize_onnx

INT8_WEIGHTS = BUNDLED_FLOAT_WEIGHTS.with_name(f"{BUNDLED_FLOAT_WEIGHTS.stem}-int8.onnx")
# On this clip the int8 build finds the same people (measured: every float box matched, mean IoU
# 0.97); floors a little under that.
MIN_AGREEMENT = 0.95
MIN_MEAN_IOU = 0.9


@pytest.fixture(scope="module")
def frames(game_clip: SynthClip) -> list[np.ndarray]:
    whole = Chunk(
        index=0, angle="main", path=str(game_clip.video_path), start_s=0.0, end_s=1e9, decode_end_s=1e9
    )
    return [s.image for s in sample_frames(whole, 5.0, 640, ChunkStats())][:8]


def agreement(reference: list[FrameBoxes], other: list[FrameBoxes]) -> tuple[float, float]:
    """Share of the reference boxes matched by ``other`` (IoU >= 0.5), and the matches' mean IoU."""
    matched, ious, total = 0, [], 0
    for ref, got in zip(reference, other, strict=True):
        total += len(ref)
        if not len(ref) or not len(got):
            continue
        iou = iou_matrix(ref.xyxy.astype(np.float64), got.xyxy.astype(np.float64))
        best = iou.max(axis=1)
        matched += int((best >= 0.5).sum())
        ious += best[best >= 0.5].tolist()
    return matched / max(total, 1), float(np.mean(ious)) if ious else 0.0


def _detect(weights: Path, frames: list[np.ndarray]) -> list[FrameBoxes]:
    return detect_batch(load_model(str(weights), 1), frames, imgsz=640, conf=0.25, iou=0.7)


def test_the_int8_build_ships_and_finds_the_people_the_float_model_finds(frames: list[np.ndarray]) -> None:
    assert INT8_WEIGHTS.exists() and INT8_WEIGHTS.stat().st_size < 20 * 1024 * 1024
    reference = _detect(BUNDLED_FLOAT_WEIGHTS, frames)
    assert sum(len(b) for b in reference) > 20  # the clip has people in every frame
    share, mean_iou = agreement(reference, _detect(INT8_WEIGHTS, frames))
    assert share >= MIN_AGREEMENT
    assert mean_iou >= MIN_MEAN_IOU


def test_the_head_after_its_convolutions_stays_float() -> None:
    kept = head_float_nodes(BUNDLED_FLOAT_WEIGHTS)
    assert kept and all(name.startswith(HEAD_PREFIX) for name in kept)
    assert any("/dfl/" in name for name in kept)


def test_quantize_detector_rebuilds_a_model_ultralytics_runs(
    tmp_path: Path, frames: list[np.ndarray]
) -> None:
    target = tmp_path / "rebuilt-int8.onnx"
    quantize_onnx(BUNDLED_FLOAT_WEIGHTS, target, QuantizeConfig(calibration_clips=1, frames_per_clip=3))
    assert not list(tmp_path.glob(".*.part"))
    share, _ = agreement(_detect(BUNDLED_FLOAT_WEIGHTS, frames), _detect(target, frames))
    assert share >= MIN_AGREEMENT
    from ultralytics import YOLO

    results: Any = YOLO(str(target), task="detect").predict(frames[0], verbose=False, device="cpu")
    assert results[0].names == {0: "person"}
