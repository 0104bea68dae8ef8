"""The tracking quality set: small synthetic clips that vary what trips trackers, scored against truth.

Used by ``bench/tracking_quality.py`` (the figures in the closing notes) and by the tests (floors a
little under those figures, so a regression fails).

Two levels are scored: the *tracks* (detect_track + stitch: a player who leaves the picture, or is
hidden long enough for the tracker to let go, comes back under a new track id) and the *identities*
the product reports (embed + cluster merge a player's fragments; every track row takes its
identity's id), with the same MOTA/IDF1/HOTA evaluator.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from scipy.optimize import linear_sum_assignment

from infra.synth import GameSpec, SynthClip, render_game
from infra.synth.spec import AngleSpec, CameraPreset
from tasks.cluster import cluster_tracks
from tasks.detect_track import DetectParams, detect_track_appearance
from tasks.embed import EmbedParams, embed_video
from tasks.evaluate import TrackingScores, evaluate_tracks, iou_matrix
from tasks.ingest import Chunk, plan_chunks, probe_video
from tasks.link import LinkParams
from tasks.stitch import stitch, tracks_table

QUALITY_SET: tuple[GameSpec, ...] = (
    GameSpec(name="q-default", duration_s=20, seed=101),
    GameSpec(name="q-colours", duration_s=20, seed=102, home_color="white", away_color="black"),
    GameSpec(
        name="q-dense",
        duration_s=20,
        seed=103,
        players_per_team=11,
        referees=3,
        home_color="yellow",
        away_color="purple",
    ),
    GameSpec(
        name="q-sparse-static",
        duration_s=20,
        seed=104,
        players_per_team=6,
        camera_motion=0.0,
        home_color="sky",
        away_color="maroon",
    ),
    GameSpec(
        name="q-tight-shaky",
        duration_s=20,
        seed=105,
        camera_motion=2.0,
        home_color="orange",
        away_color="navy",
        angles=(AngleSpec(name="tight", preset=CameraPreset.TIGHT),),
    ),
)


@dataclass(frozen=True)
class IdentityScores:
    """The identities built on one-piece tracks: scores, and the tracks labelled with the truth."""

    scores: TrackingScores
    identities: pl.DataFrame
    labelled: pl.DataFrame  # tracks + person_id, team, role (see label_tracks)


@dataclass(frozen=True)
class ClipScores:
    name: str
    whole: TrackingScores
    chunked: TrackingScores
    chunks: int
    identity: IdentityScores | None = None


def track_whole(video: Path, params: DetectParams, link: LinkParams | None = LinkParams()) -> pl.DataFrame:
    """The clip tracked in one piece, then stitched (and linked, as a run's stitch does)."""
    whole = Chunk(index=0, angle="main", path=str(video), start_s=0.0, end_s=1e9, decode_end_s=1e9)
    table, appearance, _ = detect_track_appearance(whole, params)
    return stitch([whole], [table], [appearance], link)


def track_chunked(
    video: Path,
    params: DetectParams,
    chunk_s: float,
    overlap_s: float,
    link: LinkParams | None = LinkParams(),
) -> tuple[pl.DataFrame, int]:
    """The clip tracked in chunks, then stitched (and linked); also the number of chunks."""
    chunks = plan_chunks(probe_video(video), chunk_s, overlap_s)
    results = [detect_track_appearance(c, params) for c in chunks]
    tables, appearance = [r[0] for r in results], [r[1] for r in results]
    return stitch(chunks, tables, appearance, link), len(chunks)


def identity_tracks(tracks: pl.DataFrame, identities: pl.DataFrame) -> pl.DataFrame:
    """``tracks`` with every row's ``track_id`` replaced by its identity's id (null when it has none)."""
    members = (
        identities.select("identity_id", "track_ids")
        .explode("track_ids")
        .rename({"track_ids": "track_id"})
        .drop_nulls("track_id")
        .unique("track_id")
    )
    return (
        tracks.join(members, on="track_id", how="left")
        .with_columns(track_id=pl.col("identity_id").cast(pl.Int64))
        .drop("identity_id")
    )


def identities_of(video: Path, detections: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(tracks table, identities) of tracked detections: the run's embed and cluster stages, unchanged."""
    tracks = tracks_table(detections)
    embeddings = embed_video(str(video), tracks, EmbedParams(), angle="main")
    return tracks, cluster_tracks(embeddings, tracks, event_kind="game")


def label_tracks(truth: pl.DataFrame, tracks: pl.DataFrame, min_iou: float = 0.5) -> pl.DataFrame:
    """``tracks`` + the ``person_id``, ``team`` and ``role`` of the ground-truth box each row covers
    (one-to-one per frame, IoU ≥ ``min_iou``; null for a false detection)."""
    by_frame = truth.partition_by("frame", as_dict=True)
    out = []
    for (frame,), rows in tracks.partition_by("frame", as_dict=True, maintain_order=True).items():
        gt = by_frame.get((frame,), truth.clear())
        owner = _owners(gt, rows, min_iou)
        out.append(
            rows.with_columns(
                pl.Series(name, [gt[name][g] if g >= 0 else None for g in owner], dtype=dtype)
                for name, dtype in (("person_id", pl.Int32), ("team", pl.Utf8), ("role", pl.Utf8))
            )
        )
    return pl.concat(out) if out else tracks


def _owners(gt: pl.DataFrame, rows: pl.DataFrame, min_iou: float) -> list[int]:
    """Per row, the index of the ground-truth box it is matched to, or -1."""
    iou = iou_matrix(
        gt.select("x1", "y1", "x2", "y2").to_numpy(), rows.select("x1", "y1", "x2", "y2").to_numpy()
    )
    owner = [-1] * len(rows)
    if iou.size:
        iou = np.where(iou >= min_iou, iou, 0.0)  # a pair under min_iou must not win the sum
        for g, p in zip(*linear_sum_assignment(-iou), strict=True):
            if iou[g, p] >= min_iou:
                owner[int(p)] = int(g)
    return owner


def score_clip(
    clip: SynthClip, params: DetectParams, chunk_s: float, overlap_s: float, identities: bool = False
) -> ClipScores:
    """Tracks in one piece and chunked, against the truth; ``identities``: also the identities built
    on the one-piece tracks."""
    truth = pl.read_parquet(clip.ground_truth_path)
    detections = track_whole(clip.video_path, params)
    whole = evaluate_tracks(truth, detections)
    chunked_tracks, count = track_chunked(clip.video_path, params, chunk_s, overlap_s)
    identity = None
    if identities:
        tracks, found = identities_of(clip.video_path, detections)
        scores = evaluate_tracks(truth, identity_tracks(tracks, found))
        identity = IdentityScores(scores, found, label_tracks(truth, tracks))
    return ClipScores(clip.video_path.stem, whole, evaluate_tracks(truth, chunked_tracks), count, identity)


def render_set(
    out: Path, specs: tuple[GameSpec, ...] = QUALITY_SET, keyint_s: float = 2.0
) -> list[SynthClip]:
    """Render the set with a keyframe every ``keyint_s`` so chunk boundaries can fall inside clips."""
    clips = []
    for spec in specs:
        encode = spec.encode.model_copy(update={"keyint": round(keyint_s * spec.fps)})
        clips += render_game(spec.model_copy(update={"encode": encode}), out)
    return clips
