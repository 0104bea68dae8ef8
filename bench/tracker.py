"""Micro-benchmark: the tracker's per-frame update, as detect_track calls it, on real detections.

Renders one clip (or reads --clip), decodes its sampled frames and runs the detector once (kit
features included, cached in --cache), then replays the frames through ``tracker.update`` only:
the current tasks/tracker.py and, with --reference COMMIT, tasks/tracker.py as it was at that
commit, alternately on the same frames in the same process (these machines are noisy: only the
ratio means anything). It checks that both give every detection the same track id, and with
--profile prints a cProfile of the current tracker.

Run:  .venv/bin/python bench/tracker.py [--seconds 60] [--reference HEAD] [--profile] [--cache DIR]
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import importlib.util
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from infra.synth import GameSpec, render_game
from infra.synth.spec import EncodeSpec
from tasks import tracker as current
from tasks.detect_track import ChunkStats, DetectParams, _TrackerInput, kit_features, sample_frames
from tasks.detector import FrameBoxes, detect_batch, ensure_offline, load_model
from tasks.ingest import Chunk


def load_frames(clip: Path, params: DetectParams, cache: Path) -> list[dict[str, Any]]:
    """Per sampled frame: the model-scale image, its detections and their kit features (cached)."""
    path = cache / f"{clip.stem}.frames.npz"
    if not path.exists():
        whole = Chunk(index=0, angle="main", path=str(clip), start_s=0.0, end_s=1e9, decode_end_s=1e9)
        model = load_model(params.weights, params.threads)
        arrays: dict[str, np.ndarray] = {}
        for i, s in enumerate(sample_frames(whole, params.analysis_fps, params.imgsz, ChunkStats())):
            boxes = detect_batch(model, [s.image], imgsz=params.imgsz, conf=params.conf, iou=params.iou)[0]
            arrays[f"image{i}"] = s.image
            arrays[f"xyxy{i}"] = boxes.xyxy
            arrays[f"conf{i}"] = boxes.conf
            arrays[f"cls{i}"] = boxes.cls
            arrays[f"feats{i}"] = kit_features(s.image, boxes.xyxy)
        np.savez(path, **arrays)  # type: ignore[arg-type]
    data = np.load(path)
    n = sum(1 for k in data.files if k.startswith("image"))
    return [
        {
            "image": data[f"image{i}"],
            "boxes": FrameBoxes(data[f"xyxy{i}"], data[f"conf{i}"], data[f"cls{i}"]),
            "feats": data[f"feats{i}"],
        }
        for i in range(n)
    ]


def module_at(commit: str) -> ModuleType:
    """tasks/tracker.py as it was at ``commit``, imported under another name."""
    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(
        ["git", "show", f"{commit}:tasks/tracker.py"], cwd=root, check=True, capture_output=True, text=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "tracker_reference.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("tracker_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def replay(
    module: ModuleType, frames: list[dict[str, Any]], params: DetectParams
) -> tuple[float, list[int], str]:
    """Core-seconds spent in tracker.update over all frames, every detection's track id (-1 = none) and a
    digest of everything update returned (the tracks' Kalman boxes, bit for bit)."""
    tracker = module.make_tracker(
        params.tracker,
        params.analysis_fps,
        params.track_buffer_s,
        params.tracker_options,
        params.appearance,
        params.association,
    )
    ids: list[int] = []
    digest = hashlib.sha256()
    spent = 0.0
    for f in frames:
        boxes = f["boxes"]
        started = time.process_time()  # core-seconds (OpenCV's threads included): steadier than wall time
        tracked = tracker.update(_TrackerInput(boxes, params.box_buffer), f["image"], feats=f["feats"])
        spent += time.process_time() - started
        digest.update(np.ascontiguousarray(tracked).tobytes())
        track_of = {int(row[7]): int(row[4]) for row in tracked} if len(tracked) else {}
        ids.extend(track_of.get(i, -1) for i in range(len(boxes)))
    return spent, ids, digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clip", type=Path, help="a clip rendered earlier (default: render one)")
    parser.add_argument("--cache", type=Path, help="keep the rendered clip and the detections here")
    parser.add_argument("--reference", help="also time tasks/tracker.py at this commit, and compare ids")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    ensure_offline()
    params = DetectParams()
    cache = args.cache or Path(tempfile.mkdtemp())
    cache.mkdir(parents=True, exist_ok=True)
    clip = args.clip
    if clip is None:
        clip = cache / "tracker.mp4"
        if not clip.exists():
            spec = GameSpec(name="tracker", duration_s=args.seconds, seed=7, encode=EncodeSpec(keyint=50))
            clip = render_game(spec, cache)[0].video_path
    frames = load_frames(clip, params, cache)
    boxes = sum(len(f["boxes"]) for f in frames)
    print(f"{clip.name}: {len(frames)} frames, {boxes / len(frames):.1f} boxes a frame")

    modules = {"current": current}
    if args.reference:
        modules = {"reference": module_at(args.reference), **modules}
    best: dict[str, float] = {name: float("inf") for name in modules}
    ids: dict[str, list[int]] = {}
    digests: dict[str, str] = {}
    for _ in range(args.repeats):  # alternate, keep the best of each (the least disturbed)
        for name, module in modules.items():
            spent, ids[name], digests[name] = replay(module, frames, params)
            best[name] = min(best[name], spent)
    for name in modules:
        print(f"{name:10s} {1e3 * best[name] / len(frames):6.2f} core-ms a frame (best of {args.repeats})")
    if args.reference:
        print(f"current/reference = {best['current'] / best['reference']:.2f}")
        same = ids["current"] == ids["reference"]
        print(f"track ids identical: {same} ({sum(i >= 0 for i in ids['current'])} tracked detections)")
        bitwise = digests["current"] == digests["reference"]
        print(f"tracker output (boxes, ids, scores) identical bit for bit: {bitwise}")
        if not same:
            sys.exit(1)
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(replay, current, frames, params)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
