"""What the identity stages share: cluster parameters, an identity, per-track summaries.

The values of :class:`ClusterParams` are explained in :mod:`tasks.cluster`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field
from scipy.cluster.hierarchy import fcluster, linkage

EventKind = Literal["game", "episode"]


class ClusterParams(BaseModel):
    """Thresholds of the clustering (see the module docstring for why each value)."""

    model_config = ConfigDict(frozen=True)

    kit_distance: float = Field(default=18.0, gt=0, description="Games: ΔE cut between kit colour groups.")
    lightness_weight: float = Field(default=0.5, ge=0, description="Games: weight of L* against a*, b*.")
    merge_max_cost: float = Field(default=28.0, ge=0, description="Games: most a fragment link may cost.")
    max_speed_heights_s: float = Field(default=5.0, gt=0, description="Games: fastest plausible move.")
    motion_slack_heights: float = Field(default=1.5, ge=0, description="Games: box jitter allowance.")
    motion_soft: float = Field(default=4.0, ge=0, description="Games: cost of a jump as large as a sprint.")
    motion_weight: float = Field(default=6.0, ge=0, description="Games: cost per box height too far.")
    max_gap_s: float = Field(default=4.0, gt=0, description="Games: beyond this gap motion is not checked.")
    stretch_gap_s: float = Field(
        default=1.0, gt=0, description="Games: a track unseen this long may be two people (cut there)."
    )
    overlap_tolerance_s: float = Field(
        default=1.0, ge=0, description="Games: how long a track may overlap the one it continues (hand-over)."
    )
    refound_s: float = Field(
        default=0.6,
        ge=0,
        description="Games: a track starting this soon where one ends, within the slack, continues it.",
    )
    unseen_crossing: float = Field(
        default=0.7, gt=0, description="Games: share of the picture's width no player crosses unseen."
    )
    min_track_rows: int = Field(default=3, ge=1, description="Games: shorter tracks are 'tiny'.")
    tiny_gap_s: float = Field(
        default=1.0, ge=0, description="Games: how far a tiny track may be from its identity."
    )
    shadow_max_rows: int = Field(
        default=10, ge=0, description="Games: a player identity with fewer rows may be a shadow."
    )
    shadow_distance: float = Field(
        default=1.0, ge=0, description="Games: box heights from a team-mate that make a shadow."
    )
    shadow_window_s: float = Field(
        default=0.5, ge=0, description="Games: how far in time a shadow row looks for its host."
    )
    shadow_track_distance: float = Field(
        default=0.5,
        ge=0,
        description="Games: a short track this near a team-mate's, before chaining, is theirs.",
    )
    bridge_gap_s: float = Field(
        default=2.0,
        ge=0,
        description="Games: a box over two people fills a team-mate's gap of up to this much at each end.",
    )
    bridge_slack_heights: float = Field(
        default=0.8, ge=0, description="Games: a bridged gap's jump allowance, in box heights (as link's)."
    )
    bridge_speed_heights_s: float = Field(
        default=0.6, ge=0, description="Games: and per second of the gap (as link's)."
    )
    look_noise: float = Field(
        default=20.0, ge=0, description="Games: one sample's look spread; few samples count less."
    )
    max_stature: float = Field(
        default=20.0, description="Games: a track this much taller than those around it holds two people."
    )
    stature_weight: float = Field(default=1.5, ge=0, description="Games: cost per percent of stature.")
    number_min_conf: float = Field(
        default=0.9, ge=0, le=1, description="Games: a jersey-number read this confident is evidence."
    )
    number_min_reads: int = Field(
        default=2, ge=1, description="Games: confident reads a track (or stretch) needs to have a number."
    )
    number_share: float = Field(
        default=0.7, gt=0.5, le=1, description="Games: share of a track's confident reads its number needs."
    )
    gap_cost_per_s: float = Field(default=0.5, ge=0, description="Games: cost per second of gap.")
    face_distance: float = Field(default=0.5, gt=0, description="Episodes: average-linkage cut (Euclidean).")
    outlier_votes: float = Field(
        default=2.0, ge=1, description="Games: 'no team' must outvote a team by this."
    )
    keeper_ratio: float = Field(default=1.3, gt=1, description="Games: how much nearer a keeper's team is.")
    track_iou: float = Field(default=0.5, gt=0, le=1, description="Corrections: IoU to re-locate a track.")


@dataclass
class Identity:
    kind: str
    tracks: set[int]
    label: str | None = None
    team: str | None = None
    confidence: float = 1.0
    corrected: bool = False
    order: tuple[Any, ...] = ()


@dataclass
class TrackInfo:
    angle: str
    start: float
    end: float
    samples: int
    first_box: np.ndarray
    last_box: np.ndarray
    features: dict[str, np.ndarray] = field(default_factory=dict)
    # one row per detection: time (s), foot x, foot y, box height (pixels)
    path: np.ndarray = field(default_factory=lambda: np.empty((0, 4)))


# --- per-track summaries --------------------------------------------------------------------------


def embedding_vectors(embeddings: pl.DataFrame, kind: str) -> tuple[np.ndarray, np.ndarray]:
    rows = embeddings.filter(pl.col("kind") == kind)
    if rows.is_empty():
        return np.empty(0, np.int64), np.empty((0, 0), np.float32)
    ids = rows["track_id"].to_numpy()
    vectors = np.asarray(rows["vector"].to_list(), np.float32)
    return ids, vectors


def track_infos(tracks: pl.DataFrame) -> dict[int, TrackInfo]:
    ordered = tracks.sort("track_id", "time_s")
    summary = ordered.group_by("track_id", maintain_order=True).agg(
        pl.col("angle").first(),
        pl.col("time_s").min().alias("start"),
        pl.col("time_s").max().alias("end"),
        pl.len().alias("n"),
        pl.concat_list("x1", "y1", "x2", "y2").first().alias("first_box"),
        pl.concat_list("x1", "y1", "x2", "y2").last().alias("last_box"),
        pl.col("time_s").alias("t"),
        ((pl.col("x1") + pl.col("x2")) / 2).alias("fx"),
        pl.col("y2").alias("fy"),
        (pl.col("y2") - pl.col("y1")).alias("h"),
    )
    return {
        int(r["track_id"]): TrackInfo(
            r["angle"],
            r["start"],
            r["end"],
            r["n"],
            np.asarray(r["first_box"], float),
            np.asarray(r["last_box"], float),
            path=np.column_stack([np.asarray(r[k], float) for k in ("t", "fx", "fy", "h")]),
        )
        for r in summary.iter_rows(named=True)
    }


def flat_groups(points: np.ndarray, threshold: float) -> np.ndarray:
    """Average-linkage flat clusters (labels 0..k-1); one point is its own group."""
    if len(points) == 1:
        return np.zeros(1, int)
    labels = fcluster(linkage(points, method="average"), t=threshold, criterion="distance")
    return np.asarray(labels, int) - 1
