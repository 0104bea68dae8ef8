"""The cut-graph ONNX runner gives ultralytics' own boxes, and leaves graphs it does not know alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from infra.synth import SynthClip
from tasks.detect_track import ChunkStats, sample_frames
from tasks.detector import (
    BUNDLED_FLOAT_WEIGHTS,
    BUNDLED_WEIGHTS,
    FrameBoxes,
    boxes_from_results,
    detect_batch,
    ensure_offline,
    load_model,
)
from tasks.ingest import Chunk
from tasks.yolo_onnx import YoloOnnx, find_head, letterbox, nms


@pytest.fixture(scope="module")
def frames(game_clip: SynthClip) -> list[np.ndarray]:
    whole = Chunk(
        index=0, angle="main", path=str(game_clip.video_path), start_s=0.0, end_s=1e9, decode_end_s=1e9
    )
    sampled = [s.image for s in sample_frames(whole, 5.0, 640, ChunkStats())][:6]
    # and two frames of other shapes: a crop (resized up by the letterbox) and a portrait one
    crop, portrait = sampled[0][40:300, 100:560], sampled[1][:, :300]
    return [*sampled, np.ascontiguousarray(crop), np.ascontiguousarray(portrait)]


@pytest.mark.parametrize("weights", [BUNDLED_WEIGHTS, BUNDLED_FLOAT_WEIGHTS], ids=["int8", "float"])
def test_the_cut_graph_finds_ultralytics_boxes(weights: Path, frames: list[np.ndarray]) -> None:
    ensure_offline()
    from ultralytics import YOLO

    lean = load_model(str(weights), 1)
    assert isinstance(lean, YoloOnnx)
    stock = YOLO(str(weights), task="detect")
    found = 0
    for frame in frames:
        ours = detect_batch(lean, [frame], imgsz=640, conf=0.25, iou=0.7)[0]
        results = stock.predict(
            frame, imgsz=640, conf=0.25, iou=0.7, classes=[0], device="cpu", verbose=False
        )
        theirs = boxes_from_results(next(iter(results)))
        assert len(ours) == len(theirs)
        a, b = np.argsort(-ours.conf), np.argsort(-theirs.conf)
        np.testing.assert_allclose(ours.xyxy[a], theirs.xyxy[b], atol=0.05)
        np.testing.assert_allclose(ours.conf[a], theirs.conf[b], atol=1e-4)
        assert ours.cls.dtype == np.int16
        found += len(ours)
    assert found > 5 * len(frames), "the frames must hold people for the comparison to mean anything"


def test_a_batch_gives_what_single_frames_give(frames: list[np.ndarray]) -> None:
    lean = load_model("", 1)
    batched = detect_batch(lean, frames, imgsz=640, conf=0.25, iou=0.7)
    single = [detect_batch(lean, [f], imgsz=640, conf=0.25, iou=0.7)[0] for f in frames]
    for one, many in zip(single, batched, strict=True):
        assert isinstance(many, FrameBoxes)
        np.testing.assert_allclose(one.xyxy, many.xyxy, atol=1e-3)


def test_a_graph_without_a_detect_head_is_not_cut(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["images"], ["output0"])],
        "not-yolo",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 3, 32, 32])],
    )
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph), str(path))
    assert find_head(onnx.load(str(path))) is None
    assert YoloOnnx.load(path, 1) is None


def test_letterbox_pads_to_the_stride_like_ultralytics() -> None:
    image = np.zeros((360, 640, 3), np.uint8)
    padded, placed = letterbox(image, 640, 32)
    assert padded.shape == (384, 640, 3)
    assert (placed.pad_x, placed.pad_y, placed.gain_x, placed.gain_y) == (0, 12, 1, 1)
    assert (padded[:12] == 114).all() and (padded[12:372] == 0).all()


def test_nms_suppresses_overlaps_within_a_class_only() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    classes = np.array([0, 0, 1, 0])
    assert nms(boxes, scores, classes, 0.7).tolist() == [0, 2, 3]
