"""Tracking quality on the synthetic quality set: MOTA, IDF1, HOTA per clip and overall,
tracking each clip in one piece and in chunks stitched together, and of the identities built on them.

Two levels (``tasks/quality.py``): *tracks* are detect_track + stitch's track ids (issue 3's targets);
*identities* are what a breakdown reports — embed + cluster merge a player's track fragments, and
every row is scored under its identity's id. Team accuracy is the share of player-frames (rows of
real tracks that cover a ground-truth player) whose identity is in the right team (issue 4).

Run:  .venv/bin/python bench/tracking_quality.py [--chunk 6 --overlap 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from infra.synth import SynthClip
from tasks.detect_track import DetectParams
from tasks.detector import ensure_offline
from tasks.ingest import probe_video
from tasks.quality import ClipScores, render_set, score_clip
from tasks.screentime import compute_screentime

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the scoring helpers live with the tests
from tests.fixtures.identities import GameCase, game_screentime_errors, player_count, team_accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--chunk", type=float, default=6.0, help="chunk length (s) for the chunked run")
    parser.add_argument("--overlap", type=float, default=2.0)
    parser.add_argument("--fps", type=float, default=5.0)
    args = parser.parse_args()
    ensure_offline()
    params = DetectParams(analysis_fps=args.fps)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        clips = render_set(Path(tmp))
        print(f"rendered {len(clips)} clips in {time.perf_counter() - started:.0f} s")
        rows = [score_clip(c, params, args.chunk, args.overlap, identities=True) for c in clips]
        screen = [screentime_errors(c, r, args.fps) for c, r in zip(clips, rows, strict=True)]
    print_tracks(rows)
    print_identities(rows, screen)


def screentime_errors(clip: SynthClip, row: ClipScores, fps: float) -> list[float]:
    """Per true player: |screen time of the identity holding most of their rows - truth| / duration
    (the ``strict`` preset: no padding, as the truth has none)."""
    assert row.identity is not None
    truth = pl.read_parquet(clip.ground_truth_path)
    probe = probe_video(clip.video_path)
    duration = probe.duration_s
    result = compute_screentime(
        row.identity.identities, row.identity.labelled, duration_s=duration, params="strict", analysis_fps=fps
    )
    case = GameCase(clip, truth, row.identity.labelled, pl.DataFrame(), duration, probe.fps)
    return list(game_screentime_errors(result.table, row.identity.identities, case).values())


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


def print_identities(rows: list[ClipScores], screen: list[list[float]]) -> None:
    head = f"\n{'identities':18s} {'MOTA':>6s} {'IDF1':>6s} {'HOTA':>6s} {'IDSW':>5s}"
    print(head + f" | {'team acc':>8s} {'players':>9s} | screen-time error per player (mean / max)")
    figures = []
    for r, errors in zip(rows, screen, strict=True):
        assert r.identity is not None
        s = r.identity.scores
        team = team_accuracy(r.identity.identities, r.identity.labelled)
        found, true = player_count(r.identity.identities, r.identity.labelled)
        figures.append((s.mota, s.idf1, s.hota, team))
        print(
            f"{r.name:18s} {s.mota:6.3f} {s.idf1:6.3f} {s.hota:6.3f} {s.id_switches:5d} | {team:8.3f} "
            f"{found:4d} / {true:<3d} | {np.mean(errors):.2%} / {max(errors):.2%} of the clip"
        )
    mota, idf1, hota, team = np.mean(figures, axis=0)
    every = [e for errors in screen for e in errors]
    print(
        f"{'overall (mean)':18s} {mota:6.3f} {idf1:6.3f} {hota:6.3f} {'':5s} | {team:8.3f} {'':9s} | "
        f"{np.mean(every):.2%} / {max(every):.2%}"
    )


if __name__ == "__main__":
    main()
