"""The person detector: ultralytics YOLO behind one adapter.

Ultralytics objects stop here: :func:`detect_batch` returns plain arrays, and the rest of filmroom only
sees filmroom's detections table. The model is loaded once per process (each Dask worker keeps its
own) and reused across chunks.

Weights in ultralytics' ONNX export of a Detect model (the bundled detector, or ``yolo export
format=onnx`` of a user's model) run through :mod:`tasks.yolo_onnx`: the same boxes as ultralytics'
predictor, without its torch pre/post-processing and with the head decoded only where a class
passes the threshold. Anything else (``.pt`` weights, other exports) runs through ultralytics' predictor.

Offline: ultralytics is imported only after ``YOLO_OFFLINE``/``YOLO_AUTOINSTALL`` are set and its
config dir points somewhere writable, so import, predict and track never try the network.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tasks.yolo_onnx import YoloOnnx

if TYPE_CHECKING:
    from ultralytics import YOLO

    Detector = YOLO | YoloOnnx

MODELS_DIR = Path(__file__).resolve().parent / "models"
BUNDLED_FLOAT_WEIGHTS = MODELS_DIR / "filmroom-person-v1.onnx"  # the .pt beside it is the trained model
# What runs by default: the int8 build of the same weights (tasks/quantize.py: ~1.4x faster on CPUs,
# mAP50-95 0.814 -> 0.806 on the held-out synthetic matches).
BUNDLED_WEIGHTS = MODELS_DIR / "filmroom-person-v1-int8.onnx"
PERSON_CLASS = 0

_offline_lock = threading.Lock()


def ensure_offline(config_dir: Path | None = None) -> None:
    """Make ultralytics work without a network before it is first imported (idempotent)."""
    with _offline_lock:
        # These are ultralytics' own switches; setting them is how filmroom tells it to stay offline.
        os.environ.setdefault("YOLO_OFFLINE", "1")  # noqa: TID251
        os.environ.setdefault("YOLO_AUTOINSTALL", "0")  # noqa: TID251
        if "YOLO_CONFIG_DIR" not in os.environ:  # noqa: TID251
            target = config_dir or Path.home() / ".cache" / "filmroom" / "ultralytics"
            target.mkdir(parents=True, exist_ok=True)
            os.environ["YOLO_CONFIG_DIR"] = str(target)  # noqa: TID251


def resolve_weights(weights: str) -> Path:
    """The configured weights, or filmroom's bundled detector when none is set."""
    return Path(weights).expanduser() if weights else BUNDLED_WEIGHTS


@lru_cache(maxsize=4)
def load_model(weights: str, threads: int = 1) -> Detector:
    """Load a YOLO model once per process (per Dask worker): a cut ONNX Detect export when it is one."""
    ensure_offline()
    path = resolve_weights(weights)
    if path.suffix == ".onnx" and path.exists():
        lean = YoloOnnx.load(path, threads)
        if lean is not None:
            return lean
    if threads > 0:
        # onnxruntime and torch both honour this; one thread per Dask worker avoids oversubscription.
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))  # noqa: TID251
        import torch

        torch.set_num_threads(threads)
    from ultralytics import YOLO

    if not path.exists():
        raise FileNotFoundError(f"detector weights not found: {path}")
    model = YOLO(str(path), task="detect")
    if path.suffix == ".onnx" and threads > 0:
        _limit_onnx_threads(model, path, threads)
    return model


def _limit_onnx_threads(model: YOLO, path: Path, threads: int) -> None:
    """Give onnxruntime ``threads`` threads (it takes every core by default).

    Two Dask workers that each spread over both cores fight each other; ultralytics builds its session
    without options, so after a warm-up predict its session is swapped for one with a thread limit.
    """
    import onnxruntime

    model.predict(np.zeros((64, 64, 3), np.uint8), verbose=False, device="cpu")
    backend = getattr(getattr(model.predictor, "model", None), "backend", None)
    if backend is None or not hasattr(backend, "session"):
        return
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    backend.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class FrameBoxes:
    """One frame's detections as plain arrays (xyxy in the pixels of the image given to the model)."""

    xyxy: np.ndarray  # (n, 4) float32
    conf: np.ndarray  # (n,) float32
    cls: np.ndarray  # (n,) int16

    def __len__(self) -> int:
        return int(self.conf.shape[0])


def boxes_from_results(result: Any) -> FrameBoxes:
    """The adapter: one ultralytics ``Results`` → :class:`FrameBoxes` (library objects stop here)."""
    boxes = result.boxes
    if boxes is None or len(boxes) == 0:
        return FrameBoxes(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int16))
    boxes = boxes.cpu().numpy()
    return FrameBoxes(
        boxes.xyxy.astype(np.float32),
        boxes.conf.astype(np.float32),
        boxes.cls.astype(np.int16),
    )


def detect_batch(
    model: Detector, frames: list[np.ndarray], *, imgsz: int, conf: float, iou: float
) -> list[FrameBoxes]:
    """Run the detector over a batch of BGR frames; person class only."""
    if isinstance(model, YoloOnnx):
        found = model.detect(frames, imgsz=imgsz, conf=conf, iou=iou, classes=[PERSON_CLASS])
        return [FrameBoxes(xyxy, score, cls.astype(np.int16)) for xyxy, score, cls in found]
    results = model.predict(
        frames,
        imgsz=imgsz,
        conf=conf,
        iou=iou,
        classes=[PERSON_CLASS],
        device="cpu",
        verbose=False,
        batch=len(frames),
    )
    return [boxes_from_results(r) for r in results]
