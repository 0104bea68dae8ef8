"""numbers: read the jersey number on a player's torso (team-mates share a kit; their numbers differ).

The colour look cannot tell two players of one team apart; the number on the shirt can. The reader
takes the torso part of each person box (:data:`TORSO`) from the decoder's full-resolution luma
plane (:class:`tasks.appearance.YuvPlanes` ``.y``), resizes it to :data:`CROP_PX` square and
normalises its contrast per crop (numbers are light on dark kits and dark on light ones: the network
is trained on every crop in both polarities, so it reads either). A small CNN in onnxruntime gives
one of :data:`NUM_CLASSES` classes: 0 (no readable number: a referee, a hidden or far player, not a
person) or the number itself, and its softmax probability. ~0.16 ms a box on one thread (11 boxes a
720p frame, crops included). Boxes under :data:`MIN_BOX_PX` tall are not read (they return 0).

:func:`tasks.appearance.appearance_vectors` puts each box's read and its confidence in the
appearance vector (``number``, ``number_conf``), so detect_track reads them while its frame is in
memory and cluster uses them (:mod:`tasks.cluster_game`). The model, its classes (the numbers the
synthetic match generator draws: keeper 1, outfield 2-30) and how it is trained are in
:mod:`tasks.numbers_train` (``python -m tasks.numbers_train``).

What a read means: the number *shown in the box*. A mostly hidden person's box often shows the
number of the player in front of him, and the reader reads that one (most wrong reads on people
< 40 % visible on the held-out clips are exactly this), so a caller should trust reads of boxes that
overlap no other box, or vote over a track, not single reads of crowded boxes.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Final

import cv2
import numpy as np

from tasks.detector import MODELS_DIR

NUMBER_MODEL: Final[str] = "filmroom-numbers-v1"
NUMBER_WEIGHTS: Final = MODELS_DIR / f"{NUMBER_MODEL}.onnx"
NUM_CLASSES: Final = 31  # 0 = none, then the numbers 1..30 (class index = number)
CROP_PX: Final = 32
# The torso square, in box heights: shoulders sit ~17 % and hips ~48 % down an upright person's box
# (tasks.appearance.BANDS); the number is centred between them, ~13 % of the height tall and up to
# ~25 % wide. The square is centred on the box's middle column and is wide enough for swinging arms
# and jittered detector boxes to keep the number inside.
TORSO: Final = (0.10, 0.56)  # top and bottom, fractions of the box height
MIN_BOX_PX: Final = 40.0


# --- crops and reading -----------------------------------------------------------------------------


def number_crops(luma: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(N, H, W) float32 network inputs from a full-resolution luma plane (uint8, h x w) and person boxes
    (N x 4, x1 y1 x2 y2 in that plane's pixels): the torso part of each box (where the number is), resized,
    contrast-normalised per crop (numbers are light on dark or dark on light kits)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    out = np.zeros((len(boxes), CROP_PX, CROP_PX), np.float32)
    h, w = luma.shape[:2]
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        height = y2 - y1
        if height <= 1 or x2 <= x1:
            continue
        side = (TORSO[1] - TORSO[0]) * height
        top = y1 + TORSO[0] * height
        left = (x1 + x2) / 2 - side / 2
        r0, c0 = int(np.floor(top)), int(np.floor(left))
        r1, c1 = max(r0 + 1, int(np.ceil(top + side))), max(c0 + 1, int(np.ceil(left + side)))
        patch = luma[max(0, r0) : min(h, r1), max(0, c0) : min(w, c1)]
        if patch.size == 0:
            continue
        pads = (max(0, -r0), max(0, r1 - h), max(0, -c0), max(0, c1 - w))
        if any(pads):
            patch = cv2.copyMakeBorder(patch, *pads, cv2.BORDER_REPLICATE)
        interp = cv2.INTER_AREA if patch.shape[0] > CROP_PX else cv2.INTER_LINEAR
        out[k] = cv2.resize(patch, (CROP_PX, CROP_PX), interpolation=interp)
    return _normalise(out)


def _normalise(crops: np.ndarray) -> np.ndarray:
    """Zero mean, unit deviation per crop. The sign is left alone: the network is trained on both
    polarities of every crop (a skew-based flip to "light number" was wrong on ~1 in 4 light kits)."""
    flat = crops.reshape(len(crops), -1)
    flat -= flat.mean(axis=1, keepdims=True)
    flat /= flat.std(axis=1, keepdims=True) + 1.0  # +1 grey level: flat crops stay near zero
    return crops


class NumberReader:
    """The number network in an onnxruntime CPU session."""

    def __init__(self, model_path: Path | None = None, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = threads
        path = model_path or NUMBER_WEIGHTS
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def probabilities(self, crops: np.ndarray) -> np.ndarray:
        """(N, NUM_CLASSES) softmax of the network on :func:`number_crops` output."""
        if len(crops) == 0:
            return np.zeros((0, NUM_CLASSES), np.float32)
        logits = self.session.run(None, {self.input: np.ascontiguousarray(crops[:, None], np.float32)})[0]
        logits = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return np.asarray(e / e.sum(axis=1, keepdims=True), np.float32)

    def read(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(numbers int16, confidences float32): 0 = no readable number."""
        p = self.probabilities(crops)
        return p.argmax(axis=1).astype(np.int16), p.max(axis=1, initial=0.0).astype(np.float32)


@lru_cache(maxsize=1)
def default_reader() -> NumberReader:
    return NumberReader()


def read_numbers(luma: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Numbers and confidences of the people in ``boxes`` (boxes under MIN_BOX_PX tall read 0, conf 1)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    numbers = np.zeros(len(boxes), np.int16)
    confidence = np.ones(len(boxes), np.float32)
    big = (boxes[:, 3] - boxes[:, 1]) >= MIN_BOX_PX
    if big.any():
        numbers[big], confidence[big] = default_reader().read(number_crops(luma, boxes[big]))
    return numbers, confidence
