"""Tracking quality on the synthetic quality set: MOTA, IDF1, HOTA per clip and overall,
tracking each clip in one piece and in chunks stitched together, and of the identities built on them.

Two levels (``tasks/quality.py``): *tracks* are detect_track + stitch's track ids (issue 3's targets);
*identities* are what a breakdown reports — embed + cluster merge a player's track fragments, and
every row is scored under its identity's id. Team accuracy is the share of player-frames (rows of
real tracks that cover a ground-truth player) whose identity is in the right team (issue 4).

``--cache DIR`` keeps the rendered clips and the tracked (detect_track + stitch) detections, whole
and chunked, so a re-run only redoes embed, cluster and the scoring (the embeddings too with
``--cache-embeddings``). A clip is keyed by its spec, the renderer's code (``infra/synth``) and the
libraries that draw and encode it; its tracks by the detect/chunk parameters, the code and models
under ``tasks/`` and the libraries that decode, detect and track (:func:`fingerprint`). A change to
any of them renders or tracks again: figures kept from an older cache had silently outlived the code
and libraries that made them, and a fresh clone did not reproduce them.

Identities are scored on the screen time per player too: under the ``default`` preset (what a
breakdown reports), ``strict``, and the best any clustering of these tracks could do; and, stricter,
on the time per player that the ``default`` intervals get wrong (on screen in them and not in the
truth, or the other way round: where the totals let a second missed and another credited wrongly
cancel, this adds them up). The set was tuned on; ``--seed-offset 100`` renders the same kinds of
clip with other seeds, ``--duration 60`` makes every clip 60 s long instead of 20 s (harder: players
leave and come back, and their fragments must be chained over longer gaps; ~3x the time).

Last, every true player sample (a player visible on an analysed frame) is counted by how visible he
was and by what became of it (:func:`missed_samples`): covered by his own identity, by a track that
went to another identity, by a detection the tracker left untracked, by a detection tracked as
someone else (one box for two people), by a poor box only, or by no box: where the screen-time
error comes from.

``--explain`` then prints, for every player over 3 % of the clip under ``default``, what his error is
made of (:func:`explain`): his true and credited intervals, the error the best grouping of these
tracks would leave, and which tracks and identities his boxes went to.

Run:  .venv/bin/python bench/tracking_quality.py [--chunk 6 --overlap 2] [--cache var/quality-cache]
      [--seed-offset 100] [--duration 60] [--weights X.onnx] [--explain]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from infra.synth import GameSpec, SynthClip
from tasks.cluster import cluster_tracks
from tasks.detect_track import DetectParams
from tasks.detector import ensure_offline
from tasks.embed import EmbedParams, embed_video
from tasks.evaluate import evaluate_tracks, iou_matrix
from tasks.ingest import probe_video
from tasks.quality import (
    QUALITY_SET,
    ClipScores,
    IdentityScores,
    identity_tracks,
    label_tracks,
    render_set,
    track_chunked,
    track_whole,
)
from tasks.screentime import compute_screentime
from tasks.stitch import tracks_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the scoring helpers live with the tests
from tests.fixtures.identities import (
    GameCase,
    frame_intervals,
    game_misattributed_time,
    game_screentime_errors,
    identity_members,
    player_count,
    player_owners,
    team_accuracy,
    truth_identities,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--chunk", type=float, default=6.0, help="chunk length (s) for the chunked run")
    parser.add_argument("--overlap", type=float, default=2.0)
    parser.add_argument("--fps", type=float, default=5.0)
    parser.add_argument("--cache", type=Path, help="keep clips and tracks here (see the module docstring)")
    parser.add_argument("--cache-embeddings", action="store_true", help="with --cache: keep embeddings too")
    parser.add_argument("--only", nargs="*", help="clip names to run (default: the whole set)")
    parser.add_argument(
        "--seed-offset", type=int, default=0, help="add this to every clip's seed: clips nothing was tuned on"
    )
    parser.add_argument("--duration", type=float, help="make every clip this long (s; the set's are 20)")
    parser.add_argument(
        "--weights", default="", help="detector weights to score (default: the bundled detector)"
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="what each player over 3%% of the clip lost or gained, and where",
    )
    args = parser.parse_args()
    ensure_offline()
    params = DetectParams(analysis_fps=args.fps, weights=args.weights)
    specs = tuple(
        s.model_copy(
            update={"seed": s.seed + args.seed_offset}
            | ({"duration_s": args.duration} if args.duration else {})
        )
        for s in QUALITY_SET
        if not args.only or s.name in args.only
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = args.cache or Path(tmp)
        started = time.perf_counter()
        clips = [cached_clip(spec, root) for spec in specs]
        print(f"{len(clips)} clips ready in {time.perf_counter() - started:.0f} s")
        rows, tracks = [], []
        for spec, clip in zip(specs, clips, strict=True):
            tracked = cached_tracks(spec, clip, params, args.chunk, args.overlap)
            tracks.append(tracked)
            rows.append(score(clip, tracked, args.cache is not None and args.cache_embeddings))
        timed = {
            (name, oracle): [
                screentime(c, r, args.fps, name, oracle) for c, r in zip(clips, rows, strict=True)
            ]
            for name in ("default", "strict")
            for oracle in (False, True)
        }
        screen = {key: [list(game_screentime_errors(*t).values()) for t in per] for key, per in timed.items()}
        wrong = [list(game_misattributed_time(*t).values()) for t in timed["default", False]]
        budget = pl.concat(
            [
                missed_samples(clip, tracked, row, round(probe_video(clip.video_path).fps / args.fps))
                for clip, tracked, row in zip(clips, tracks, rows, strict=True)
            ]
        )
    print_tracks(rows)
    print_identities(rows, screen, wrong)
    print_budget(budget)
    if args.explain:
        for default, best in zip(timed["default", False], timed["default", True], strict=True):
            explain(default, best)


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


ROOT = Path(__file__).resolve().parents[1]
RENDER_LIBRARIES = ("av", "numpy", "opencv-python-headless")
TRACK_LIBRARIES = (*RENDER_LIBRARIES, "lap", "onnxruntime", "polars", "scipy", "ultralytics")


@functools.cache
def fingerprint(folder: str, libraries: tuple[str, ...]) -> str:
    """A digest of every file under ``folder`` (of the repository; code and bundled models) and of the
    installed versions of ``libraries``: part of a cache key, so a cache never outlives what made it."""
    digest = hashlib.sha256()
    for path in sorted(p for p in (ROOT / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    for name in libraries:
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = "absent"
        digest.update(f"{name}=={installed}".encode())
    return digest.hexdigest()[:12]


def cached_clip(spec: GameSpec, root: Path, keyint_s: float = 2.0) -> SynthClip:
    """The clip of ``spec`` as ``render_set`` renders it, rendered once per cache directory."""
    code = fingerprint("infra/synth", RENDER_LIBRARIES)
    folder = root / "clips" / f"{spec.name}-{_key(spec.model_dump(mode='json'), keyint_s, code)}"
    record = folder / "clip.json"
    if record.exists():
        saved = json.loads(record.read_text())
        return SynthClip(
            video_path=Path(saved["video_path"]),
            ground_truth_path=Path(saved["ground_truth_path"]),
            sidecar_path=Path(saved["sidecar_path"]),
            frame_count=saved["frame_count"],
            render_seconds=saved["render_seconds"],
            angle=saved.get("angle"),
            ball_path=Path(saved["ball_path"]) if saved.get("ball_path") else None,
        )
    (clip,) = render_set(folder, (spec,), keyint_s)
    fields = {k: (str(v) if isinstance(v, Path) else v) for k, v in clip.__dict__.items()}
    record.write_text(json.dumps(fields))
    return clip


@dataclass(frozen=True)
class Tracked:
    whole: pl.DataFrame  # detections tracked in one piece, stitched and linked
    chunked: pl.DataFrame  # the same, tracked in chunks
    chunks: int
    folder: Path  # where they are kept (and the embeddings, with --cache-embeddings)


def cached_tracks(
    spec: GameSpec, clip: SynthClip, params: DetectParams, chunk_s: float, overlap_s: float
) -> Tracked:
    key = _key(params.model_dump(mode="json"), chunk_s, overlap_s, fingerprint("tasks", TRACK_LIBRARIES))
    folder = clip.video_path.parent / f"tracks-{key}"
    whole, chunked, meta = folder / "whole.parquet", folder / "chunked.parquet", folder / "chunks.json"
    if meta.exists():
        return Tracked(
            pl.read_parquet(whole), pl.read_parquet(chunked), json.loads(meta.read_text())["chunks"], folder
        )
    started = time.perf_counter()
    tracked = Tracked(
        track_whole(clip.video_path, params),
        *track_chunked(clip.video_path, params, chunk_s, overlap_s),
        folder,
    )
    print(f"{spec.name}: tracked in {time.perf_counter() - started:.0f} s")
    folder.mkdir(parents=True, exist_ok=True)
    tracked.whole.write_parquet(whole)
    tracked.chunked.write_parquet(chunked)
    meta.write_text(json.dumps({"chunks": tracked.chunks}))
    return tracked


def score(clip: SynthClip, tracked: Tracked, keep_embeddings: bool) -> ClipScores:
    """Tracks in one piece and chunked against the truth, and the identities built on the one-piece
    tracks (as ``tasks.quality.score_clip``, on tracks computed once)."""
    truth = pl.read_parquet(clip.ground_truth_path)
    tracks = tracks_table(tracked.whole)
    stored = tracked.folder / "embeddings.parquet"
    if keep_embeddings and stored.exists():
        embeddings = pl.read_parquet(stored)
    else:
        embeddings = embed_video(str(clip.video_path), tracks, EmbedParams(), angle="main")
        if keep_embeddings:
            embeddings.write_parquet(stored)
    found = cluster_tracks(embeddings, tracks, event_kind="game")
    identity = IdentityScores(
        evaluate_tracks(truth, identity_tracks(tracks, found)), found, label_tracks(truth, tracks)
    )
    return ClipScores(
        clip.video_path.stem,
        evaluate_tracks(truth, tracked.whole),
        evaluate_tracks(truth, tracked.chunked),
        tracked.chunks,
        identity,
    )


def screentime(
    clip: SynthClip, row: ClipScores, fps: float, preset: str, oracle: bool = False
) -> tuple[pl.DataFrame, pl.DataFrame, GameCase]:
    """The screentime table of a clip's identities under ``preset``, the identities and the scoring
    case: what :func:`tests.fixtures.identities.game_screentime_errors` (per true player, |screen
    time of the identity holding most of their rows - truth| / duration) and
    :func:`~tests.fixtures.identities.game_misattributed_time` (the time those intervals disagree with
    the truth: missed and credited wrongly add up instead of cancelling) score. ``default`` is what a
    breakdown reports; ``strict`` counts only the analysed samples that were detected. ``oracle``: of
    the identities built from the truth on the same tracks (``truth_identities``: each track whole to
    its majority person), the least error any clustering of these tracks can reach."""
    assert row.identity is not None
    truth = pl.read_parquet(clip.ground_truth_path)
    probe = probe_video(clip.video_path)
    duration = probe.duration_s
    labelled = row.identity.labelled
    identities = truth_identities(labelled) if oracle else row.identity.identities
    result = compute_screentime(
        identities,
        labelled,
        duration_s=duration,
        params=preset,
        analysis_fps=fps,
        frame_sizes={angle: (probe.width, probe.height) for angle in labelled["angle"].unique()},
    )
    return result.table, identities, GameCase(clip, truth, labelled, pl.DataFrame(), duration, probe.fps)


VISIBILITY = ((0.0, 0.3, "< 0.3"), (0.3, 0.7, "0.3-0.7"), (0.7, 1.01, ">= 0.7"))
CAUSES = ("right", "other identity", "untracked box", "shared box", "poor box", "no box")


def missed_samples(clip: SynthClip, tracked: Tracked, row: ClipScores, stride: int) -> pl.DataFrame:
    """Every true player sample (an analysed frame the player is visible on), by visibility and by
    what became of it: *right* (a track of the player's own identity — the one holding most of his
    rows — covers him), *other identity* (a track covers him, but it went to another identity),
    *untracked box* (a detection covers him, IoU >= 0.5, but the tracker left it without a track),
    *shared box* (the detection that covers him is tracked as someone else: one box for two people),
    *poor box* (the best detection overlaps him by IoU 0.2-0.5), *no box*."""
    assert row.identity is not None
    truth = pl.read_parquet(clip.ground_truth_path).filter(
        (pl.col("role") == "player") & (pl.col("frame") % stride == 0)
    )
    members = row.identity.identities.select("identity_id", pl.col("track_ids").alias("track_id")).explode(
        "track_id"
    )
    labelled = row.identity.labelled.join(members, on="track_id", how="left")
    owner = dict(
        labelled.drop_nulls(["person_id", "identity_id"])
        .group_by("person_id", "identity_id")
        .len()
        .sort(["len", "identity_id"], descending=[True, False])
        .unique("person_id", keep="first", maintain_order=True)
        .select("person_id", "identity_id")
        .iter_rows()
    )
    covered = {
        (p, f): i
        for p, f, i in labelled.drop_nulls("person_id")
        .select("person_id", "frame", "identity_id")
        .iter_rows()
    }
    boxes = {f: g for (f,), g in tracked.whole.partition_by("frame", as_dict=True).items()}
    out = []
    for person, frame, visible, *box in truth.select(
        "person_id", "frame", "visible_fraction", "x1", "y1", "x2", "y2"
    ).iter_rows():
        if (person, frame) in covered:
            cause = "right" if covered[person, frame] == owner.get(person) else "other identity"
        else:
            cause = "no box"
            seen = boxes.get(frame)
            if seen is not None:
                others = seen.select("x1", "y1", "x2", "y2").to_numpy().astype(np.float64)
                overlap = iou_matrix(np.asarray([box], np.float64), others)[0]
                best = int(overlap.argmax())
                if overlap[best] >= 0.5:
                    cause = "untracked box" if seen["track_id"][best] is None else "shared box"
                elif overlap[best] >= 0.2:
                    cause = "poor box"
        band = next(label for lo, hi, label in VISIBILITY if lo <= visible < hi)
        out.append((clip.video_path.stem, band, cause))
    return pl.DataFrame(out, schema=["clip", "visible", "cause"], orient="row")


def print_budget(budget: pl.DataFrame) -> None:
    """Where the true player samples went (:func:`missed_samples`), all clips together."""
    print(f"\n{'player samples':18s} " + " ".join(f"{c:>14s}" for c in CAUSES) + f" {'total':>7s}")
    for _, _, band in VISIBILITY:
        mine = budget.filter(pl.col("visible") == band)
        counts = dict(mine.group_by("cause").len().iter_rows())
        cells = " ".join(f"{counts.get(c, 0):14d}" for c in CAUSES)
        print(f"{'visible ' + band:18s} {cells} {mine.height:7d}")


def print_tracks(rows: list[ClipScores]) -> None:
    head = (
        f"{'tracks':18s} {'MOTA':>6s} {'IDF1':>6s} {'HOTA':>6s} {'recall':>6s} {'prec':>6s} {'IDSW':>5s} | "
    )
    print(head + f"{'chunks':>6s} {'IDF1 chunked':>12s} {'ΔIDF1':>7s}")
    for r in rows:
        w, c = r.whole, r.chunked
        print(
            f"{r.name:18s} {w.mota:6.3f} {w.idf1:6.3f} {w.hota:6.3f} {w.recall:6.3f} {w.precision:6.3f} "
            f"{w.id_switches:5d} | {r.chunks:6d} {c.idf1:12.3f} {c.idf1 - w.idf1:+7.3f}"
        )
    mean = {k: float(np.mean([getattr(r.whole, k) for r in rows])) for k in ("mota", "idf1", "hota")}
    chunked = float(np.mean([r.chunked.idf1 for r in rows]))
    print(
        f"{'overall (mean)':18s} {mean['mota']:6.3f} {mean['idf1']:6.3f} {mean['hota']:6.3f}"
        f"{'':22s}| {'':6s} {chunked:12.3f} {chunked - mean['idf1']:+7.3f}"
    )


def print_identities(
    rows: list[ClipScores], screen: dict[tuple[str, bool], list[list[float]]], wrong: list[list[float]]
) -> None:
    """Identity scores per clip; screen-time error per player as mean / max under the ``default``
    preset, then ``strict``, then (in brackets) the best possible on these tracks under ``default``;
    last, the time per player the ``default`` intervals get wrong (:func:`screentime`)."""
    head = f"\n{'identities':18s} {'MOTA':>6s} {'IDF1':>6s} {'HOTA':>6s} {'IDSW':>5s}"
    print(
        head + f" | {'team acc':>8s} {'players':>9s} | screen-time error per player, mean / max: "
        "default preset, strict (best on these tracks, default)"
    )
    figures = []
    for k, r in enumerate(rows):
        assert r.identity is not None
        s = r.identity.scores
        team = team_accuracy(r.identity.identities, r.identity.labelled)
        found, true = player_count(r.identity.identities, r.identity.labelled)
        figures.append((s.mota, s.idf1, s.hota, team))
        print(
            f"{r.name:18s} {s.mota:6.3f} {s.idf1:6.3f} {s.hota:6.3f} {s.id_switches:5d} | {team:8.3f} "
            f"{found:4d} / {true:<3d} | {_errors([screen['default', False][k]])}, "
            f"{_errors([screen['strict', False][k]])} ({_errors([screen['default', True][k]])})"
        )
    mota, idf1, hota, team = np.mean(figures, axis=0)
    print(
        f"{'overall (mean)':18s} {mota:6.3f} {idf1:6.3f} {hota:6.3f} {'':5s} | {team:8.3f} {'':9s} | "
        f"{_errors(screen['default', False])}, {_errors(screen['strict', False])} "
        f"({_errors(screen['default', True])})"
    )
    every = [e for errors in screen["default", False] for e in errors]
    over = sum(e > 0.03 for e in every)
    best = sum(e > 0.03 for errors in screen["default", True] for e in errors)
    print(
        f"players over 3% of the clip (default preset): {over} of {len(every)} "
        f"({best} with the best identities these tracks allow)"
    )
    wrongly = [e for errors in wrong for e in errors]
    over = sum(e > 0.03 for e in wrongly)
    print(
        f"time per player the intervals get wrong (default preset; missed + credited wrongly): "
        f"mean / max {_errors(wrong)}, over 3% of the clip: {over} of {len(wrongly)}"
    )


def _spans(intervals: list[tuple[float, float]]) -> str:
    return " ".join(f"{a:.1f}-{b:.1f}" for a, b in intervals) or "-"


def explain(
    default: tuple[pl.DataFrame, pl.DataFrame, GameCase],
    best: tuple[pl.DataFrame, pl.DataFrame, GameCase],
    over: float = 0.03,
) -> None:
    """For each player of one clip whose ``default`` error is over ``over``: his true intervals (and
    where he was under 30 % visible), the intervals of the identity credited with him, the error the
    best grouping of these tracks would leave, where his boxes went (track, identity, samples, first
    and last), and the other players' boxes in his identity."""
    table, identities, case = default
    errors = game_screentime_errors(*default)
    best_errors = game_screentime_errors(*best)
    owner = player_owners(identities, case)
    credited = dict(zip(table["identity_id"], table["intervals"].to_list(), strict=True))
    rows = case.tracks.join(identity_members(identities), on="track_id", how="left")
    for pid, error in sorted(errors.items()):
        if error <= over:
            continue
        truth = case.truth.filter(pl.col("person_id") == pid)
        faint = truth.filter(pl.col("visible_fraction") < 0.3)
        identity = owner.get(pid)
        spans = [(i["start_s"], i["end_s"]) for i in credited.get(identity) or []]
        print(
            f"\n{case.clip.video_path.stem} player {pid} ({truth['team'][0]}): error {error:.1%}, "
            f"{best_errors.get(pid, 0.0):.1%} with the best grouping; identity {identity}"
        )
        print(f"  on screen  {_spans(frame_intervals(truth['frame'].to_list(), case.fps))}")
        print(f"  under 30 % {_spans(frame_intervals(faint['frame'].to_list(), case.fps))}")
        print(f"  credited   {_spans(spans)}")
        for r in _boxes(rows.filter(pl.col("person_id") == pid), "identity_id"):
            print(f"  his boxes: track {r['track_id']} (identity {r['identity_id']}) {_seen(r)}")
        mixed = rows.filter(pl.col("identity_id") == identity, pl.col("person_id").ne_missing(pid))
        for r in _boxes(mixed, "person_id"):
            who = "no one" if r["person_id"] is None else f"player {r['person_id']}"
            print(f"  in his identity: track {r['track_id']} holds {who} {_seen(r)}")


def _boxes(rows: pl.DataFrame, by: str) -> list[dict[str, Any]]:
    """Labelled track rows grouped by track and ``by``: how many, first and last time, in time order."""
    return (
        rows.group_by("track_id", by)
        .agg(pl.len().alias("n"), pl.col("time_s").min().alias("t0"), pl.col("time_s").max().alias("t1"))
        .sort("t0")
        .to_dicts()
    )


def _seen(r: dict[str, Any]) -> str:
    return f"x{r['n']} {r['t0']:.1f}-{r['t1']:.1f}"


def _errors(per_clip: list[list[float]]) -> str:
    every = [e for errors in per_clip for e in errors]
    return f"{np.mean(every):5.2%} / {max(every):5.2%}"


if __name__ == "__main__":
    main()
