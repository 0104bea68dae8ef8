"""numbers_train: train the jersey-number reader (:mod:`tasks.numbers`) on synthetic matches.

The classes are the numbers the synthetic match generator draws (keeper 1, outfield 2-30, see
``infra/synth/people.py``), and the network is trained here, reproducibly by seed, on rendered and
H.264-decoded clips of that generator (:func:`train`, ``filmroom-numbers-v1``;
``python -m tasks.numbers_train``, ~6 min on two cores). A real deployment retrains it on its league's
numbers, fonts and kits: the crop, the labelling rules and the training loop stay, the classes and the
footage change.

Labels (:func:`label_for`): a player or keeper at least 80 % visible gets his number when the
generator drew it (its figure scale, pixels per metre, is >= 25: estimated from the box height and the
person's height); referees, people less than 40 % visible and players too far for a number get 0;
the ambiguous rest is left out. Boxes are jittered (each edge up to 6 % of the box height) to look
like the detector's.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import av
import cv2
import numpy as np
import polars as pl

from infra.synth import GameSpec, render_game
from infra.synth.people import make_persons
from infra.synth.spec import CameraPreset, varied_game
from tasks.appearance import YuvPlanes, appearance_image
from tasks.detector import MODELS_DIR
from tasks.numbers import CROP_PX, MIN_BOX_PX, NUM_CLASSES, NUMBER_MODEL, NumberReader, number_crops

# Labelling (see the module docstring)
LABEL_VISIBLE: Final = 0.8
LABEL_HIDDEN: Final = 0.4
DRAWN_SCALE: Final = 25.0  # infra.synth.figures._number draws at scale >= 25 px/m
_SCALE_MARGIN: Final = 2.5  # estimated scales within this of DRAWN_SCALE are ambiguous: skipped
JITTER: Final = 0.06

log = logging.getLogger(__name__)

TRAIN_BASE: Final = 50_000
HELDOUT_BASE: Final = 60_000


def frame_luma(frame: av.VideoFrame) -> np.ndarray:
    """The luma plane the pipeline holds of a decoded frame (``appearance_image(frame).y``)."""
    image = appearance_image(frame)
    if isinstance(image, YuvPlanes):
        return image.y
    return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))  # not BT.601 yuv420p: rare


# --- data ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NumberTrainConfig:
    seed: int = 0
    train_clips: int = 28
    heldout_clips: int = 6
    clip_seconds: float = 6.0
    frame_step: int = 3  # every n-th decoded frame
    jitters: int = 2  # jittered copies of each training box
    background_per_frame: float = 0.5  # random non-person boxes (label 0) per frame
    epochs: int = 16
    batch: int = 128
    lr: float = 3e-3
    threads: int = 2
    name: str = NUMBER_MODEL


def number_specs(config: NumberTrainConfig, split: str) -> list[GameSpec]:
    """Varied matches (colours, squads, referees, camera motion and rig) from seeds of this split only."""
    rng = random.Random(f"numbers-{config.seed}-{split}")
    count = config.train_clips if split == "train" else config.heldout_clips
    base = TRAIN_BASE if split == "train" else HELDOUT_BASE
    rigs = [CameraPreset.MAIN, CameraPreset.MAIN, CameraPreset.TIGHT, CameraPreset.REVERSE, CameraPreset.WIDE]
    return [
        varied_game(
            rng, f"num-{split}{i}", config.clip_seconds, base + config.seed * 1000 + i, rigs[i % len(rigs)]
        )
        for i in range(count)
    ]


def label_for(role: str, number: int, visible: float, box_h: float, height_m: float) -> int | None:
    """The class a ground-truth person should be read as, or None when ambiguous (left out)."""
    if role == "referee" or number <= 0 or visible < LABEL_HIDDEN:
        return 0
    if visible < LABEL_VISIBLE:
        return None
    scale = box_h / (height_m + 0.05)  # the figure runs from ~1 cm above the head to ~4 cm under the feet
    if scale < DRAWN_SCALE - _SCALE_MARGIN:
        return 0
    if scale < DRAWN_SCALE + _SCALE_MARGIN:
        return None
    return number


@dataclass
class Samples:
    """Crops and what is known of each: its label and truth (for the held-out figures)."""

    crops: np.ndarray  # (N, CROP_PX, CROP_PX) float32
    labels: np.ndarray  # int16 class
    numbers: np.ndarray  # int16 the person's jersey number (0 for referees and background)
    roles: np.ndarray  # str: player / referee / background
    visible: np.ndarray  # float32
    heights: np.ndarray  # float32 box height (jittered box)

    def save(self, path: Path) -> None:
        np.savez_compressed(path, **asdict(self))

    @classmethod
    def load(cls, path: Path) -> Samples:
        with np.load(path) as data:
            return cls(**{k: data[k] for k in data.files})


def _jitter(box: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    h = box[3] - box[1]
    return np.asarray(box + rng.uniform(-amount, amount, 4) * h)


def _decoded(video: Path, step: int) -> Iterator[tuple[int, np.ndarray]]:
    with av.open(str(video)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index % step == 0:
                yield index, frame_luma(frame)


def clip_samples(
    video: Path, truth: pl.DataFrame, spec: GameSpec, step: int, jitters: int, background: float, seed: int
) -> Samples:
    """Labelled crops of one decoded clip: ``jitters`` jittered boxes per labelled person every ``step``
    frames (one when 1, as in evaluation), plus random non-person boxes (label 0)."""
    heights = {p.person_id: p.height_m for p in make_persons(spec.players_per_team, spec.referees, spec.seed)}
    rng = np.random.default_rng([seed, spec.seed])
    by_frame = truth.partition_by("frame", as_dict=True)
    crops, labels, numbers, roles, visible, box_h = [], [], [], [], [], []
    for index, luma in _decoded(video, step):
        rows = by_frame.get((index,))
        boxes, meta = [], []
        people = rows.to_dicts() if rows is not None else []
        for r in people:
            box = np.array([r["x1"], r["y1"], r["x2"], r["y2"]], np.float64)
            label = label_for(
                r["role"], r["jersey_number"], r["visible_fraction"], box[3] - box[1], heights[r["person_id"]]
            )
            if label is None:
                continue
            for _ in range(jitters):
                jittered = _jitter(box, rng, JITTER)
                if jittered[3] - jittered[1] < MIN_BOX_PX:
                    continue
                boxes.append(jittered)
                meta.append((label, r["jersey_number"], r["role"], r["visible_fraction"]))
        for _ in range(rng.poisson(background)):
            empty = _background_box(luma.shape, people, rng)
            if empty is not None:
                boxes.append(empty)
                meta.append((0, 0, "background", 0.0))
        if not boxes:
            continue
        array = np.stack(boxes)
        crops.append(number_crops(luma, array))
        box_h.extend(array[:, 3] - array[:, 1])
        for label, number, role, vis in meta:
            labels.append(label)
            numbers.append(number)
            roles.append(role)
            visible.append(vis)
    return Samples(
        np.concatenate(crops) if crops else np.zeros((0, CROP_PX, CROP_PX), np.float32),
        np.asarray(labels, np.int16),
        np.asarray(numbers, np.int16),
        np.asarray(roles, dtype=str),
        np.asarray(visible, np.float32),
        np.asarray(box_h, np.float32),
    )


def _background_box(
    shape: tuple[int, ...], people: list[dict[str, Any]], rng: np.random.Generator
) -> np.ndarray | None:
    """A person-sized box that overlaps no person's torso (grass, lines, boards, goals)."""
    h, w = shape[:2]
    height = float(rng.uniform(MIN_BOX_PX, 160))
    width = height * float(rng.uniform(0.3, 0.6))
    x1, y1 = float(rng.uniform(0, w - width)), float(rng.uniform(0, h - height))
    box = np.array([x1, y1, x1 + width, y1 + height])
    for r in people:
        if r["x1"] < box[2] and box[0] < r["x2"] and r["y1"] < box[3] and box[1] < r["y2"]:
            return None
    return box


def build_samples(config: NumberTrainConfig, split: str, clips_dir: Path) -> Samples:
    """Render (or reuse) the split's clips under ``clips_dir``, decode them and cut labelled crops."""
    parts = []
    train = split == "train"
    for spec in number_specs(config, split):
        video = clips_dir / f"{spec.name}.mp4"
        truth_path = clips_dir / f"{spec.name}.gt.parquet"
        if not (video.exists() and truth_path.exists()):
            clip = render_game(spec, clips_dir)[0]
            video, truth_path = clip.video_path, clip.ground_truth_path
        parts.append(
            clip_samples(
                video,
                pl.read_parquet(truth_path),
                spec,
                config.frame_step,
                config.jitters if train else 1,
                config.background_per_frame,
                config.seed,
            )
        )
    return Samples(*(np.concatenate([getattr(p, f) for p in parts]) for f in Samples.__dataclass_fields__))


# --- held-out figures ------------------------------------------------------------------------------

HEIGHT_BUCKETS: Final = ((0.0, 60.0), (60.0, 80.0), (80.0, 100.0), (100.0, 1e9))
THRESHOLDS: Final = (0.5, 0.7, 0.9)


def evaluate(reader: NumberReader, samples: Samples) -> dict[str, Any]:
    """Held-out figures: accuracy on well-visible players by box height, coverage and precision at
    confidence thresholds, how often referees, hidden people and background read 0."""
    numbers, confidence = reader.read(samples.crops)
    player = samples.roles == "player"
    visible = player & (samples.visible >= LABEL_VISIBLE)
    drawn = visible & (samples.labels > 0)
    out: dict[str, Any] = {
        "players_visible": int(visible.sum()),
        "top1_drawn": _share(numbers[drawn] == samples.labels[drawn]),
        "top1_by_height": {},
    }
    for lo, hi in HEIGHT_BUCKETS:
        name = f"<{hi:.0f}" if lo == 0 else (f">={lo:.0f}" if hi > 1e8 else f"{lo:.0f}-{hi:.0f}")
        inside = drawn & (samples.heights >= lo) & (samples.heights < hi)
        undrawn = visible & (samples.labels == 0) & (samples.heights >= lo) & (samples.heights < hi)
        out["top1_by_height"][name] = {
            "boxes": int(inside.sum()),
            "top1": _share(numbers[inside] == samples.labels[inside]),
            "too_far_for_a_number": int(undrawn.sum()),
        }
    out["thresholds"] = {
        str(t): {
            "coverage": _share((confidence[drawn] >= t) & (numbers[drawn] > 0)),
            "precision": _share(
                numbers[drawn][(confidence[drawn] >= t) & (numbers[drawn] > 0)]
                == samples.labels[drawn][(confidence[drawn] >= t) & (numbers[drawn] > 0)]
            ),
        }
        for t in THRESHOLDS
    }
    referee = samples.roles == "referee"
    hidden = player & (samples.visible < LABEL_HIDDEN)
    background = samples.roles == "background"
    out["none_rate"] = {
        "referees": _share(numbers[referee] == 0),
        "hidden": _share(numbers[hidden] == 0),
        "background": _share(numbers[background] == 0),
    }
    out["hidden_read_wrong"] = _share((numbers[hidden] > 0) & (numbers[hidden] != samples.numbers[hidden]))
    out["hidden_read_wrong_conf0.7"] = _share(
        (numbers[hidden] > 0) & (numbers[hidden] != samples.numbers[hidden]) & (confidence[hidden] >= 0.7)
    )
    out["counts"] = {
        "referees": int(referee.sum()),
        "hidden": int(hidden.sum()),
        "background": int(background.sum()),
    }
    return out


def _share(hits: np.ndarray) -> float | None:
    return round(float(hits.mean()), 4) if hits.size else None


# --- training --------------------------------------------------------------------------------------


def _network() -> Any:
    from torch import nn

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    # ~1.5 M multiply-adds a crop: a batch of 128 trains in ~0.07 s on two cores here (wider nets cost 5x)
    return nn.Sequential(
        *block(1, 12),
        nn.MaxPool2d(2),  # 16
        *block(12, 24),
        *block(24, 24),
        nn.MaxPool2d(2),  # 8
        *block(24, 48),
        nn.MaxPool2d(2),  # 4
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(48 * 4 * 4, 96),
        nn.ReLU(inplace=True),
        nn.Linear(96, NUM_CLASSES),
    )


def fit(config: NumberTrainConfig, samples: Samples) -> Any:
    """Train the network on ``samples`` (deterministic by seed) and return it in eval mode."""
    import torch
    from torch import nn

    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    torch.use_deterministic_algorithms(True)
    model = _network()
    x = torch.from_numpy(samples.crops[:, None].copy())
    y = torch.from_numpy(samples.labels.astype(np.int64))
    steps = config.epochs * ((len(x) + config.batch - 1) // config.batch)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.lr, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    generator = torch.Generator().manual_seed(config.seed)
    # Numbers are drawn per match, so some are rare in the clips: sample each class ~ count^-0.5.
    counts = torch.bincount(y, minlength=NUM_CLASSES).clamp(min=1).float()
    weights = counts[y] ** -0.5
    model.train()
    for epoch in range(config.epochs):
        order = torch.multinomial(weights, len(x), replacement=True, generator=generator)
        total = 0.0
        for start in range(0, len(x), config.batch):
            idx = order[start : start + config.batch]
            batch = x[idx]
            # shift by up to 2 px: more jitter for free
            dy, dx = (int(v) for v in torch.randint(-2, 3, (2,), generator=generator))
            batch = torch.roll(batch, shifts=(dy, dx), dims=(2, 3))
            flip = torch.rand(len(idx), generator=generator) < 0.5  # dark-on-light <-> light-on-dark
            batch = torch.where(flip[:, None, None, None], -batch, batch)
            optimiser.zero_grad()
            loss = loss_fn(model(batch), y[idx])
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(idx)
        log.info("epoch %d/%d: loss %.4f", epoch + 1, config.epochs, total / len(x))
    return model.eval()


def export_onnx(model: Any, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(1, 1, CROP_PX, CROP_PX)
    torch.onnx.export(
        model,
        (dummy,),
        str(path),
        input_names=["crops"],
        output_names=["logits"],
        dynamic_axes={"crops": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )


def train(config: NumberTrainConfig, workdir: Path, models_dir: Path = MODELS_DIR) -> dict[str, Any]:
    """Render + decode the clips, cut the crops, train, export ONNX, score the held-out clips; the report."""
    started = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    data: dict[str, Samples] = {}
    for split in ("train", "heldout"):
        cached = workdir / f"{split}-{config.seed}.npz"
        if cached.exists():
            data[split] = Samples.load(cached)
        else:
            data[split] = build_samples(config, split, workdir / "clips" / split)
            data[split].save(cached)
    dataset_s = time.perf_counter() - started
    model = fit(config, data["train"])
    train_s = time.perf_counter() - started - dataset_s
    onnx_path = models_dir / f"{config.name}.onnx"
    export_onnx(model, onnx_path)
    figures = evaluate(NumberReader(onnx_path), data["heldout"])
    report = {
        "name": config.name,
        "config": asdict(config),
        "images": {
            split: {
                "crops": len(s.labels),
                "numbered": int((s.labels > 0).sum()),
                "none": int((s.labels == 0).sum()),
            }
            for split, s in data.items()
        },
        "heldout": figures,
        "heldout_boxes": "ground-truth boxes jittered like a detector's (each edge up to 6 % of the height)",
        "dataset_s": round(dataset_s, 1),
        "train_s": round(train_s, 1),
        "onnx_bytes": onnx_path.stat().st_size,
    }
    (models_dir / f"{config.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("var/numbers"))
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR)
    parser.add_argument("--epochs", type=int, default=NumberTrainConfig.epochs)
    parser.add_argument("--train-clips", type=int, default=NumberTrainConfig.train_clips)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    config = NumberTrainConfig(epochs=args.epochs, train_clips=args.train_clips)
    print(json.dumps(train(config, args.workdir, args.models_dir), indent=2))


if __name__ == "__main__":
    main()
