"""tasks/tracker.py: the lean per-track steps of MotionKitBoTSORT give ultralytics' results bit for bit."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest

from tasks.detector import FrameBoxes
from tasks.tracker import ASSOCIATION_DEFAULTS, FORBIDDEN, association_cost, make_tracker

OPTIONS: dict[str, float | str | bool] = {
    "match_thresh": 0.95,
    "track_high_thresh": 0.4,
    "new_track_thresh": 0.6,
}


class _Input:
    """The numpy Boxes view ultralytics' trackers read (as detect_track's _TrackerInput, unbuffered)."""

    def __init__(self, xyxy: np.ndarray, conf: np.ndarray) -> None:
        self.xyxy = xyxy.astype(np.float32)
        self.xywh = np.concatenate(
            [(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], axis=1
        ).astype(np.float32)
        self.conf = conf.astype(np.float32)
        self.cls = np.zeros(len(conf), np.float32)

    def __len__(self) -> int:
        return len(self.conf)

    def __getitem__(self, mask: Any) -> _Input:
        return _Input(self.xyxy[mask], self.conf[mask])


def _stock(tracker: Any) -> Any:
    """The same tracker with ultralytics' own per-track steps put back (the reference)."""
    from ultralytics.trackers.bot_sort import BOTSORT
    from ultralytics.trackers.byte_tracker import BYTETracker
    from ultralytics.trackers.utils.kalman_filter import KalmanFilterXYWH

    class Stock(type(tracker)):  # type: ignore[misc]
        init_track = BOTSORT.init_track
        _apply_matches = BYTETracker._apply_matches

        def get_kalmanfilter(self) -> KalmanFilterXYWH:
            kf = KalmanFilterXYWH()
            kf._std_weight_position = float(self.args.kf_position)
            kf._std_weight_velocity = float(self.args.kf_velocity)
            return kf

    stock = Stock(args=tracker.args)
    stock.gmc.downscale, stock.gmc.feature_params = tracker.gmc.downscale, tracker.gmc.feature_params
    return stock


def _frames(n_frames: int, seed: int = 3) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Players walking on a textured pitch under a panning camera; some boxes drop out, some are unsure."""
    rng = np.random.default_rng(seed)
    texture = cv2.GaussianBlur(
        rng.integers(0, 255, (400, 900, 3), dtype=np.uint8), (0, 0), 9
    )  # GMC can follow it
    n = 12
    pos = rng.uniform([60, 60], [560, 300], (n, 2))
    vel = rng.normal(0, 3, (n, 2))
    kits = np.where(
        np.arange(n)[:, None] < n // 2, [0.2, 0.9, 0.1, 0.3, 0.1, 0.9], [0.2, -0.8, 0.4, 0.3, -0.2, 0.8]
    )
    frames = []
    for f in range(n_frames):
        vel += rng.normal(0, 0.5, (n, 2))
        pos = np.clip(pos + vel, 30, 610)
        pan = int(2 * f) % 200
        image = np.ascontiguousarray(texture[20:380, pan : pan + 640])
        keep = rng.random(n) > 0.1
        h = rng.uniform(40, 60, n)
        xyxy = np.stack([pos[:, 0] - h / 4, pos[:, 1] - h / 2, pos[:, 0] + h / 4, pos[:, 1] + h / 2], 1)[keep]
        conf = rng.uniform(0.3, 0.95, n)[keep]
        feats = (kits + rng.normal(0, 0.05, kits.shape))[keep].astype(np.float32)
        feats[rng.random(len(feats)) < 0.05] = 0  # a box too small for a kit colour
        frames.append((image, xyxy, conf, feats))
    return frames


@pytest.mark.parametrize("appearance", [True, False])
def test_the_lean_tracker_gives_ultralytics_results_bit_for_bit(appearance: bool) -> None:
    lean = make_tracker("botsort", 5.0, 5.0, OPTIONS, appearance=appearance)
    stock = _stock(make_tracker("botsort", 5.0, 5.0, OPTIONS, appearance=appearance))
    rows = 0
    for image, xyxy, conf, feats in _frames(60):
        boxes = FrameBoxes(xyxy, conf, np.zeros(len(conf), np.int64))
        a = lean.update(_Input(boxes.xyxy, boxes.conf), image, feats=feats)
        b = stock.update(_Input(boxes.xyxy, boxes.conf), image, feats=feats)
        assert a.tobytes() == b.tobytes()
        rows += len(a)
    assert rows > 500  # 572 of 648 boxes: the tracks were confirmed and followed, not just started


def test_association_forbids_far_boxes_and_other_kits() -> None:
    tracks = np.array([[100.0, 100.0, 20.0, 50.0]])
    dets = np.array([[105.0, 100.0, 20.0, 50.0], [160.0, 100.0, 20.0, 50.0], [100.0, 105.0, 20.0, 50.0]])
    kit = np.array([[0.0, 0.0, 0.5]])
    params = {k: ASSOCIATION_DEFAULTS[k] for k in ("gate", "kit_gate", "kit_weight", "size_weight")}
    cost = association_cost(tracks, dets, kit, **params)
    assert cost[0, 0] < 1
    assert cost[0, 1] == FORBIDDEN  # 60 px away = 1.2 heights > the gate
    assert cost[0, 2] == FORBIDDEN  # another kit
