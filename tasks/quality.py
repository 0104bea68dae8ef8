"""The tracking quality set: small synthetic clips that vary what trips trackers, scored against truth.

Used by ``bench/tracking_quality.py`` (the figures in the closing notes) and by the tests (floors a
little under those figures, so a regression fails).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from infra.synth import GameSpec, SynthClip, render_game
from infra.synth.spec import AngleSpec, CameraPreset
from tasks.detect_track import DetectParams, detect_track_chunk
from tasks.evaluate import TrackingScores, evaluate_tracks
from tasks.ingest import Chunk, plan_chunks, probe_video
from tasks.stitch import stitch

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
class ClipScores:
    name: str
    whole: TrackingScores
    chunked: TrackingScores
    chunks: int


def track_whole(video: Path, params: DetectParams) -> pl.DataFrame:
    whole = Chunk(index=0, angle="main", path=str(video), start_s=0.0, end_s=1e9, decode_end_s=1e9)
    table, _ = detect_track_chunk(whole, params)
    return stitch([whole], [table])


def track_chunked(
    video: Path, params: DetectParams, chunk_s: float, overlap_s: float
) -> tuple[pl.DataFrame, int]:
    chunks = plan_chunks(probe_video(video), chunk_s, overlap_s)
    tables = [detect_track_chunk(c, params)[0] for c in chunks]
    return stitch(chunks, tables), len(chunks)


def score_clip(clip: SynthClip, params: DetectParams, chunk_s: float, overlap_s: float) -> ClipScores:
    truth = pl.read_parquet(clip.ground_truth_path)
    whole = evaluate_tracks(truth, track_whole(clip.video_path, params))
    chunked_tracks, count = track_chunked(clip.video_path, params, chunk_s, overlap_s)
    return ClipScores(clip.video_path.stem, whole, evaluate_tracks(truth, chunked_tracks), count)


def render_set(
    out: Path, specs: tuple[GameSpec, ...] = QUALITY_SET, keyint_s: float = 2.0
) -> list[SynthClip]:
    """Render the set with a keyframe every ``keyint_s`` so chunk boundaries can fall inside clips."""
    clips = []
    for spec in specs:
        encode = spec.encode.model_copy(update={"keyint": round(keyint_s * spec.fps)})
        clips += render_game(spec.model_copy(update={"encode": encode}), out)
    return clips
