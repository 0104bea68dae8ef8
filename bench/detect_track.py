"""Benchmark: filmroom's ingest + chunked detect_track + stitch vs the plain ultralytics loop.

Same clip, model, image size and sampling rate, in one process and one run (these machines are noisy,
so only ratios measured side by side mean anything):

  A   ``model.track(source=clip, stream=True, vid_stride=...)`` — what a user would write (torch .pt)
  A'  the same loop on the float ONNX export (so the B/A ratio is not just "onnxruntime is faster")
  A'' the same loop on the int8 ONNX build filmroom runs by default (so it is not just "int8 is faster")
  B   filmroom: ingest, chunks of the default length on a 2-worker Dask LocalCluster (warm workers),
      stitch — what a run does: each chunk also computes its appearance vectors (stitch links a
      player's fragments by kit colour, and embed reads them)
  decode-only  PyAV decoding + scaling of the sampled frames (one core)
  infer-only   filmroom's detector on those frames, as detect_track batches them (one core)

The limit B is held to: the sampled frames must be decoded and run through the detector, so on two
cores nothing can beat (decode-only + infer-only) / 2; the inference-only limit (infer-only / 2) is
printed too.

Run:  .venv/bin/python bench/detect_track.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from infra.settings import DetectSettings, IngestSettings
from infra.synth import GameSpec, render_game
from infra.synth.spec import EncodeSpec
from tasks.detect_track import ChunkStats, DetectParams, detect_track_chunk, sample_frames
from tasks.detector import BUNDLED_FLOAT_WEIGHTS, BUNDLED_WEIGHTS, detect_batch, ensure_offline, load_model
from tasks.ingest import Chunk, Source, ingest
from tasks.local_runner import LocalRunner


def plain_loop(weights: Path, clip: Path, params: DetectParams, stride: int) -> tuple[float, int]:
    from ultralytics import YOLO

    model = YOLO(str(weights), task="detect")
    started = time.perf_counter()
    frames = 0
    for _ in model.track(
        source=str(clip),
        stream=True,
        vid_stride=stride,
        imgsz=params.imgsz,
        conf=params.conf,
        iou=params.iou,
        classes=[0],
        tracker=f"{params.tracker}.yaml",
        device="cpu",
        verbose=False,
    ):
        frames += 1
    return time.perf_counter() - started, frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--fps", type=float, default=5.0, help="analysis rate")
    parser.add_argument("--batch", type=int, default=DetectParams().batch, help="frames per inference call")
    args = parser.parse_args()
    ensure_offline()
    params = DetectParams(analysis_fps=args.fps, batch=args.batch)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clip = render_game(GameSpec(duration_s=args.seconds, seed=7, encode=EncodeSpec(keyint=50)), root)[
            0
        ].video_path
        stride = round(25 / args.fps)
        print(
            f"clip: {clip.name}, {args.seconds:.0f} s 720p, analysing {args.fps} fps (every {stride}th frame)"
        )

        # decode-only and infer-only on one core: the limits
        whole = Chunk(index=0, angle="main", path=str(clip), start_s=0.0, end_s=1e9, decode_end_s=1e9)
        stats = ChunkStats()
        started = time.perf_counter()
        images = [s.image for s in sample_frames(whole, args.fps, params.imgsz, stats)]
        decode_s = time.perf_counter() - started
        model = load_model(params.weights, params.threads)
        detect_batch(model, images[:2], imgsz=params.imgsz, conf=params.conf, iou=params.iou)  # warm-up
        started = time.perf_counter()
        for i in range(0, len(images), params.batch):
            detect_batch(
                model, images[i : i + params.batch], imgsz=params.imgsz, conf=params.conf, iou=params.iou
            )
        infer_s = time.perf_counter() - started
        n = len(images)

        settings = IngestSettings(allowed_roots=[str(root)])
        defaults = DetectSettings()
        with LocalRunner(n_workers=2, params=params) as runner:
            runner.warm_up()
            started = time.perf_counter()
            result = ingest(
                [Source(uri=str(clip))],
                settings,
                chunk_s=defaults.chunk_seconds,
                overlap_s=defaults.overlap_seconds,
                min_chunks=2,  # the runner's workers, as a run's ingest plans for its cluster
                shortest_s=defaults.min_chunk_seconds,
            )
            detections = runner.detect_track(result.chunks)
            b_s = time.perf_counter() - started
            parts = {
                "decode": sum(st.decode_s for st in runner.stats),
                "infer": sum(st.infer_s for st in runner.stats),
                "track": sum(st.track_s for st in runner.stats),
                "appearance": sum(st.extra.get("appearance_s", 0.0) for st in runner.stats),
            }
            sampled = sum(st.sampled for st in runner.stats)
        single_started = time.perf_counter()
        detect_track_chunk(whole, params)
        single_s = time.perf_counter() - single_started

        a_s, a_frames = plain_loop(BUNDLED_FLOAT_WEIGHTS.with_suffix(".pt"), clip, params, stride)
        a2_s, _ = plain_loop(BUNDLED_FLOAT_WEIGHTS, clip, params, stride)
        a3_s, _ = plain_loop(BUNDLED_WEIGHTS, clip, params, stride)

    rows = [
        ("A  plain ultralytics loop (.pt, torch)", a_s, a_frames),
        ("A' plain ultralytics loop (float .onnx)", a2_s, a_frames),
        ("A'' plain ultralytics loop (int8 .onnx)", a3_s, a_frames),
        (f"B  filmroom ingest+{len(result.chunks)} chunks+stitch, 2 workers", b_s, n),
        ("   detect+track in one piece, 1 core", single_s, n),
        ("   decode-only (1 core)", decode_s, n),
        ("   infer-only (1 core)", infer_s, n),
    ]
    for name, seconds, frames in rows:
        print(f"{name:48s} {seconds:7.2f} s  {frames / seconds:6.1f} frames/s")
    print(f"B/A  = {b_s / a_s:.2f}   (goal <= 0.4)")
    print(f"B/A' = {b_s / a2_s:.2f}   B/A'' = {b_s / a3_s:.2f}")
    limit = (decode_s + infer_s) / 2
    print(f"B vs the 2-core decode+inference limit ({limit:.2f} s): {limit / b_s:.0%} (goal >= 80%)")
    print(f"B vs the 2-core inference-only limit ({infer_s / 2:.2f} s): {infer_s / 2 / b_s:.0%}")
    print(
        f"B's chunks: {sampled} frames analysed (overlaps included), core seconds "
        + ", ".join(f"{k} {v:.2f}" for k, v in parts.items())
    )
    print(f"detections: {detections.height} rows, {detections['track_id'].n_unique()} tracks")


if __name__ == "__main__":
    main()
