"""Benchmark: the detector as ultralytics' ONNX predictor runs it vs filmroom's cut-graph runner.

Same frames (sampled at 5 fps from a rendered 720p clip and scaled as detect_track scales them),
same weights, one thread each, in interleaved rounds so the machine's drift hits both alike. Prints
CPU ms per frame (process time: other jobs on the machine change it less than wall time; min and
median of the rounds), the ratio, and whether the boxes agree.

Run:  .venv/bin/python bench/detector.py [--seconds 20 --rounds 8]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from infra.synth import GameSpec, render_game
from tasks.detect_track import ChunkStats, DetectParams, sample_frames
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
from tasks.yolo_onnx import YoloOnnx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    ensure_offline()
    params = DetectParams()
    with tempfile.TemporaryDirectory() as tmp:
        clip = render_game(GameSpec(duration_s=args.seconds, seed=7), Path(tmp))[0].video_path
        whole = Chunk(index=0, angle="main", path=str(clip), start_s=0.0, end_s=1e9, decode_end_s=1e9)
        images = [s.image for s in sample_frames(whole, params.analysis_fps, params.imgsz, ChunkStats())]
    height, width = images[0].shape[:2]
    print(f"{len(images)} frames of {width}x{height}, imgsz {params.imgsz}, one thread each")
    for weights in (BUNDLED_WEIGHTS, BUNDLED_FLOAT_WEIGHTS):
        compare(weights, images, params, args.rounds)


def compare(weights: Path, images: list[np.ndarray], params: DetectParams, rounds: int) -> None:
    import torch
    from ultralytics import YOLO

    torch.set_num_threads(params.threads)  # as tasks.detector does for the ultralytics path
    lean = load_model(str(weights), params.threads)
    assert isinstance(lean, YoloOnnx), f"{weights.name} is not a Detect export the runner can cut"
    stock = YOLO(str(weights), task="detect")

    def run_stock(frame: np.ndarray) -> FrameBoxes:
        p = params
        results = stock.predict(
            frame, imgsz=p.imgsz, conf=p.conf, iou=p.iou, classes=[0], device="cpu", verbose=False
        )
        return boxes_from_results(next(iter(results)))

    def run_lean(frame: np.ndarray) -> FrameBoxes:
        return detect_batch(lean, [frame], imgsz=params.imgsz, conf=params.conf, iou=params.iou)[0]

    runners = {"ultralytics predictor": run_stock, "filmroom cut graph": run_lean}
    for run in runners.values():
        run(images[0])  # warm-up (ultralytics builds its session on the first call)
    _limit_threads(stock, weights, params.threads)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            started = time.process_time()
            for frame in images:
                run(frame)
            times[name].append((time.process_time() - started) / len(images) * 1000)
    agree = all(_same(run_stock(f), run_lean(f)) for f in images)
    print(f"\n{weights.name}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:24s} min {min(values):6.1f} ms   median {median:6.1f} ms of CPU per frame")
    ratios = [b / a for a, b in zip(*times.values(), strict=True)]
    print(f"  cut/stock: {statistics.median(ratios):.2f} (median of paired rounds), boxes identical: {agree}")


def _limit_threads(model: object, weights: Path, threads: int) -> None:
    """ultralytics' session uses every core; give it the one filmroom's runner has."""
    import onnxruntime

    backend = model.predictor.model.backend  # type: ignore[attr-defined]
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    backend.session = onnxruntime.InferenceSession(str(weights), options, providers=["CPUExecutionProvider"])


def _same(a: FrameBoxes, b: FrameBoxes) -> bool:
    if len(a) != len(b):
        return False
    order_a, order_b = np.argsort(-a.conf), np.argsort(-b.conf)
    return bool(
        np.allclose(a.xyxy[order_a], b.xyxy[order_b], atol=0.05)
        and np.allclose(a.conf[order_a], b.conf[order_b], atol=1e-4)
    )


if __name__ == "__main__":
    main()
