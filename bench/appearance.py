"""Micro-benchmark: embed's appearance vectors and detect_track's kit features, old vs new, same frames.

The old implementation (kept here only as the reference) converted each sampled source frame to BGR
with swscale (``frame.to_ndarray(format="bgr24")``) and computed each box's vector with per-band numpy
calls; kit features converted each band to CIELAB on its own. The new one reads the decoder's YUV
planes, converts only the bands' pixels and computes every box of a frame at once
(:mod:`tasks.appearance`, :func:`tasks.detect_track.kit_features`).

Both run on the same decoded frames and the same detector boxes, best of ``--repeat`` passes of
CPU time (core-seconds: the machine may be busy with other work); it prints ms per analysed frame,
the ratio, and how far the new vectors are from the old ones (they should be equal: the new code
converts pixels through a table of swscale's own output; kit features differ by float rounding).

Run:  nice -n 19 .venv/bin/python bench/appearance.py [--clip game.mp4 | --seconds 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import av
import cv2
import numpy as np

from infra.synth import GameSpec, render_game
from tasks.appearance import (
    _BANDS,
    APPEARANCE_DIM,
    APPEARANCE_LAYOUT,
    BANDS,
    HIST_BINS,
    PitchColour,
    appearance_image,
    appearance_vectors,
    clip_box,
    grass_mask,
)
from tasks.detect_track import DetectParams, detect_track_chunk, frame_stride, kit_features, model_size
from tasks.detector import ensure_offline
from tasks.ingest import Chunk

Box = tuple[float, float, float, float]

# --- the reference: the implementation before the planes (commit 9aa68f8) -------------------------


def old_pitch_colour(image_bgr: np.ndarray) -> PitchColour | None:
    small = np.ascontiguousarray(image_bgr[::8, ::8])
    mask = grass_mask(small)
    if mask.mean() < 0.05:
        return None
    hsv = cv2.cvtColor(small, cv2.COLOR_BGR2HSV)[mask]
    return PitchColour(float(np.median(hsv[:, 0])), float(np.median(hsv[:, 2])))


def _old_band(crop: np.ndarray, rows: tuple[float, float], cols: tuple[float, float]) -> np.ndarray:
    h, w = crop.shape[:2]
    y0, y1 = int(h * rows[0]), max(int(h * rows[0]) + 1, round(h * rows[1]))
    x0, x1 = int(w * cols[0]), max(int(w * cols[0]) + 1, round(w * cols[1]))
    return crop[y0:y1, x0:x1]


def old_appearance_vector(crop_bgr: np.ndarray, pitch: PitchColour | None = None) -> np.ndarray:
    out = np.zeros(APPEARANCE_DIM, np.float32)
    if crop_bgr.size == 0:
        return out
    crop = np.ascontiguousarray(crop_bgr)
    grass = grass_mask(crop, pitch)
    lab = cv2.cvtColor(crop, cv2.COLOR_BGR2LAB)
    for name in _BANDS:
        keep = ~_old_band(grass, *BANDS[name])
        if keep.size == 0:
            continue
        if name == "torso":
            out[APPEARANCE_LAYOUT["torso_coverage"]] = float(keep.mean())
        pixels = _old_band(lab, *BANDS[name])[keep].astype(np.float32)
        if not len(pixels):
            continue
        pixels[:, 0] *= 100.0 / 255.0
        pixels[:, 1:] -= 128.0
        out[APPEARANCE_LAYOUT[f"{name}_lab"]] = np.median(pixels, axis=0)
        if name == "torso":
            edges = np.linspace(-64.0, 64.0, HIST_BINS + 1)
            a = np.clip(np.digitize(pixels[:, 1], edges[1:-1]), 0, HIST_BINS - 1)
            b = np.clip(np.digitize(pixels[:, 2], edges[1:-1]), 0, HIST_BINS - 1)
            hist = np.bincount(a * HIST_BINS + b, minlength=HIST_BINS * HIST_BINS).astype(np.float32)
            out[APPEARANCE_LAYOUT["torso_hist"]] = hist / hist.sum()
    return out


def old_appearance_vectors(image_bgr: np.ndarray, boxes: Iterable[Box]) -> list[np.ndarray | None]:
    boxes = list(boxes)
    if not boxes:
        return []
    h, w = image_bgr.shape[:2]
    pitch = old_pitch_colour(image_bgr)
    out: list[np.ndarray | None] = []
    for box in boxes:
        x1, y1, x2, y2 = clip_box(*box, w, h)
        ok = x2 - x1 >= 4 and y2 - y1 >= 8
        out.append(old_appearance_vector(image_bgr[y1:y2, x1:x2], pitch) if ok else None)
    return out


def old_kit_features(image: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    out = np.zeros((len(xyxy), 6), np.float32)
    for i, (x1, y1, x2, y2) in enumerate(xyxy):
        bh = max(1.0, y2 - y1)
        xa, xb = int(max(0, x1 + 0.25 * (x2 - x1))), int(min(w, x2 - 0.25 * (x2 - x1)) + 1)
        for k, (top, bottom) in enumerate(((0.22, 0.48), (0.48, 0.62))):
            ya, yb = int(max(0, y1 + top * bh)), int(min(h, y1 + bottom * bh) + 1)
            band = image[ya:yb, xa:xb]
            if band.size:
                mean = cv2.cvtColor(band, cv2.COLOR_BGR2LAB).reshape(-1, 3).astype(np.float32).mean(axis=0)
                out[i, 3 * k : 3 * k + 3] = [
                    (mean[0] - 128) / 255,
                    (mean[1] - 128) / 32,
                    (mean[2] - 128) / 32,
                ]
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.asarray(out / np.maximum(norms, 1e-6))


# --- the measurement --------------------------------------------------------------------------------


def sampled_frames(clip: Path, fps: float) -> list[tuple[int, av.VideoFrame, np.ndarray]]:
    """(index, source frame, model-scale BGR) of every analysed frame, as detect_track samples them."""
    out = []
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        stride = frame_stride(float(stream.average_rate or 25), fps)
        size = model_size(stream.codec_context.width, stream.codec_context.height, DetectParams().imgsz)
        for index, frame in enumerate(container.decode(stream)):
            if index % stride == 0:
                small = frame.reformat(width=size[0], height=size[1], format="bgr24").to_ndarray()
                out.append((index, frame, small))
    return out


def best_ms(run: Callable[[], object], repeat: int, frames: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.process_time()
        run()
        times.append(time.process_time() - started)
    return 1e3 * min(times) / frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, help="a rendered game clip (default: render one)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the clip to render")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    ensure_offline()
    with tempfile.TemporaryDirectory() as tmp:
        clip = args.clip or render_game(GameSpec(duration_s=args.seconds, seed=7), Path(tmp))[0].video_path
        params = DetectParams()
        chunk = Chunk(index=0, angle="main", path=str(clip), start_s=0.0, end_s=1e9, decode_end_s=1e9)
        detections, _ = detect_track_chunk(chunk, params)
        frames = sampled_frames(clip, params.analysis_fps)
    by_frame: dict[int, list[Box]] = {}
    for row in detections.iter_rows(named=True):
        by_frame.setdefault(row["frame"], []).append((row["x1"], row["y1"], row["x2"], row["y2"]))
    items = [(frame, small, by_frame.get(index, [])) for index, frame, small in frames]
    scale = frames[0][1].width / frames[0][2].shape[1]
    model_boxes = [np.asarray(boxes, np.float32).reshape(-1, 4) / scale for _, _, boxes in items]
    n = len(items)
    print(f"clip {clip}: {n} analysed frames, {sum(len(b) for _, _, b in items) / n:.1f} boxes a frame")

    def old_app() -> list[list[np.ndarray | None]]:
        return [old_appearance_vectors(f.to_ndarray(format="bgr24"), b) for f, _, b in items]

    def new_app() -> list[list[np.ndarray | None]]:
        return [appearance_vectors(appearance_image(f), b) for f, _, b in items]

    def old_kit() -> list[np.ndarray]:
        return [old_kit_features(s, b) for (_, s, _), b in zip(items, model_boxes, strict=True)]

    def new_kit() -> list[np.ndarray]:
        return [kit_features(s, b) for (_, s, _), b in zip(items, model_boxes, strict=True)]

    for label, old, new in (("appearance", old_app, new_app), ("kit_features", old_kit, new_kit)):
        old_ms = best_ms(old, args.repeat, n)
        new_ms = best_ms(new, args.repeat, n)
        print(
            f"{label:13s} old {old_ms:6.2f} ms/frame   new {new_ms:6.2f} ms/frame   {old_ms / new_ms:5.1f}x"
        )

    pairs = [
        (o, v)
        for olds, news in zip(old_app(), new_app(), strict=True)
        for o, v in zip(olds, news, strict=True)
        if o is not None or v is not None
    ]
    assert all(o is not None and v is not None for o, v in pairs), "a box embedded by one side only"
    old_vectors = np.asarray([o for o, _ in pairs])
    new_vectors = np.asarray([v for _, v in pairs])
    print(f"vectors compared: {len(pairs)}")
    for name, part in APPEARANCE_LAYOUT.items():
        diff = np.abs(old_vectors[:, part] - new_vectors[:, part])
        p99 = np.percentile(diff.max(axis=1), 99)
        print(f"  {name:15s} |new-old| max {diff.max():.1e}  mean {diff.mean():.1e}  p99 per box {p99:.1e}")
    hist = APPEARANCE_LAYOUT["torso_hist"]
    l1 = np.abs(old_vectors[:, hist] - new_vectors[:, hist]).sum(axis=1)
    print(f"  torso_hist L1 per box: max {l1.max():.3f} mean {l1.mean():.4f}")
    kit_diff = np.abs(np.concatenate(old_kit()) - np.concatenate(new_kit()))
    print(f"  kit_features  |new-old| max {kit_diff.max():.2e} mean {kit_diff.mean():.2e}")


if __name__ == "__main__":
    main()
