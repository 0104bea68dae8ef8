"""Benchmark: the cost of every stage after detect_track, per minute of footage, and their quality.

On one generated match (and one episode) with ground truth, in one process, one core for compute
(PyAV may use a second thread to decode):

  game     embed (appearance) · cluster · validate (+ pitch sampling) · screentime · export
  episode  episode_track (faces, in place of detect_track) · embed (faces) · cluster · screentime

The match's tracks are its ground-truth boxes on the analysis grid (one track per visible stretch of
a player), so the figures are those of these stages alone; when the bundled detector's weights are
present, detect_track is timed on the same clip too, for the "< 10 % of detect_track" budget. It
then computes the appearance vectors of its detections while each frame is decoded (as in a run),
so game embed is timed as a run does it: reading those vectors for the detected tracks' samples
(the old way, decoding the video again, is timed beside it for comparison and not counted). The
stages after embed run on the ground-truth tracks (their embeddings decoded, untimed), for quality.

The episode's stages run on episode_track's own tracks. Episode embed decodes the samples' frames
again (seeking to the keyframe before each, see tasks.embed.iter_frames) and runs dlib's face ResNet
in onnxruntime; building that network from dlib's weight file happens once per process and is
counted as embed's ("face model"). --compare-before times embed as it ran before (two faces per
track, no seeking, dlib's own ResNet), not counted.

Run:  .venv/bin/python bench/stages.py [--seconds 60] [--episode-seconds 60] [--cache DIR]
      [--only game|episode] [--compare-before]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import polars as pl

from infra.synth import EpisodeSpec, GameSpec, SynthClip, render_episode, render_game
from storage.artifacts import ArtifactStore, RunRef
from tasks.cluster import cluster_tracks
from tasks.embed import (
    EmbedParams,
    embed_frames,
    embed_from_appearance,
    embed_video,
    iter_frames,
    select_samples,
)
from tasks.episode_track import EpisodeTrackParams, episode_track_chunk
from tasks.export import EventOut, RunOut, build_breakdown, export_breakdown
from tasks.faces import face_resnet
from tasks.ingest import Chunk, probe_video
from tasks.screentime import compute_screentime, screentime_csv
from tasks.stitch import stitch, tracks_table
from tasks.validate import VideoInfo, sample_pitch_fractions, validate_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the scoring helpers live with the tests
from tests.fixtures.identities import (
    EpisodeCase,
    GameCase,
    cast_purity,
    cast_screentime_errors,
    game_screentime_errors,
    label_faces,
    player_count,
    team_accuracy,
    truth_tracks,
)

T = TypeVar("T")
FPS = 5.0


def timed(timings: dict[str, float], name: str, fn: Callable[[], T]) -> T:
    started = time.perf_counter()
    out = fn()
    timings[name] = time.perf_counter() - started
    return out


def cached_game(spec: GameSpec, cache: Path) -> SynthClip:
    folder = cache / f"game-{spec.seed}-{spec.duration_s:g}s-{spec.height}p"
    video = folder / f"{spec.name}.mp4"
    if video.exists():
        return SynthClip(
            video, folder / f"{spec.name}.gt.parquet", folder / f"{spec.name}.json", spec.frame_count, 0.0
        )
    return render_game(spec, folder)[0]


def cached_episode(spec: EpisodeSpec, cache: Path) -> SynthClip:
    folder = cache / f"episode-{spec.seed}-{spec.duration_s:g}s-{spec.height}p"
    video = folder / f"{spec.name}.mp4"
    if video.exists():
        return SynthClip(
            video, folder / f"{spec.name}.gt.parquet", folder / f"{spec.name}.json", spec.frame_count, 0.0
        )
    return render_episode(spec, folder)


def report(title: str, timings: dict[str, float], minutes: float, baseline: str | None = None) -> None:
    print(f"\n{title}")
    total = 0.0
    for name, seconds in timings.items():
        print(f"  {name:28s} {seconds:7.2f} s   {seconds / minutes:6.2f} s per minute of footage")
        if name != baseline:
            total += seconds
    print(f"  {'stages after tracking':28s} {total:7.2f} s   {total / minutes:6.2f} s per minute of footage")
    if baseline is not None and baseline in timings:
        print(f"  = {total / timings[baseline]:.1%} of {baseline} (goal < 10 %)")


def bench_game(seconds: float, seed: int, cache: Path, store: ArtifactStore) -> None:
    spec = GameSpec(name="bench", duration_s=seconds, seed=seed)
    clip = cached_game(spec, cache)
    truth = pl.read_parquet(clip.ground_truth_path)
    labelled = truth_tracks(truth, stride=round(spec.fps / FPS))
    tracks = labelled.drop("person_id", "team", "role")
    probe = probe_video(clip.video_path, angle="main")
    video = VideoInfo(
        angle="main", width=probe.width, height=probe.height, fps=probe.fps, duration_s=probe.duration_s
    )
    timings: dict[str, float] = {}
    path = str(clip.video_path)
    detected = _detect_track(clip, probe.duration_s)
    if detected is not None:
        detect_s, detections, appearance, vectors_s = detected
        timings["detect_track (1 core)"] = detect_s
        ours = tracks_table(stitch([_whole(clip, probe.duration_s)], [detections]))
        from_parts, undecoded = timed(
            timings,
            "embed",
            lambda: embed_from_appearance(path, ours, appearance, EmbedParams(), angle="main"),
        )
        started = time.perf_counter()
        decoding = embed_video(path, ours, EmbedParams(), angle="main")
        old_s = time.perf_counter() - started
        print(
            f"detect_track: {vectors_s:.2f} s of it computing appearance vectors; embed on its "
            f"{ours['track_id'].n_unique()} tracks: {from_parts.height} samples read from them "
            f"({undecoded} decoded), {old_s:.2f} s when decoding the video again "
            f"(identical table: {from_parts.equals(decoding)})"
        )
        embeddings = embed_video(path, tracks, EmbedParams(), angle="main")  # ground truth, untimed
    else:
        embeddings = timed(timings, "embed", lambda: embed_video(path, tracks, EmbedParams(), angle="main"))
    identities = timed(timings, "cluster", lambda: cluster_tracks(embeddings, tracks, event_kind="game"))

    def validate() -> Any:
        pitch = sample_pitch_fractions(str(clip.video_path), 12)
        return validate_run(
            detections=None,
            tracks=tracks,
            embeddings=embeddings,
            identities=identities,
            videos=[video],
            pitch_fractions=pitch,
        )

    report_ = timed(timings, "validate", validate)

    def screentime() -> Any:
        result = compute_screentime(
            identities, tracks, duration_s=probe.duration_s, params="strict", analysis_fps=FPS
        )
        screentime_csv(result)
        return result

    result = timed(timings, "screentime", screentime)
    ref = RunRef("bench", "0" * 24, "1" * 24)

    def export() -> str:
        breakdown = build_breakdown(
            event=EventOut(id=ref.event_id, tenant=ref.tenant, kind="game"),
            run=RunOut(id=ref.run_id, preset="strict"),
            videos=[video],
            identities=identities,
            screentime=result,
            validation=report_,
        )
        return export_breakdown(store, ref, breakdown)

    timed(timings, "export", export)
    minutes = probe.duration_s / 60
    print(
        f"game: {seconds:.0f} s {probe.width}x{probe.height}, seed {seed}, "
        f"{tracks['track_id'].n_unique()} tracks"
    )
    baseline = "detect_track (1 core)" if detected is not None else None
    report("game stages", timings, minutes, baseline=baseline)
    case = GameCase(clip, truth, labelled, embeddings, probe.duration_s, spec.fps)
    found, true = player_count(identities, labelled)
    errors = game_screentime_errors(result.table, identities, case)
    print(
        f"  quality: team accuracy {team_accuracy(identities, labelled):.3f} of player-frames; "
        f"{found} player identities for {true} players; screen-time error per player "
        f"mean {sum(errors.values()) / len(errors):.3%} max {max(errors.values()):.3%} of the clip"
    )


def _whole(clip: SynthClip, duration_s: float) -> Chunk:
    return Chunk(
        index=0,
        angle="main",
        path=str(clip.video_path),
        start_s=0.0,
        end_s=duration_s,
        decode_end_s=duration_s,
    )


def _detect_track(
    clip: SynthClip, duration_s: float
) -> tuple[float, pl.DataFrame, pl.DataFrame, float] | None:
    """(seconds, detections, appearance rows, seconds spent on appearance), or None without weights."""
    try:
        from tasks.detect_track import DetectParams, detect_track_appearance
        from tasks.detector import BUNDLED_WEIGHTS
    except ImportError:
        return None
    if not BUNDLED_WEIGHTS.exists():
        print("detect_track: bundled weights not found, not timed")
        return None
    started = time.perf_counter()
    detections, appearance, stats = detect_track_appearance(
        _whole(clip, duration_s), DetectParams(analysis_fps=FPS)
    )
    return time.perf_counter() - started, detections, appearance, stats.extra["appearance_s"]


def bench_episode(seconds: float, seed: int, cache: Path, *, compare_before: bool = False) -> None:
    spec = EpisodeSpec(name="bench", duration_s=seconds, cast_size=6, seed=seed)
    clip = cached_episode(spec, cache)
    truth = pl.read_parquet(clip.ground_truth_path)
    duration = spec.frame_count / spec.fps
    chunk = Chunk(
        index=0, angle="main", path=str(clip.video_path), start_s=0.0, end_s=duration, decode_end_s=duration
    )
    timings: dict[str, float] = {}
    detections = timed(
        timings, "episode_track", lambda: episode_track_chunk(chunk, EpisodeTrackParams(analysis_fps=FPS))
    )
    tracks = tracks_table(stitch([chunk], [detections]))
    path, faces = str(clip.video_path), EmbedParams.for_faces()
    timed(timings, "embed: face model (1/process)", face_resnet)  # built from dlib's .dat once per process
    embeddings = timed(timings, "embed (faces)", lambda: embed_video(path, tracks, faces, angle="main"))
    if compare_before:
        _episode_embed_before(path, tracks, embeddings)
    identities = timed(timings, "cluster", lambda: cluster_tracks(embeddings, tracks, event_kind="episode"))
    result = timed(
        timings,
        "screentime",
        lambda: compute_screentime(
            identities, tracks, duration_s=duration, params="strict", analysis_fps=FPS
        ),
    )
    print(
        f"\nepisode: {seconds:.0f} s 1280x720, seed {seed}, cast of {spec.cast_size}, "
        f"{tracks['track_id'].n_unique()} face tracks, {embeddings.height} faces embedded"
    )
    report("episode stages", timings, duration / 60, baseline="episode_track")
    labelled = label_faces(tracks, truth)
    case = EpisodeCase(clip, truth, labelled, embeddings, duration, spec.fps)
    errors = cast_screentime_errors(result.table, identities, case)
    print(
        f"  quality: cluster purity {cast_purity(identities, labelled):.3f}; "
        f"{identities.height} identities for "
        f"{truth['cast_id'].n_unique()} cast members; screen-time error per cast member mean "
        f"{sum(errors.values()) / len(errors):.3%} max {max(errors.values()):.3%} of the clip"
    )


def _episode_embed_before(path: str, tracks: pl.DataFrame, embeddings: pl.DataFrame) -> None:
    """Episode embed as it was: two faces spread over each track, decoding every reference frame up to
    the last sample, dlib's own ResNet; and the same samples with today's engine, for comparison."""
    before = EmbedParams.for_faces(sample_every_s=1.0, max_per_track=2)
    samples = select_samples(tracks, before)
    runs = {}
    for engine in ("dlib", "onnx"):
        started = time.perf_counter()
        frames = iter_frames(path, samples["frame"].to_list(), rgb=True)
        table = embed_frames(frames, samples, before, angle="main", engine=engine)
        runs[engine] = (time.perf_counter() - started, table)
    (dlib_s, old), (onnx_s, new) = runs["dlib"], runs["onnx"]
    gap = np.abs(np.asarray(old["vector"].to_list()) - np.asarray(new["vector"].to_list())).max()
    print(
        f"embed before: {old.height} faces (2 per track), {dlib_s:.2f} s with dlib's ResNet, "
        f"{onnx_s:.2f} s with onnxruntime (largest difference {gap:.1e}); now {embeddings.height} faces"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=60.0, help="match length")
    parser.add_argument("--episode-seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cache", type=Path, default=None, help="keep rendered footage here between runs")
    parser.add_argument("--only", choices=("game", "episode"), default=None, help="bench one kind of event")
    parser.add_argument(
        "--compare-before", action="store_true", help="also time episode embed as it ran before (not counted)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or Path(tmp)
        cache.mkdir(parents=True, exist_ok=True)
        if args.only != "episode":
            bench_game(args.seconds, args.seed, cache, ArtifactStore(str(Path(tmp) / "artifacts")))
        if args.only != "game":
            bench_episode(args.episode_seconds, args.seed, cache, compare_before=args.compare_before)


if __name__ == "__main__":
    main()
