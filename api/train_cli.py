"""`filmroom train-detector` (retrain the bundled person detector on synthetic footage, by seed) and
`filmroom quantize-detector` (its int8 build)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from tasks.detector import MODELS_DIR
from tasks.quantize import QuantizeConfig
from tasks.quantize import quantize_detector as quantize
from tasks.training import TrainConfig, train

console = Console()


def train_detector(
    workdir: Annotated[
        Path, typer.Option(help="Scratch folder for the dataset and ultralytics runs.")
    ] = Path("var/train"),
    out: Annotated[Path, typer.Option(help="Where the .pt, .onnx and report go.")] = MODELS_DIR,
    seed: Annotated[int, typer.Option(help="Seed of the clips, tiles and training.")] = 0,
    train_clips: Annotated[int, typer.Option(help="Synthetic matches to cut training tiles from.")] = 20,
    frames_per_clip: Annotated[int, typer.Option(help="Frames taken from each match.")] = 10,
    epochs: Annotated[int, typer.Option(help="Training epochs (about a minute each here).")] = 25,
    init: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, help="Fine-tune these .pt weights instead of training from scratch."
        ),
    ] = None,
) -> None:
    """Train YOLO11n from scratch (or fine-tune ``--init``) on synthetic frames, then its int8 build
    (what runs by default); report mAP50-95 of both on held-out matches."""
    config = TrainConfig(
        seed=seed,
        train_clips=train_clips,
        frames_per_clip=frames_per_clip,
        epochs=epochs,
        init=str(init or ""),
    )
    report = train(config, workdir, out)
    console.print_json(json.dumps(report))
    console.print_json(json.dumps(quantize(QuantizeConfig(seed=seed, name=config.name), workdir, out)))


def quantize_detector(
    workdir: Annotated[
        Path, typer.Option(help="Scratch folder for the held-out matches and validation runs.")
    ] = Path("var/quantize"),
    models: Annotated[Path, typer.Option(help="Folder with <name>.onnx; the int8 build goes beside it.")] = (
        MODELS_DIR
    ),
    seed: Annotated[int, typer.Option(help="Seed of the calibration matches.")] = 0,
) -> None:
    """Build the int8 detector from the float ONNX export; report mAP50-95 of both on held-out matches."""
    report = quantize(QuantizeConfig(seed=seed), workdir, models)
    console.print_json(json.dumps(report))
