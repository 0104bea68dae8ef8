"""Tracking quality against ground truth: MOTA, IDF1 and HOTA with the `trackers` package's evaluator.

The evaluator is `trackers.eval` (a TrackEval port that runs on NumPy 2). Only the frames filmroom
analysed are scored. Like MOTChallenge, people who are barely visible (``visible_fraction`` under
``min_visible``) are *ignore regions*: missing them is no error, and a predicted box that matches one
(IoU ≥ 0.5) is removed instead of counting as a false positive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy.optimize import linear_sum_assignment

MIN_VISIBLE = 0.3


@dataclass(frozen=True)
class TrackingScores:
    mota: float
    idf1: float
    hota: float
    recall: float
    precision: float
    id_switches: int
    gt_ids: int
    pred_ids: int
    frames: int

    def as_dict(self) -> dict[str, float | int]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.size == 0 or b.size == 0:
        return np.zeros((a.shape[0], b.shape[0]))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def prepare(
    gt: pl.DataFrame, pred: pl.DataFrame, min_visible: float = MIN_VISIBLE
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Per analysed frame: ground-truth ids, predicted ids and their IoU matrix, ignore regions removed."""
    frames = sorted(pred["frame"].unique().to_list()) if not pred.is_empty() else []
    gt_by_frame = gt.partition_by("frame", as_dict=True)
    pred_by_frame = pred.partition_by("frame", as_dict=True)
    gt_ids, pred_ids, sims = [], [], []
    for frame in frames:
        g = gt_by_frame.get((frame,), gt.clear())
        p = pred_by_frame.get((frame,), pred.clear())
        g_box = g.select("x1", "y1", "x2", "y2").to_numpy().astype(np.float64)
        p_box = p.select("x1", "y1", "x2", "y2").to_numpy().astype(np.float64)
        visible = g["visible_fraction"].to_numpy() >= min_visible
        iou = iou_matrix(g_box, p_box)
        keep_pred = np.ones(len(p), dtype=bool)
        if (~visible).any() and len(p):
            # Match everything, then drop predictions whose match is an ignored person.
            cost = np.where(iou >= 0.5, 1 - iou, 10.0)
            rows, cols = linear_sum_assignment(cost)
            for r, c in zip(rows, cols, strict=True):
                if iou[r, c] >= 0.5 and not visible[r]:
                    keep_pred[c] = False
        gt_ids.append(g["person_id"].to_numpy()[visible].astype(np.int64))
        pred_ids.append(p["track_id"].to_numpy()[keep_pred].astype(np.int64))
        sims.append(iou[visible][:, keep_pred])
    return gt_ids, pred_ids, sims


def _remap(ids: list[np.ndarray]) -> list[np.ndarray]:
    """TrackEval expects ids 0..n-1."""
    unique = np.unique(np.concatenate(ids)) if ids else np.zeros(0, np.int64)
    lookup = {int(v): i for i, v in enumerate(unique)}
    return [np.array([lookup[int(v)] for v in frame], dtype=np.int64) for frame in ids]


def evaluate_tracks(gt: pl.DataFrame, pred: pl.DataFrame, min_visible: float = MIN_VISIBLE) -> TrackingScores:
    """Score predicted tracks (``frame, track_id, x1..y2``) against ground truth on the analysed frames."""
    from trackers.eval import compute_clear_metrics, compute_hota_metrics, compute_identity_metrics

    pred = pred.filter(pl.col("track_id").is_not_null())
    gt_ids, pred_ids, sims = prepare(gt, pred, min_visible)
    gt_ids, pred_ids = _remap(gt_ids), _remap(pred_ids)
    clear = compute_clear_metrics(gt_ids, pred_ids, sims)
    identity = compute_identity_metrics(gt_ids, pred_ids, sims)
    hota = compute_hota_metrics(gt_ids, pred_ids, sims)
    hota_value = hota["HOTA"]
    return TrackingScores(
        mota=float(clear["MOTA"]),
        idf1=float(identity["IDF1"]),
        hota=float(np.mean(hota_value) if np.ndim(hota_value) else hota_value),
        recall=float(clear["CLR_Re"]),
        precision=float(clear["CLR_Pr"]),
        id_switches=int(clear["IDSW"]),
        gt_ids=len(np.unique(np.concatenate(gt_ids))) if gt_ids else 0,
        pred_ids=len(np.unique(np.concatenate(pred_ids))) if pred_ids else 0,
        frames=len(gt_ids),
    )
