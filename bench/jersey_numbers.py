"""The jersey-number reader on held-out synthetic clips: accuracy, coverage/precision, "none" rates, cost.

Renders the held-out clips of :func:`tasks.numbers_train.number_specs` (seeds 60_000+, never trained on) into
``--cache`` (reused when there), decodes them with PyAV, reads the luma plane the pipeline holds and
scores the committed model on ground-truth boxes jittered like a detector's (each edge up to 6 % of
the box height). Prints:

- top-1 accuracy on players >= 80 % visible whose number the generator drew, by box height;
- coverage (share read as a number at that confidence) and precision (share right) at 0.5/0.7/0.9;
- the "none" rate on referees, on people < 40 % visible and on random non-person boxes, and how
  often a hidden person is read as a wrong number;
- with ``--detector``: top-1 on the same players in the bundled detector's own boxes (pipeline
  settings, matched to the truth one-to-one at IoU >= 0.5, every ``frame_step``-th frame);
- the cost per box of :func:`tasks.numbers.read_numbers` (crop + network, one thread) on a frame with
  ~11 boxes, best of ``--repeat`` passes.

Run as a module (a script named numbers.py beside its imports would shadow the standard library's
``numbers`` module):
    nice -n 19 .venv/bin/python -m bench.jersey_numbers [--cache var/numbers-bench] [--clips 6]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import polars as pl
from scipy.optimize import linear_sum_assignment

from infra.synth.people import make_persons
from tasks.detect_track import DetectParams
from tasks.detector import detect_batch, load_model
from tasks.evaluate import iou_matrix
from tasks.numbers import MIN_BOX_PX, NUMBER_WEIGHTS, NumberReader, read_numbers
from tasks.numbers_train import (
    NumberTrainConfig,
    _decoded,
    build_samples,
    evaluate,
    frame_luma,
    label_for,
    number_specs,
)


def detector_top1(clips_dir: Path, config: NumberTrainConfig) -> dict[str, float | int | None]:
    """Top-1 (and reads at confidence >= 0.7) on players >= 80 % visible whose number was drawn, read
    in the boxes the bundled detector finds (matched to the truth one-to-one, IoU >= 0.5)."""
    params = DetectParams()
    model = load_model(params.weights, threads=1)
    right = read = total = missed = 0
    for spec in number_specs(config, "heldout"):
        persons = make_persons(spec.players_per_team, spec.referees, spec.seed)
        heights = {p.person_id: p.height_m for p in persons}
        truth = pl.read_parquet(clips_dir / f"{spec.name}.gt.parquet").partition_by("frame", as_dict=True)
        with av.open(str(clips_dir / f"{spec.name}.mp4")) as container:
            for index, frame in enumerate(container.decode(video=0)):
                rows = truth.get((index,))
                if index % config.frame_step or rows is None:
                    continue
                labels = [
                    label_for(
                        "player",
                        r["jersey_number"],
                        r["visible_fraction"],
                        r["y2"] - r["y1"],
                        heights[r["person_id"]],
                    )
                    if r["visible_fraction"] >= 0.8 and r["role"] == "player"
                    else None
                    for r in rows.iter_rows(named=True)
                ]
                wanted = [g for g, label in enumerate(labels) if label]
                if not wanted:
                    continue
                bgr = frame.to_ndarray(format="bgr24")
                found = detect_batch(model, [bgr], imgsz=params.imgsz, conf=params.conf, iou=params.iou)[0]
                iou = iou_matrix(rows.select("x1", "y1", "x2", "y2").to_numpy(), found.xyxy)
                owner: dict[int, int] = {}
                if iou.size:
                    for g, d in zip(*linear_sum_assignment(-iou), strict=True):
                        if iou[g, d] >= 0.5:
                            owner[int(g)] = int(d)
                matched = [g for g in wanted if g in owner]
                missed += len(wanted) - len(matched)
                if not matched:
                    continue
                numbers, confidence = read_numbers(frame_luma(frame), found.xyxy[[owner[g] for g in matched]])
                expected = np.array([labels[g] for g in matched])
                total += len(matched)
                right += int((numbers == expected).sum())
                read += int(((confidence >= 0.7) & (numbers > 0)).sum())
    return {
        "boxes": total,
        "not_detected": missed,
        "top1": round(right / total, 4) if total else None,
        "coverage@0.7": round(read / total, 4) if total else None,
    }


def cost_per_box_ms(clips_dir: Path, names: list[str], repeat: int) -> tuple[float, int]:
    """(ms per box, boxes) of read_numbers on the first frame of these clips with 11 readable boxes
    (>= MIN_BOX_PX tall, >= 40 % visible), or the nearest count."""
    candidates = []
    for name in names:
        truth = pl.read_parquet(clips_dir / f"{name}.gt.parquet").filter(
            (pl.col("y2") - pl.col("y1") >= MIN_BOX_PX) & (pl.col("visible_fraction") >= 0.4)
        )
        counts = truth.group_by("frame").len().sort((pl.col("len") - 11).abs(), "frame")
        candidates.append((abs(int(counts["len"][0]) - 11), name, int(counts["frame"][0]), truth))
    _, name, frame, truth = min(candidates, key=lambda c: c[0])
    boxes = truth.filter(pl.col("frame") == frame).select("x1", "y1", "x2", "y2").to_numpy()
    luma = next(luma for index, luma in _decoded(clips_dir / f"{name}.mp4", 1) if index == frame).copy()
    read_numbers(luma, boxes)  # session built outside the timing
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(20):
            read_numbers(luma, boxes)
        best = min(best, (time.perf_counter() - started) / 20)
    return 1000 * best / len(boxes), len(boxes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, default=None, help="where the held-out clips are kept")
    parser.add_argument("--clips", type=int, default=NumberTrainConfig.heldout_clips)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--model", type=Path, default=NUMBER_WEIGHTS)
    parser.add_argument("--detector", action="store_true", help="also read in the detector's boxes")
    args = parser.parse_args()
    config = NumberTrainConfig(heldout_clips=args.clips)
    with tempfile.TemporaryDirectory() as tmp:
        clips_dir = args.cache or Path(tmp)
        started = time.perf_counter()
        samples = build_samples(config, "heldout", clips_dir)
        seconds = time.perf_counter() - started
        print(f"held-out crops: {len(samples.labels)} from {args.clips} clips ({seconds:.0f} s)")
        figures = evaluate(NumberReader(args.model), samples)
        print(json.dumps(figures, indent=2))
        if args.detector:
            print("detector boxes:", json.dumps(detector_top1(clips_dir, config)))
        names = [s.name for s in number_specs(config, "heldout")]
        ms, boxes = cost_per_box_ms(clips_dir, names, args.repeat)
        print(f"read_numbers: {ms:.3f} ms a box ({boxes} boxes a frame, one thread, best of {args.repeat})")


if __name__ == "__main__":
    main()
