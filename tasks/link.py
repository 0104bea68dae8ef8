"""link: join a player's track fragments across short gaps, so one global track id follows him.

The tracker lets go of a player it has missed for a while (hidden behind another, or missed for a few
samples while he runs: a lost track's Kalman prediction drifts on at his last velocity), and when he
is detected again he starts a new track. After stitch has given every track a global id, this step
links a track that *ends* at ``t1`` to one that *starts* at ``t2`` (same angle,
``0 < t2 - t1 <= max_gap_s``) when

* the jump is physically plausible: the distance from the first track's last foot point (bottom
  centre of the box) to the second's first is at most ``slack_heights + speed_heights_s x gap``
  box heights, and the box height changes by less than ``max_log_height_ratio``;
* the shirt agrees: the CIELAB torso colour (median of embed's appearance vectors over the last /
  first ``colour_rows`` rows, from detect_track's ``appearance`` parts) differs by at most
  ``colour_gate`` ΔE.

The links are chosen together (Hungarian assignment of ends to starts, cost = jump / allowance,
leaving an end unlinked costs 1, as :func:`tasks.cluster_fragments.merge_fragments` does for
identities), and a chosen link is kept only when no other plausible link of its end or its start
costs less than ``margin`` more: team-mates share a shirt, so between them only the motion decides,
and an ambiguous pair is left apart (a wrong link here would also merge two players' identities).
Without appearance vectors (episodes, the local runner) nothing is linked.

Measured on the quality set (``bench/tracking_quality.py``'s clips, tracked once and cached; ends x
starts with the truth's person of each track):

* the true links had gaps of 0.2-4.4 s and jumps of 0.3-1.7 heights; the same-shirt wrong
  candidates within reach were 0.5-1.5 heights away, mostly after longer gaps; true links'
  shirts differed by ≤ 8 ΔE, the other team's by ≥ 27 (shorts: up to 30 ΔE within one person
  — the band catches grass and legs — so they are not compared);
* compensating the camera's pan by the median shift of the other tracks (``pan``) made links worse
  (10 right, 3 wrong instead of 10, 1): over seconds the others' own motion dominates it; so did
  extrapolating the first track's velocity over the gap (true jumps 0.3 -> 9 heights);
* ``max_gap_s`` 3.5 -> 4.5: 10 right + 1 wrong -> 12 right + 0 wrong links, tracks IDF1 0.832 ->
  0.838 (5.0: 0.832); ``speed_heights_s`` 0.5-0.9, ``slack_heights`` 0.8-1.2 and
  ``colour_gate`` 9-12 changed nothing; ``margin`` 0.2 -> 0: IDF1 +0.002 but 2 wrong links and
  chunked - whole IDF1 -0.005 -> -0.011.

**Crossings** (before linking): tracks the tracker swapped where two players crossed, or where one ran
hidden behind another, are swapped back (:mod:`tasks.untangle`).

**Re-finds.** After linking, a track is cut where the tracker re-found it on someone else
(:func:`refound`). The tracker keeps a lost track for seconds and may pick it up again on a
team-mate near where its prediction drifted (q-colours: player 7 lost at 13.0 s, the track back on
player 8 at 16.8 s, while 7 went on as another track from 14.6 s). A change of look across the gap
alone does not tell: one player's looks either side of a 1-3 s gap differed by up to 22.5 ΔE on the
quality sets (few, partly hidden rows), two players' by 20-28 (cutting at a look change of 18
alone helped the quality set and +100 but added a player on +200). What does is a *rival*: another
track that starts during the gap or later in the track's life, within the sprint allowance of
where the track was lost (``slack_heights + speed_heights_s x gap``), and looks like the track
before the gap. A gap of over ``split_gap_s`` is cut when such a rival's opening look (its first
``look_window_s``) is nearer the look before the gap than the look after it is, by
``split_margin``; the rows after the gap take a new id (the cluster step then chains each part to
its own player). On the quality set and the same specs re-seeded (+100, +200) it cuts two tracks,
both right (looks across the gap 20.0 and 20.3 ΔE apart, the rivals 4.4 and 5.2 from the look
before): q-colours' player 8 screen-time error (default preset) 17.6 % -> under 3 %, mean 1.91 % ->
1.61 %, identity IDF1 0.954 -> 0.956; re-seeded (+100) q-tight-shaky's worst 39.3 % -> 23.8 %, mean
4.32 % -> 4.07 %, IDF1 0.906 -> 0.909; +200 unchanged.

**Number switches.** Last, a track is cut wherever the jersey numbers read on its boxes switch from
one number to another (:func:`cut_number_switches`); the part after each cut takes a new id. Two
team-mates who look alike are told apart by their numbers alone, and where they ran together for
seconds the tracker's boxes jumped between them, so neither the crossings above (looks) nor a gap
give the swap away. A read counts when the reader is ``number_min_conf`` (0.9) sure of it; a cut
needs ``number_min_reads`` (2) such reads on each side, ``number_share`` (70 %) of them one number
(:func:`tasks.cluster_fragments.label_switches`: the best single cut, then each side again; where
no single cut divides a part, a block of 10 or more reads, 90 % one number, inside reads 90 % of
another is cut out: the tracker swapped two players and later swapped them back) — the
thresholds :mod:`tasks.cluster_game` reads a track's number with. Measured on the quality set at
20 s (tuned / +100 / +200) and 60 s (tuned / +100), cached tracker output, against the truth:

* players over 3 % of the clip (default preset): 2 / 8 / 5 -> 2 / 6 / 4 at 20 s (per player, 3
  better by more than 0.5 point — 7.5 -> 0.0, 8.0 -> 0.5, 7.5 -> 0.0 % — none worse), 13 / 17 -> 5 /
  9 at 60 s (30 better, 6 worse: a track that held two players whom one identity happened to cover is
  now two, and where one of them was inside the other's track for seconds those seconds go with the
  other; the worst 2.6 -> 17.3 %, a player who took a team-mate's track for 10 s and back again, one
  number between two of another, which a best single cut does not find);
* identity IDF1 0.962 / 0.950 / 0.960 -> 0.962 / 0.952 / 0.966 and 0.920 / 0.924 -> 0.953 / 0.945;
  mean error per player 1.13 / 1.57 / 1.12 % -> 1.13 / 1.35 / 1.01 % and 3.45 / 2.36 % -> 0.97 /
  1.42 %; player identities within ±10 % of the truth on 15 of 15 and 9 of 10 clips (+100
  q-tight-shaky at 60 s: 24 for 21, was 23; back to 23, and 60 s 7 over 3 % on +100, once cluster
  stopped giving the short parts these cuts leave to a team-mate as his shadow, see
  :mod:`tasks.cluster_game`);
* a cut needing 3 or 4 reads a side: 20 s the same, 60 s 6 / 11 over 3 %; a 0.8 share: +100 8 over;
  a best segmentation of the reads (fewest reads disagreeing with their part + 1.5 per cut), which
  finds one number between two of another: 20 s 3 / 7 / 4 over, 60 s 6 / 8 (cluster samples a
  track's reads more sparsely, and did not chain the short parts it makes); using the numbers to
  judge the crossings above as well: one crossing on the three sets judged otherwise, wrongly;
* the block inside another number's reads (added after the rest, and after cluster's shadow
  amendment): on +100 at 60 s the player who took a team-mate's track for 10 s and back 17.3 ->
  0.3 %, that team-mate 0.5 -> 4.9 % (2 s of him inside the first player's tracks, which the uncut
  track had covered), mean 1.25 -> 1.09 %, identity IDF1 0.949 -> 0.951; the other four sets
  unchanged; a best segmentation of the reads instead (above) cut short blocks of crowded reads too;
* cost: 0.04 s CPU per minute of footage (reading the numbers off the appearance parts and
  cutting; ``link_tracks`` as a whole 0.23 s), next to detect_track's ~24 s.

"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import polars as pl
from scipy.optimize import linear_sum_assignment

from tasks.appearance import APPEARANCE_LAYOUT, number_read
from tasks.cluster_fragments import label_switches
from tasks.untangle import crossings, side_look, untangle

APPEARANCE_KEY = ("angle", "frame", "x1", "y1", "x2", "y2")
KIT = slice(0, 6)  # torso and shorts CIELAB medians in embed's appearance vector (APPEARANCE_LAYOUT)


@dataclass(frozen=True)
class LinkParams:
    """Thresholds of the linking step (what each measured: this module's docstring, and for the
    crossings :mod:`tasks.untangle`'s)."""

    max_gap_s: float = 4.5  # longer than the tracker keeps a lost track (DetectParams.track_buffer_s, 2.5 s)
    slack_heights: float = 0.8
    speed_heights_s: float = 0.6
    max_log_height_ratio: float = 0.35
    colour_gate: float = 12.0
    colour_rows: int = 5
    min_common_tracks: int = 3  # pan: the other tracks a camera shift is measured on
    pan: bool = False  # measured worse (module docstring)
    margin: float = 0.2
    cross_iou: float = 0.25  # two boxes overlapping this much: the players cross (the tracker may swap them)
    crossing_gap_s: float = 1.0  # overlaps of one pair closer than this in time are one crossing
    clean_iou: float = 0.1  # a box overlapping another less than this shows one player's colours
    look_window_s: float = 3.0  # rows compared on each side of a crossing or a gap
    look_min_rows: int = 3
    split_gap_s: float = 1.0  # a track unseen this long may have been re-found on someone else
    split_margin: float = 5.0  # how much nearer a rival continuation must look (ΔE)
    swap_margin: float = 5.0  # look distance a swap must save, per look compared after the crossing
    untangle_passes: int = 3  # judging again the crossings of tracks a swap changed (tasks/untangle.py)
    ghost_s: float = 0.5  # a lost track still crosses the others this long at its predicted box
    # a track is cut where its jersey-number reads switch (as ClusterParams' number_* fields read them)
    number_min_conf: float = 0.9  # a read this confident is evidence
    number_min_reads: int = 2  # confident reads each side of a cut needs
    number_share: float = 0.7  # share of a side's confident reads its number needs


@dataclass(frozen=True)
class TrackEnds:
    """One track's first and last rows: what a link compares."""

    angle: str
    track_id: int
    start_s: float
    end_s: float
    first_frame: int
    last_frame: int
    first_box: np.ndarray
    last_box: np.ndarray
    kit_start: np.ndarray | None
    kit_end: np.ndarray | None


def foot(box: np.ndarray) -> np.ndarray:
    """The bottom centre of an xyxy box (where the player stands)."""
    return np.array([(box[0] + box[2]) / 2, box[3]], np.float64)


def track_ends(tracked: pl.DataFrame, appearance: pl.DataFrame, colour_rows: int) -> list[TrackEnds]:
    """The ends of every track of ``tracked`` (rows with a track id), with their kit colours."""
    key = list(APPEARANCE_KEY)
    vectors = appearance.select(*key, "vector").unique(subset=key, keep="first")
    rows = tracked.join(vectors, on=key, how="left").sort("angle", "track_id", "frame")
    out = []
    for (angle, track_id), group in rows.partition_by("angle", "track_id", as_dict=True).items():
        boxes = group.select("x1", "y1", "x2", "y2").to_numpy().astype(np.float64)
        kits = [np.asarray(v[KIT], np.float64) for v in group["vector"].to_list() if v is not None and len(v)]
        out.append(
            TrackEnds(
                angle=str(angle),
                track_id=int(track_id),
                start_s=float(group["time_s"][0]),
                end_s=float(group["time_s"][-1]),
                first_frame=int(group["frame"][0]),
                last_frame=int(group["frame"][-1]),
                first_box=boxes[0],
                last_box=boxes[-1],
                kit_start=np.median(kits[:colour_rows], axis=0) if kits else None,
                kit_end=np.median(kits[-colour_rows:], axis=0) if kits else None,
            )
        )
    return out


def common_shift(
    positions: dict[int, dict[int, np.ndarray]], frame_a: int, frame_b: int, skip: set[int], at_least: int
) -> np.ndarray:
    """Median foot-point shift from ``frame_a`` to ``frame_b`` of the tracks seen at both (camera pan)."""
    shifts = [
        seen[frame_b] - seen[frame_a]
        for track, seen in positions.items()
        if track not in skip and frame_a in seen and frame_b in seen
    ]
    return np.median(shifts, axis=0) if len(shifts) >= at_least else np.zeros(2)


def kit_distance(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """The shirt colour difference, ΔE (inf when a colour is unknown)."""
    if a is None or b is None:
        return float("inf")
    return float(np.linalg.norm(a[:3] - b[:3]))


def link_cost(a: TrackEnds, b: TrackEnds, shift: np.ndarray, params: LinkParams) -> float | None:
    """Cost of ``b`` continuing ``a`` in 0..1, or None when the link is implausible."""
    gap = b.start_s - a.end_s
    if a.angle != b.angle or not 0 < gap <= params.max_gap_s:
        return None
    height_a, height_b = a.last_box[3] - a.last_box[1], b.first_box[3] - b.first_box[1]
    if min(height_a, height_b) <= 0:
        return None
    if abs(np.log(height_b / height_a)) > params.max_log_height_ratio:
        return None
    colour = kit_distance(a.kit_end, b.kit_start)
    if colour > params.colour_gate:
        return None
    jump = float(np.linalg.norm(foot(b.first_box) - foot(a.last_box) - shift)) / ((height_a + height_b) / 2)
    allowance = params.slack_heights + params.speed_heights_s * gap
    if jump > allowance:
        return None
    return jump / allowance


def choose_links(
    ends: list[TrackEnds], positions: dict[int, dict[int, np.ndarray]], params: LinkParams
) -> dict[int, int]:
    """``{later track: earlier track}`` for the links chosen together (one angle's tracks)."""
    n = len(ends)
    if n < 2:
        return {}
    cost = np.full((n, 2 * n), 1e6)
    cost[np.arange(n), n + np.arange(n)] = 1.0  # leaving an end unlinked
    for i, a in enumerate(ends):
        for j, b in enumerate(ends):
            if i == j or not 0 < b.start_s - a.end_s <= params.max_gap_s:
                continue
            shift = (
                common_shift(
                    positions, a.last_frame, b.first_frame, {a.track_id, b.track_id}, params.min_common_tracks
                )
                if params.pan
                else np.zeros(2)
            )
            value = link_cost(a, b, shift, params)
            if value is not None:
                cost[i, j] = value
    rows, cols = linear_sum_assignment(cost)
    chosen = [(r, c) for r, c in zip(rows, cols, strict=True) if c < n and cost[r, c] <= 1.0]
    keep = []
    for r, c in chosen:
        others = np.concatenate([np.delete(cost[r, :n], c), np.delete(cost[:n, c], r)])
        others = others[others <= 1.0]
        if not len(others) or others.min() >= cost[r, c] + params.margin:
            keep.append((r, c))
    return {ends[c].track_id: ends[r].track_id for r, c in keep}


def link_tracks(
    detections: pl.DataFrame, appearance: pl.DataFrame | None, params: LinkParams = LinkParams()
) -> pl.DataFrame:
    """``detections`` (global ``track_id``) with each chain of linked tracks under its first track's id."""
    if appearance is None or appearance.is_empty() or detections.is_empty():
        return detections
    vectors = angle_vectors(detections, appearance)  # per row, and linking only changes track ids
    looks = {angle: looks_of(rows) for angle, rows in vectors.items()}
    numbers = {angle: numbers_of(rows, params.number_min_conf) for angle, rows in vectors.items()}
    untangled = untangle_tracks(detections, looks, params)
    refound_cut = split_tracks(join_tracks(untangled, appearance, params), looks, params)
    return cut_number_switches(refound_cut, numbers, params)


def join_tracks(detections: pl.DataFrame, appearance: pl.DataFrame, params: LinkParams) -> pl.DataFrame:
    """The links of :func:`link_tracks`: each chain of linked tracks under its first track's id."""
    tracked = detections.filter(pl.col("track_id").is_not_null())
    successor_of: dict[int, int] = {}
    for (angle,), rows in tracked.partition_by("angle", as_dict=True).items():
        ends = track_ends(rows, appearance.filter(pl.col("angle") == angle), params.colour_rows)
        positions: dict[int, dict[int, np.ndarray]] = {}
        for row in rows.select("track_id", "frame", "x1", "y2", "x2").iter_rows():
            positions.setdefault(row[0], {})[row[1]] = np.array([(row[2] + row[4]) / 2, row[3]])
        successor_of.update(choose_links(ends, positions, params))
    if not successor_of:
        return detections
    root: dict[int, int] = {}
    for later in sorted(successor_of, key=lambda t: t):
        earlier = successor_of[later]
        root[later] = root.get(earlier, earlier)
    # resolve chains whatever the order of ids (a later id can precede an earlier one)
    for later in list(root):
        seen = root[later]
        while seen in successor_of:
            seen = successor_of[seen]
        root[later] = seen
    mapping = pl.DataFrame(
        {"track_id": list(root), "linked": list(root.values())},
        schema={"track_id": pl.Int64, "linked": pl.Int64},
    )
    return (
        detections.join(mapping, on="track_id", how="left", maintain_order="left")
        .with_columns(track_id=pl.coalesce("linked", "track_id"))
        .drop("linked")
    )


START_GATE = 0.6  # box heights a player moves at most between two analysed frames (at 5 fps)
IMPLAUSIBLE = 1e3  # a claim's cost outside the gate


def claim_starts(
    tracked: pl.DataFrame, gate: float = START_GATE, max_size_ratio: float = 1.5
) -> pl.DataFrame:
    """Give each track the detection it was born from.

    ultralytics' trackers confirm a new track only when its next detection matches it, and report
    it from then on: the detection that started it, one analysed frame earlier, stays without a
    track id (a missed person for the evaluation and for screen time). Every track's first row
    claims the untracked detection of the previous analysed frame that sits where the track starts
    (centre within ``gate`` box heights, height within ``max_size_ratio``), one-to-one (Hungarian,
    every pair outside the gate at one equal cost: the assignment minimises the summed cost, and with
    the raw distances it would give a plausible claim up to push two implausible ones apart; two
    stretches starting together, one claim in reach of one of them, then claimed nothing). The
    analysed frames of an angle are a grid (:func:`frame_steps`).

    This runs after :func:`link_tracks`: claimed rows move a track's start one frame earlier and
    would change the links' jumps. Measured on the quality set (tracks, mean of 5 clips): MOTA
    0.900 -> 0.907, IDF1 0.854 -> 0.853; claiming inside detect_track, before linking: MOTA 0.908
    but IDF1 0.848 (q-tight-shaky 0.752 -> 0.724); gates 0.3 / 0.45 / 0.6 differed by < 0.005 MOTA.
    The equal cost outside the gate (was: the distances) on the clip sets at 20 s (tuned / +100 /
    +200) and 60 s (tuned / +100): screen-time error per player mean 1.13 / 1.35 / 1.01 % -> 1.11 /
    1.35 / 0.95 % and 0.96 / 1.25 % -> 0.95 / 1.25 %, 3 players better (4.3 -> 0.3 %: a player
    running in at the picture's edge, detected three frames before his track started), one worse
    (1.7 -> 2.4 %), players over 3 % 12 -> 11 of 191 at 20 s. Gates of 0.8 and 1.0 with it gave 15
    and 13 over 3 % at 20 s; moving each stretch's first box back by its first step's motion before
    gating gave 11 -> 12 at 20 s and 12 -> 9 at 60 s, 43 players better and 36 worse: not done.
    """
    if tracked.is_empty() or tracked["track_id"].null_count() == 0:
        return tracked
    indexed = tracked.with_row_index("_row")
    claimed: dict[int, int] = {}
    steps = frame_steps(tracked)
    for (angle,), rows in indexed.partition_by("angle", as_dict=True).items():
        if angle not in steps:
            continue
        step = steps[angle]
        firsts = (
            rows.filter(pl.col("track_id").is_not_null())
            .sort("frame")
            .group_by("track_id", maintain_order=True)
            .first()
            .with_columns(prev=pl.col("frame") - step)
        )
        loose = rows.filter(pl.col("track_id").is_null())
        for (frame,), starts in firsts.partition_by("prev", as_dict=True).items():
            candidates = loose.filter(pl.col("frame") == frame)
            if candidates.is_empty():
                continue
            cost = _start_cost(starts, candidates, gate, max_size_ratio)
            cost[cost >= 1.0] = IMPLAUSIBLE  # never traded against a plausible claim
            for r, c in zip(*linear_sum_assignment(cost), strict=True):
                if cost[r, c] < 1.0:
                    claimed[int(candidates["_row"][int(c)])] = int(starts["track_id"][int(r)])
    if not claimed:
        return tracked
    ids = tracked["track_id"].to_list()
    for row, track in claimed.items():
        ids[row] = track
    return tracked.with_columns(track_id=pl.Series(ids, dtype=tracked["track_id"].dtype))


def frame_steps(tracked: pl.DataFrame) -> dict[str, int]:
    """Each angle's step between analysed frames: they are a grid, its step the gcd of the frame gaps
    seen (angles seen on fewer than two frames have none)."""
    steps: dict[str, int] = {}
    for (angle,), rows in tracked.partition_by("angle", as_dict=True).items():
        frames = np.unique(rows["frame"].to_numpy())
        if len(frames) >= 2:
            steps[str(angle)] = int(np.gcd.reduce(np.diff(frames)))
    return steps


def _start_cost(starts: pl.DataFrame, candidates: pl.DataFrame, gate: float, max_ratio: float) -> np.ndarray:
    """(starts x candidates) centre distance in gate units; >= 1 where the pair is not plausible."""
    a = starts.select("x1", "y1", "x2", "y2").to_numpy().astype(np.float64)
    b = candidates.select("x1", "y1", "x2", "y2").to_numpy().astype(np.float64)
    ha, hb = (a[:, 3] - a[:, 1])[:, None], (b[:, 3] - b[:, 1])[None, :]
    height = np.maximum(np.maximum(ha, hb), 1e-6)
    ca, cb = (a[:, None, :2] + a[:, None, 2:]) / 2, (b[None, :, :2] + b[None, :, 2:]) / 2
    cost = np.linalg.norm(ca - cb, axis=2) / height / gate
    ratio = np.maximum(ha, hb) / np.maximum(np.minimum(ha, hb), 1e-6)
    return np.asarray(np.where(ratio > max_ratio, 1e3, cost))


LOOK_BANDS = ("torso_lab", "shorts_lab", "skin_lab", "hair_lab")


def row_vectors(tracked: pl.DataFrame, appearance: pl.DataFrame) -> list[list[float] | None]:
    """Per row of ``tracked``: the appearance vector of its box (None where it has none)."""
    key = list(APPEARANCE_KEY)
    vectors = appearance.select(*key, "vector").unique(subset=key, keep="first")
    joined = tracked.select(key).with_row_index("_i").join(vectors, on=key, how="left").sort("_i")
    return list(joined["vector"].to_list())


def looks_of(vectors: list[list[float] | None]) -> np.ndarray:
    """Per vector (:func:`row_vectors`): its look (torso, shorts, skin and hair CIELAB, lightness
    halved), NaN where the box had no appearance vector."""
    dims = np.concatenate(
        [np.arange(APPEARANCE_LAYOUT[b].start, APPEARANCE_LAYOUT[b].stop) for b in LOOK_BANDS]
    )
    weight = np.tile([0.5, 1.0, 1.0], len(LOOK_BANDS))
    out = np.full((len(vectors), len(dims)), np.nan)
    for i, v in enumerate(vectors):
        if v is not None and len(v) > dims.max():
            out[i] = np.asarray(v, np.float64)[dims] * weight
    return out


def numbers_of(vectors: list[list[float] | None], min_conf: float) -> np.ndarray:
    """Per vector (:func:`row_vectors`): the jersey number read on its box with ``min_conf`` or more
    (:func:`tasks.appearance.number_read`), 0 where none was."""
    return np.array([number_read(v, min_conf) or 0 for v in vectors], np.int64)


def angle_vectors(detections: pl.DataFrame, appearance: pl.DataFrame) -> dict[str, list[list[float] | None]]:
    """Each angle's :func:`row_vectors` of its tracked rows (in ``detections``' order)."""
    tracked = detections.filter(pl.col("track_id").is_not_null())
    return {
        str(angle): row_vectors(rows, appearance.filter(pl.col("angle") == angle))
        for (angle,), rows in tracked.partition_by("angle", as_dict=True).items()
    }


def relabel_per_angle(
    detections: pl.DataFrame,
    looks: dict[str, np.ndarray],
    relabel: Callable[[pl.DataFrame, np.ndarray], np.ndarray],
) -> pl.DataFrame:
    """``detections`` with each angle's tracked rows under the track ids ``relabel(rows, looks)``
    gives them (``looks``: per-row values of each angle's tracked rows of ``detections``, such as
    :func:`looks_of` their :func:`angle_vectors`, or of a table that differs from it only in track
    ids: the rows that have one are the same)."""
    indexed = detections.with_row_index("_row")
    ids = detections["track_id"].to_list()
    tracked = indexed.filter(pl.col("track_id").is_not_null())
    for (angle,), rows in tracked.partition_by("angle", as_dict=True).items():
        for row, track in zip(rows["_row"].to_list(), relabel(rows, looks[str(angle)]).tolist(), strict=True):
            ids[row] = track
    return detections.with_columns(track_id=pl.Series(ids, dtype=detections["track_id"].dtype))


def untangle_tracks(
    detections: pl.DataFrame, looks: dict[str, np.ndarray], params: LinkParams
) -> pl.DataFrame:
    """``detections`` with the tracks swapped back where the tracker swapped two crossing players
    (:func:`tasks.untangle.untangle`, per angle)."""
    return relabel_per_angle(detections, looks, lambda rows, seen: untangle(rows, seen, params))


def split_tracks(detections: pl.DataFrame, looks: dict[str, np.ndarray], params: LinkParams) -> pl.DataFrame:
    """``detections`` with a track cut, the part after the cut under a new id, where the tracker
    re-found it on someone else (:func:`refound`, per angle)."""
    next_id = int(detections["track_id"].drop_nulls().to_numpy().max(initial=0)) + 1

    def cut(rows: pl.DataFrame, seen: np.ndarray) -> np.ndarray:
        nonlocal next_id
        new = refound(rows, seen, params, next_id)
        next_id = max(next_id, int(new.max(initial=0)) + 1)
        return new

    return relabel_per_angle(detections, looks, cut)


def cut_number_switches(
    detections: pl.DataFrame, numbers: dict[str, np.ndarray], params: LinkParams
) -> pl.DataFrame:
    """``detections`` with each track cut wherever its confident jersey-number reads switch from
    one number to another (``numbers``: :func:`numbers_of` each angle's rows); each part after a cut
    takes a new id."""
    next_id = int(detections["track_id"].drop_nulls().to_numpy().max(initial=0)) + 1

    def cut(rows: pl.DataFrame, reads: np.ndarray) -> np.ndarray:
        nonlocal next_id
        ids = rows["track_id"].to_numpy()
        times = rows["time_s"].to_numpy().astype(np.float64)
        new = ids.copy()
        for track in np.unique(ids):
            mine = np.flatnonzero(ids == track)
            read = mine[reads[mine] > 0]
            labels = [str(n) for n in reads[read]]
            for switch in label_switches(times[read], labels, params.number_min_reads, params.number_share):
                new[mine[times[mine] > switch]] = next_id
                next_id += 1
        return new

    return relabel_per_angle(detections, numbers, cut)


def refound(tracked: pl.DataFrame, looks: np.ndarray, params: LinkParams, next_id: int) -> np.ndarray:
    """The track ids of ``tracked`` (one angle's tracked rows), each track cut at every gap of over
    ``split_gap_s`` after which it holds someone else: its look after the gap differs from its look
    before by more than the look of a *rival* — another track that starts during the gap or later
    in the track's life, within a sprint of where the track was lost — by ``split_margin``. The
    rows after such a gap take a new id from ``next_id`` on."""
    order = np.argsort(tracked["time_s"].to_numpy(), kind="stable")
    times = tracked["time_s"].to_numpy().astype(np.float64)[order]
    ids = tracked["track_id"].to_numpy()[order]
    boxes = tracked.select("x1", "y1", "x2", "y2").to_numpy().astype(np.float64)[order]
    looks = looks[order]
    _, crowd = crossings(tracked["frame"].to_numpy()[order], times, ids, boxes, replace(params, ghost_s=0.0))
    clean = crowd < params.clean_iou
    w = params.look_window_s

    def look(rows: np.ndarray) -> np.ndarray | None:
        return side_look(looks[rows], clean[rows], params.look_min_rows)

    by_track = np.argsort(ids, kind="stable")  # rows of each track, in time order
    bounds = np.flatnonzero(np.diff(ids[by_track])) + 1
    members = {int(ids[r[0]]): r for r in np.split(by_track, bounds) if len(r)}
    opening = {t: look(r[times[r] <= times[r[0]] + w]) for t, r in members.items()}
    starters = sorted(members, key=lambda t: times[members[t][0]])
    starts = np.array([times[members[t][0]] for t in starters])
    new = ids.copy()
    for track, rows in members.items():
        t = times[rows]
        for k in np.flatnonzero(np.diff(t) > params.split_gap_s) + 1:
            before = look(rows[:k][t[:k] >= t[k - 1] - w])
            after = look(rows[k:][t[k:] <= t[k] + w])
            if before is None or after is None:
                continue
            changed = float(np.linalg.norm(after - before))
            lost = boxes[rows[k - 1]]
            lo, hi = (
                np.searchsorted(starts, t[k - 1], side="right"),
                np.searchsorted(starts, t[-1], side="left"),
            )
            for rival in starters[lo:hi]:
                theirs = members[rival]
                start = times[theirs[0]]
                if rival == track or opening[rival] is None:
                    continue
                found = boxes[theirs[0]]
                height = max((lost[3] - lost[1] + found[3] - found[1]) / 2, 1e-6)
                jump = float(np.linalg.norm(foot(found) - foot(lost))) / height
                if jump > params.slack_heights + params.speed_heights_s * (start - t[k - 1]):
                    continue
                if float(np.linalg.norm(opening[rival] - before)) + params.split_margin < changed:
                    new[(new == new[rows[k]]) & (times >= t[k]) & (ids == track)] = next_id
                    next_id += 1
                    break
    out = np.empty_like(new)
    out[order] = new
    return out
