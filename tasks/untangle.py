"""untangle: swap back the tracks the tracker swapped between two players (a step of :mod:`tasks.link`).

**Crossings.** Before linking, tracks the tracker swapped are swapped back (:func:`untangle`). When
two team-mates cross, their boxes overlap and the tracker may go on with each track on the other
player: both tracks then hold two people, and no grouping of whole tracks into identities can give
either player his screen time (on the quality set these swaps were the largest screen-time errors
left: q-sparse-static's player 10 -19.5 % of the clip, q-tight-shaky's 21 -20.6 %). A *crossing*
is a pair of tracks whose boxes overlap by ``cross_iou`` (IoU) or more, its frames less than
``crossing_gap_s`` apart. Each track's *look* (median of the torso, shorts, skin and hair CIELAB
colours, lightness halved — team-mates share a kit but not skin and hair) is taken over its *clean*
rows (overlapping no other box by ``clean_iou`` or more) in the ``look_window_s`` before and after
the crossing, with at least ``look_min_rows`` rows. If the looks after match the looks before
better crossed over than straight — by more than ``swap_margin`` ΔE per look compared after (one
when only one track goes on past the crossing, as when two players run on under one box) — the
tracks swap ids from the middle of the crossing on. Crossings are taken in time order, so a
track swapped twice is followed. Measured on the quality set and the same specs re-seeded (+100),
against the truth: of the crossings where both sides could be judged, pairs the tracker had kept
gained at most 1.6 ΔE by a swap, real swaps 6.6-24 (one-sided: kept -6.6 or less, the swap 7.0);
identity IDF1 0.931 -> 0.954 (q-dense 0.930 -> 0.976, q-tight-shaky 0.843 -> 0.907), re-seeded
0.896 -> 0.906 (q-sparse-static 0.869 -> 0.918, the rest unchanged); screen-time error per player
(default preset) 2.04 % -> 1.91 % of the clip on average, 8 -> 6 players over 3 % (re-seeded: 4.32 %
either way, q-sparse-static's worst 23.4 % -> 20.6 %). A player who runs on hidden under a team-mate's
box is still missed (q-sparse-static's 12: 22 of 86 samples), and is now no longer credited with the
team-mate's time (strict preset -9.3 % -> -27.3 %).

**Hidden players, chains of swaps.** A player hidden behind a team-mate is not detected, so the two
boxes never overlap in one frame, yet the track that goes on there may go on with him (+200
q-default: track 6 lost player 18 at 10.6 s while 19 ran past behind him; 19's track took 18's box
at 10.8 s and kept it, and track 6 was re-found on 19 at 11.6 s). So a track the tracker has lost
still crosses the others for ``ghost_s`` at its last box, moved on at its last velocity as the
tracker's own prediction is (:func:`ghost_hits`). And a swap may show only once a later one is
undone: a track's look after a crossing is taken over the next seconds, which may hold a second swap
(the same clip at 5.6-7.0 s: 19's track took 18's box where 18's track ended, then crossed two
team-mates and their tracks swapped too; the look after the first crossing was a third player's).
So the crossings of the tracks a swap changed are judged again, ``untangle_passes`` times at most.
A crossing with a ghost is undone from where the ghost's track was lost (the other track holds its
player from then on), not from its middle.
And the tracker swaps players whose boxes overlap by less than 0.3 (+100 q-colours at 7.2 s), so
``cross_iou`` is 0.25 (was 0.3): 0.2-0.25 gave the figures below; 0.28-0.3 missed that swap, 0.15-0.18
made a wrong one (+200 q-default at 5.4 s, where the after-look already held the later swap: back to
1.77 % / 30.7 %). Measured on the quality set, +100 and +200 (the tracker's raw output
re-linked; tracks IDF1, identity IDF1, screen-time error per player mean / max under the default
preset, players over 3 %):

* +200: 0.874, 0.935, 1.96 % / 32.3 %, 6 -> 0.892, 0.955, 1.33 % / 8.2 %, 4 (q-default's 19
  +32.3 % and 18 -11.7 % -> under 3 %); ghosts alone (one pass) 0.879, 0.936, 1.77 % / 30.7 %, 5;
  passes alone (no ghosts) 0.886, 0.948, 1.60 % / 11.7 %, 6; ``ghost_s`` 0.3 the same, 1.0 back to
  1.77 % / 30.7 % (a ghost held on too long crosses players who only pass by); 2 passes as 3;
* +100: tracks IDF1 0.813 -> 0.827, identity IDF1 0.932 -> 0.946 (``cross_iou`` and ghosts: the
  q-colours swap), screen time unchanged (1.98 % / 19.6 %, 10); the quality set: tracks MOTA 0.906
  -> 0.907, the rest unchanged (0.958, 1.57 % / 16.3 %, 4); chunked IDF1 follows the one-piece
  figures on all three;
* every swap made on the three sets is right by the truth (16; gains 6.5-25.4 ΔE); crossings the
  tracker had kept gained at most 2.5 by a swap;
* cost on 10 min of footage (a clip's raw output tiled 30 times): untangle 0.4 -> 0.55 s (959
  crossing judgements instead of 450), link_tracks 2.0-2.3 -> 2.2-2.5 s (CPU time, shared machine).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

if TYPE_CHECKING:
    from tasks.link import LinkParams


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of two sets of xyxy boxes."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    area = np.prod(a[:, 2:] - a[:, :2], axis=1)[:, None] + np.prod(b[:, 2:] - b[:, :2], axis=1)[None, :]
    return np.asarray(inter / np.maximum(area - inter, 1e-9))


@dataclass(frozen=True)
class Crossing:
    """Two tracks whose boxes overlapped by ``cross_iou`` or more from ``start_s`` to ``end_s`` (or
    one's ghost and the other, :func:`ghost_hits`); the rows of each at the last such frame (their ids
    there are the tracks' current ids)."""

    start_s: float
    end_s: float
    rows: tuple[int, int]
    lost_s: float = float("inf")  # with a ghost: when its track was last seen

    @property
    def cut_s(self) -> float:
        """Where a swap is undone: the middle of the crossing, or where a ghost's track was lost
        (the other track was on its player from then on)."""
        return min((self.start_s + self.end_s) / 2, self.lost_s)


def crossings(
    frames: np.ndarray, times: np.ndarray, ids: np.ndarray, boxes: np.ndarray, params: LinkParams
) -> tuple[list[Crossing], np.ndarray]:
    """The crossings of one angle's tracked rows (episodes of one pair, apart by less than
    ``crossing_gap_s``), and each row's largest overlap with another box of its frame. A track the
    tracker has lost still crosses the others for ``ghost_s`` at its last box, moved on at its last
    velocity (:func:`ghost_hits`)."""
    crowd = np.zeros(len(frames))
    hits: list[tuple[float, float, int, int]] = []  # (time, start, row a, row b)
    order = np.argsort(frames, kind="stable")
    bounds = np.flatnonzero(np.diff(frames[order])) + 1
    for rows in np.split(order, bounds):
        if len(rows) < 2:
            continue
        iou = _iou(boxes[rows], boxes[rows])
        np.fill_diagonal(iou, 0.0)
        crowd[rows] = iou.max(axis=1)
        t = float(times[rows[0]])
        pairs = zip(*np.nonzero(np.triu(iou >= params.cross_iou)), strict=True)
        hits += [(t, t, int(rows[i]), int(rows[j])) for i, j in pairs]
    if params.ghost_s > 0:
        hits += ghost_hits(times, ids, boxes, params)
    episodes: dict[tuple[int, int], list[list[float | int]]] = {}
    for t, start, a, b in sorted(hits):
        pair = (int(min(ids[a], ids[b])), int(max(ids[a], ids[b])))
        runs = episodes.setdefault(pair, [])
        lost = start if start < t else np.inf  # a ghost's hit: its track was last seen at start
        if runs and start - float(runs[-1][1]) <= params.crossing_gap_s:
            runs[-1][1:] = [max(t, float(runs[-1][1])), a, b, min(lost, float(runs[-1][4]))]
        else:
            runs.append([start, t, a, b, lost])
    found = [
        Crossing(float(r[0]), float(r[1]), (int(r[2]), int(r[3])), float(r[4]))
        for runs in episodes.values()
        for r in runs
    ]
    return sorted(found, key=lambda c: (c.end_s, c.start_s)), crowd


def ghost_hits(
    times: np.ndarray, ids: np.ndarray, boxes: np.ndarray, params: LinkParams
) -> list[tuple[float, float, int, int]]:
    """Where a lost track's box, carried on at its last velocity for up to ``ghost_s`` (until the
    track is seen again), overlaps another track's box by ``cross_iou``: (time, the lost track's
    last time, its last row, the other row). The tracker misses a player hidden behind another, and
    the track that goes on where he was lost may be on him."""
    stamps = np.unique(times)
    if len(stamps) < 2:
        return []
    step = float(np.diff(stamps).min())
    by_time = np.argsort(times, kind="stable")
    sorted_times = times[by_time]
    by_track = np.lexsort((times, ids))
    same = ids[by_track][1:] == ids[by_track][:-1]
    track_times = times[by_track]
    follows = np.append(np.where(same, track_times[1:], np.inf), np.inf)  # next time on the same track
    precedes = np.insert(np.where(same, track_times[:-1], -np.inf), 0, -np.inf)  # previous time
    out: list[tuple[float, float, int, int]] = []
    for k in np.flatnonzero(follows > track_times + 1.5 * step):
        g = int(by_track[k])
        t0 = float(times[g])
        until = min(t0 + params.ghost_s, float(follows[k]) - step / 2)
        lo = int(np.searchsorted(sorted_times, t0 + step / 2))
        hi = int(np.searchsorted(sorted_times, until, side="right"))
        if lo >= hi:
            continue
        rows = by_time[lo:hi]
        rows = rows[ids[rows] != ids[g]]
        velocity = np.zeros(4)
        if 0 < t0 - float(precedes[k]) <= params.ghost_s:
            velocity = (boxes[g] - boxes[int(by_track[k - 1])]) / (t0 - float(precedes[k]))
        moved = boxes[g] + velocity * (times[rows] - t0)[:, None]
        seen = boxes[rows]
        inter = np.prod(
            np.clip(np.minimum(seen[:, 2:], moved[:, 2:]) - np.maximum(seen[:, :2], moved[:, :2]), 0, None),
            axis=1,
        )
        union = (
            np.prod(seen[:, 2:] - seen[:, :2], axis=1) + np.prod(moved[:, 2:] - moved[:, :2], axis=1) - inter
        )
        out += [
            (float(times[r]), t0, g, int(r))
            for r in rows[inter / np.maximum(union, 1e-9) >= params.cross_iou]
        ]
    return out


def side_look(looks: np.ndarray, mask: np.ndarray, min_rows: int) -> np.ndarray | None:
    """The median look of the rows in ``mask`` that have one, or None with fewer than ``min_rows``."""
    seen = looks[mask]
    seen = seen[~np.isnan(seen[:, 0])]
    return np.median(seen, axis=0) if len(seen) >= min_rows else None


def swap_gain(
    ids: np.ndarray,
    times: np.ndarray,
    looks: np.ndarray,
    clean: np.ndarray,
    crossing: Crossing,
    params: LinkParams,
) -> float:
    """How much closer the looks after a crossing match the looks before it if the two tracks are
    swapped there (NaN when it cannot be told: a track without enough clean rows before, or neither
    with enough after). When only one track goes on after the crossing, its look after is compared
    with both looks before. ``times`` must be sorted."""
    a, b = (int(ids[r]) for r in crossing.rows)
    w = params.look_window_s
    lo = int(np.searchsorted(times, crossing.start_s - w, side="left"))
    hi = int(np.searchsorted(times, crossing.end_s + w, side="right"))
    ids, times, looks, clean = ids[lo:hi], times[lo:hi], looks[lo:hi], clean[lo:hi]
    before = (times < crossing.start_s) & clean
    after = (times > crossing.end_s) & clean
    a0, b0 = (side_look(looks, (ids == t) & before, params.look_min_rows) for t in (a, b))
    a1, b1 = (side_look(looks, (ids == t) & after, params.look_min_rows) for t in (a, b))
    if a0 is None or b0 is None:
        return float("nan")
    d = np.linalg.norm
    if a1 is not None and b1 is not None:  # per look compared, as with one
        return float(d(a0 - a1) + d(b0 - b1) - d(a0 - b1) - d(b0 - a1)) / 2
    if a1 is not None:
        return float(d(a0 - a1) - d(b0 - a1))
    if b1 is not None:
        return float(d(b0 - b1) - d(a0 - b1))
    return float("nan")


def untangle(tracked: pl.DataFrame, looks: np.ndarray, params: LinkParams) -> np.ndarray:
    """The track ids of ``tracked`` (one angle's tracked rows) with the tracks swapped back after
    every crossing whose looks say the tracker swapped the two players there."""
    order = np.argsort(tracked["time_s"].to_numpy(), kind="stable")
    frames = tracked["frame"].to_numpy()[order]
    times = tracked["time_s"].to_numpy().astype(np.float64)[order]
    ids = tracked["track_id"].to_numpy()[order]
    boxes = tracked.select("x1", "y1", "x2", "y2").to_numpy().astype(np.float64)[order]
    looks = looks[order]
    found, crowd = crossings(frames, times, ids, boxes, params)
    clean = crowd < params.clean_iou
    judged: set[int] | None = None  # after the first pass: the tracks a swap changed
    for _ in range(params.untangle_passes):
        swapped: set[int] = set()
        for crossing in found:
            a, b = (int(ids[r]) for r in crossing.rows)
            if judged is not None and a not in judged and b not in judged:
                continue  # nothing changed near it since it was last judged
            gain = swap_gain(ids, times, looks, clean, crossing, params)
            if not gain > params.swap_margin:
                continue
            cut = crossing.cut_s
            tail_a, tail_b = (ids == a) & (times > cut), (ids == b) & (times > cut)
            ids[tail_a], ids[tail_b] = b, a
            swapped |= {a, b}
        if not swapped:
            break
        judged = swapped
    out = np.empty_like(ids)
    out[order] = ids
    return out
