"""Games: teams by kit colour, keepers and referees among the outliers, players by fragment merging.

**Games.** Each track is summarised by the per-channel median of its appearance samples (robust to a
few frames of occlusion); tracks with fewer than ``min_track_rows`` rows are "tiny" and handled last.

* *Teams.* Per-track torso colours (CIELAB, lightness halved so shade matters less than hue) are
  grouped by average-linkage agglomeration cut at ``kit_distance`` = ΔE 18 (one kit in sun and
  shade, compressed, stays within ~10; two teams' kits differ by 30+). The two groups with the most
  (coverage-weighted) samples give the team colours, keyed ``A`` and ``B`` by the hue angle of the
  colour (stable across re-runs of one event; an ``assign_cluster`` correction names them). Then
  every *sample* votes for the team colour within ``kit_distance`` of it, or for none, and a track
  takes its majority; "none" must outvote the best team ``outlier_votes`` (2) to one, so a track
  whose few samples are half cut by the frame edge still joins its team. (A track in a crowd can
  still go to "none": +100 q-dense's first seconds, 21-42 ΔE from its team and 69-108 from the
  other. Letting a sample also vote for a team within 45 ΔE and at most half as far as the other
  mended that clip, team accuracy 0.969 -> 0.988, but put q-tight-shaky's outlier kit into a team,
  0.993 -> 0.937 on +100, and added a player on three clips: not done.)
* *Referees and keepers.* Outlier tracks are grouped by kit colour. The heaviest group is the
  referee (always near play, so on screen most); a lighter group is a team's goalkeeper when that
  team's players stand clearly nearer it (``keeper_ratio`` 1.3: mean distance, in box heights, to
  the two nearest players of each team over the frames it is seen), otherwise ``other``.
* *Players.* Within a team (and one angle), fragments are chained into identities: each track may
  be continued by one later track that does not overlap it. A link costs the distance between the
  two tracks' *looks* (torso, skin, hair and shorts colours: team-mates share a kit but not skin,
  hair and build) — less, in quadrature, what sampling noise alone puts between two medians of
  ``na`` and ``nb`` samples, ``look_noise * sqrt(1/na + 1/nb)``: ``look_noise`` = 20 is the rms
  distance of one sample from its track's median (measured 19.8 over 2142 samples of tracks with
  8+ samples on the quality set), so a 3-sample fragment's look counts less. On q-tight-shaky it
  links a 3-sample fragment to its player's 16-sample track 1 s later (look 25.7 -> 22.4, link
  cost 30.7 -> 27.4), 13 -> 12 players for 11, IDF1 0.806 -> 0.810. It is not free: on q-colours
  a 7-sample fragment now chains to a track that mixes three players (IDF1 0.918 -> 0.915, count
  unchanged); the mean over the set holds (team accuracy unchanged). At 12-16 nothing changes, at
  30 IDF1 drops (0.918 -> 0.913 on the set) — plus their
  *stature* difference (box height against the frame's height-vs-position line, in percent:
  players differ by up to ±7 %, a player's fragments agree within ~2 %) times
  ``stature_weight``, ``gap_cost_per_s`` per second of gap, and a motion term — the jump from one
  track's last box to the other's first, in box heights, against what a sprinter covers in the gap
  (``max_speed_heights_s`` per second + ``motion_slack_heights``): ``motion_soft`` for a jump as
  large as that, ``motion_weight`` per height beyond it (no motion term past ``max_gap_s``). All
  links are chosen together (Hungarian assignment, an unlinked end costing ``merge_max_cost`` =
  28), so one ambiguous pair cannot steal the links that make two others right.
* *Jersey numbers.* Every sample carries the number :mod:`tasks.numbers` read on its torso and the
  reader's confidence (the appearance vector's last two slots). A track — or a stretch of one, see
  below — has a number when at least ``number_min_reads`` = 2 of its reads at confidence
  ``number_min_conf`` = 0.9 or more agree and make ``number_share`` = 70 % of them; a track whose
  confident reads switch from one number to another is cut there (as at a kit switch, below: such a
  cut steers the chaining only). :mod:`tasks.link` has already cut the tracks where the reads of
  every analysed frame switch; these cuts see embed's sparser samples, within stretches. Two
  tracks with different numbers are never chained (they are two players); two with the same number
  are chained on gap, stature and motion alone (their looks have nothing to add); and after the
  chaining, player identities of one team whose tracks read one number are one player. Colour tells
  the teams apart; within a team the look (skin, hair, build) is weak, and a player who leaves the
  picture and comes back is otherwise chained by it alone. The reader's confident reads on the
  quality sets are 99.3-99.7 % right. On 20 s clips the figures hardly move (players over 3 % 2 / 8 /
  5, identity IDF1 0.962 / 0.949 / 0.959 -> 0.962 / 0.950 / 0.960, one count 16 -> 14 for 15); on
  60 s clips (``--duration 60``), with more exits and re-entries, players over 3 % 23 -> 13 and
  17 -> 17 of 78, identity IDF1 0.887 / 0.887 -> 0.920 / 0.924, and the count of players is within
  ±10 % of the truth on all ten clips (five were out, up to 9 players for 7).
  A short track that reads a number is chained like any other, never left out as a team-mate's
  shadow (below), and a short identity on top of a team-mate who reads another number is not
  absorbed into him: link's number cuts leave such short parts of a player who ran beside a
  team-mate. After those cuts, on the 60 s clips (tuned / +100): players over 3 % 5 / 9 -> 5 / 7 of
  78 (5 better by 0.4-8.5 points, one worse 0.5 -> 2.3 %), identity IDF1 0.953 / 0.945 -> 0.953 /
  0.949, +100 q-tight-shaky's count 24 -> 23 for 21; on the 20 s clips the same errors, +100
  q-dense's count 14 -> 15 for 15.
* *Hand-overs.* When the tracker loses a player and starts a new track on them, the old track
  often keeps a box on them for a few frames more, so the new track starts before the old one
  ends. A track may therefore continue one that ends up to ``overlap_tolerance_s`` = 1 s (5 rows at
  5 fps) after it starts (no gap cost, the motion allowance of no gap), if it starts and ends
  later. On q-colours two such hand-overs of one player overlap 0.8 s: players 13 -> 12 for 12,
  identity IDF1 0.957 -> 0.972 (chunked tracks: 13 -> 12). Nothing changes elsewhere below 1 s; at
  1.5 s q-tight-shaky links a wrong pair (IDF1 0.807 -> 0.804), at 3 s it loses a player (11 -> 10).
  So the window that helps is narrow (0.8-1 s), and it is set at its top.
* *Re-found players.* A track that ends where another starts — the new one starting at most
  ``refound_s`` = 0.6 s after it ends, within ``motion_slack_heights`` of its last box — was lost in
  an occlusion and found again at once: it continues there or nowhere, and no longer competes for a
  look-alike team-mate far away. On a re-seeded q-default (seed+100) a player's track ended at 14 s
  mid-picture, a new track held him from there (its look off: it later drifts to a team-mate), and
  his track was chained to a team-mate entering 670 px away 2.8 s later (look 2.9; a plausible
  sprint), giving the team-mate 14 s of screen time he was not on (+67 % of the clip). Now it is
  not (mean screen-time error on seed+100 4.07 % -> 3.11 %, identity IDF1 0.909 -> 0.916); nothing
  moves on the tuned set or seed+200, for ``refound_s`` 0.2-1 s (a slack of 2.5 heights costs
  seed+200 a player).
* *Crossing the picture unseen.* No link joins a track's end to a start more than
  ``unseen_crossing`` = 0.7 of the picture's width away across it (the width is the rightmost box
  edge of the angle): a player does not cross most of the picture undetected, nor leave by one side
  and come back by the other, however long the gap; the sprint check alone allows it for a short
  gap (a 1.8 s gap allows 10.5 box heights). On seed+100 q-tight-shaky a track that left by the left
  edge was chained to a look-alike team-mate starting 1080 px to the right 1.8 s later, and one that
  left by the right edge to one entering from the left 4.2 s later (screen-time error 5.6 % ->
  1.3 %, 12 -> 13 players for 13, identity IDF1 0.895 -> 0.941; mean over seed+100 3.11 % ->
  2.22 %, players over 3 % 13 -> 10 of 68). True links on the three sets cross at most 0.6 of the
  width, the wrong ones 0.84 or more; the figures are the same at 0.65-0.75, and nothing moves on
  the tuned set or seed+200.
* *Stretches.* A track is not always one person: stitch's linking (and the tracker, re-finding a
  lost track) joins fragments across gaps of up to ~4.5 s, and now and then the later fragment is a
  team-mate. Such a track overlaps the tracks that really continue its first player, so they could
  not be chained to it, and its player was split. So the chaining works on *stretches*: a track is
  cut wherever it went unseen for more than ``stretch_gap_s`` = 1 s (each piece needs
  ``min_track_rows`` rows and a sample; one that has not is left out of the chaining — it is more
  than ``stretch_gap_s`` from the rest, so nothing says whose it is — and the track is one stretch
  if no piece qualifies), each stretch gets its own look, and after the chaining every track goes,
  whole, with the chain holding most of its rows (an identity is a set of tracks). A track seen
  throughout is one stretch, as before. A cut stands only if the stretches leaving their track are
  chained to some other track; one chained to nobody but its own track's stretches is no evidence of
  a second person, and the track is chained again uncut (on a re-seeded q-colours — seed 202, not
  one the thresholds were chosen on — a track that swapped players *without* a gap and then had a
  gap was otherwise glued, by its first stretch, to a team-mate's track: 16 -> 15 players for 16,
  one player's screen-time error 57 %). On q-colours a track held player 7 for 5.2-13.0 s and, after
  a 3.8 s gap, player 8: his later tracks are now chained to the first stretch (players 15 -> 13 for
  12, identity IDF1 0.915 -> 0.957, mean screen-time error 7.2 % -> 5.1 %); nothing moves on the
  other clips, and the figures are the same for any ``stretch_gap_s`` in 0.5-2 s (at 3 s the
  q-colours cut is missed: 14 players).
  A piece too small to judge used to stay glued to the stretch before it, and moved its end: on
  seed+100 q-sparse-static a track held player 12 for 0-2.6 s, one row (no sample) on a team-mate at
  5.8 s, then a second box on player 12 at 7.4-9.0 s while another track held him from 3.6 s; glued,
  the first stretch ran to 5.8 s and overlapped that track by 2.2 s, so it could not be chained to
  it (look 6.5). A stretch chained to nobody that lies on the path of the chain its own track goes
  with — median within ``shadow_track_distance`` = 0.5 box heights of where that chain's track is at
  the moment (read between its rows, as the two boxes of a fast run alternate frames) — is a second
  box on that chain's player and confirms the cut instead of undoing it: that stretch lies 0.06
  heights from its chain's path, the other lone stretches of the three sets 2.6 heights or more (or
  never beside it), and a look-alike running beside a player 0.6. Together (each alone moves nothing
  there): seed+100 q-sparse-static 8 -> 7 players for 7, identity IDF1 0.918 -> 0.949, mean
  screen-time error 5.47 % -> 3.08 % (max 20.6 % -> 8.65 %, the best these tracks allow); on the
  tuned q-default a chain of four sparse tracks of three people no longer holds together (17 -> 16
  players for 16, IDF1 0.958 -> 0.966); seed+200 unchanged.
  A track is also cut where its samples switch kit — every sample votes for a team, and if the
  samples before some point vote (80 %+, at least ``min_track_rows`` of them) for one team and
  those after it for the other, the track held a player of each; the two sides are chained within
  their own team. On q-colours tracked in chunks, one track held an away player for 8 s, then a
  home player for 11 s (a swap at a chunk boundary); cut, the home player's earlier track chains to
  it (chunked tracks: 13 -> 12 players, identity IDF1 0.897 -> 0.953). Tracked in one piece no
  track of the set switches kit.
* *Shadows.* When two players cross, the tracker sometimes holds one of them under a second, short
  track for a few frames (a swap, or a duplicate box), filling the holes of the long track; the
  short track overlaps the long one in time, so it cannot be chained to it and would be a player of
  its own. A player identity of fewer than ``shadow_max_rows`` = 10 rows (2 s at 5 fps) whose rows
  lie (median) within ``shadow_distance`` = 1 box height (foot to foot) of a longer team-mate
  identity's boxes seen within ``shadow_window_s`` = 0.5 s joins the nearest such identity. On the
  tracking quality set (``bench/tracking_quality.py``), labelled with the truth, these short
  identities were the largest source of excess players (12 of 24): every one sat within 0.44
  heights of a team-mate's track, while the short identities of players really seen only briefly
  were 1.5 heights or more from anyone (a player crossing a corner of the picture). Longer
  identities are left alone: a 16-row real player stood 0.6 heights from a team-mate (at
  ``shadow_max_rows`` = 20 it is absorbed and IDF1 drops). The counts do not move for
  ``shadow_distance`` 0.6-1.4, ``shadow_window_s`` 0.25-1 s or ``shadow_max_rows`` 10-15.
  A shadow that is chained first escapes that rule: on q-sparse-static a 6-row box over two
  crossing players (no true person) was chained to a team-mate's track 9 s later and added 1.2 s
  to his screen time. So before the chaining, a short track that lies, all its life, on top of a
  longer team-mate track — median within ``shadow_track_distance`` = 0.5 box heights, stricter
  than after the chaining because it overrides the looks — is set aside and joins that track's
  identity. On the quality set the tracks it takes sit 0.06-0.43 heights from their host (most are
  the host's own player; the rest 1-2 row flickers); the next nearest short tracks are 0.83
  heights away, and they are another player's (q-colours), so the figures are the same for
  0.2-0.7 (q-sparse-static: screen-time error 6.6 % -> 6.2 %, IDF1 0.944 -> 0.950; q-default
  4.5 % -> 4.4 %; the others unchanged).
* *Two people in one box.* A box far taller than the people around it — stature over ``max_stature``
  = +20 % (one player's fragments agree within ~2 %, players differ by up to ±7 %) — spans two
  players, one standing behind the other; its look is a mix of both, so chained by it the box makes
  a player of its own (the shadow rules miss it when it is 10+ rows long or its players' own tracks
  are short). Such a track is left out of the chaining and joins the team-mate identity on whose
  feet it stands (median within ``shadow_distance`` box heights, as a shadow), or is a player of its
  own if there is none. On the three quality sets 28 tracks (3-13 rows) are over +20 %, most of
  their rows matched to no true person; every one stands within 0.51 heights of a team-mate
  identity. On seed+100 q-dense a 6-row box over two team-mates at the picture's edge was a 17th
  player for 15 (now 16, identity IDF1 0.930 -> 0.933); on seed+200 q-colours a 13-row one was a
  16th for 15 (now 15, IDF1 0.969 -> 0.975); on the tuned q-default screen-time error mean 1.64 % ->
  1.57 % (players over 3 % 5 -> 4, IDF1 0.966 -> 0.965). The figures are the same for 12-25 %; at
  30 % the q-dense box (+26 %) is missed. Made ``other`` instead, the boxes' rows are lost to their
  players (IDF1 -0.003 to -0.012 on nine clips, team accuracy 0.996 -> 0.994 on seed+200).
  The one standing *behind* is the other person in the box, and the one it stands on is mostly
  tracked anyway (in the case below his own track went on meanwhile), so the box goes first to the
  team-mate whose gap it bridges, when exactly one does
  (:func:`tasks.cluster_fragments.bridged_identity`): unseen while it lasts, his tracks end at most
  ``bridge_gap_s`` = 2 s (the default screen-time hold) before it and start at most 2 s after it,
  and both moves are within link's sprint allowance (``bridge_slack_heights`` 0.8 +
  ``bridge_speed_heights_s`` 0.6 x gap box heights). On the tuned
  q-tight-shaky player 19 ran behind team-mate 21 for 1.6 s under one box on 21's feet, and his
  identity lost 7.2-10.8 s: his error 17.5 % -> 0.5 % of the clip at 20 s, 5.8 % -> 0.2 % at 60 s
  (five quality sets, fresh tracks: players over 3 % 4 / 7 / 6 / 4 / 7 -> 3 / 7 / 6 / 3 / 7, no
  other player's error moved by 0.3 point). With the cluster's own looser motion test (5 heights a
  second + 1.5) and the nearest of several candidates, two boxes went to players who were not in
  them: +100 q-dense at 60 s (a jump of 2.8 heights in 0.6 s; his error 3.4 % -> 7.1 %) and the
  tuned q-dense at 60 s (three candidates; 1.0 % -> 2.7 %).
* *Tiny tracks* join the identity they continue within ``tiny_gap_s`` at a plausible distance, or
  become ``other`` identities (flickers, false detections).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from itertools import pairwise

import numpy as np
import polars as pl

from tasks.appearance import APPEARANCE_LAYOUT, number_read
from tasks.cluster_base import (
    ClusterParams,
    Identity,
    TrackInfo,
    embedding_vectors,
    flat_groups,
    track_infos,
)
from tasks.cluster_fragments import (
    absorb_shadows,
    attach_tiny,
    label_switches,
    merge_fragments,
    regroup,
    shirt_number,
    stand_on_players,
    stretches,
    team_switch,
    track_shadows,
    unclaimed_cuts,
)

LOOK_BANDS = ("torso", "skin", "hair", "shorts")  # kit, then what tells team-mates apart


def stature(tracks: pl.DataFrame, frame_size: dict[str, tuple[int, int]] | None = None) -> dict[int, float]:
    """Each track's height relative to the people around it, in percent (0 = average).

    People further from a broadcast camera stand higher in the image and look smaller; in each
    frame a line ``box height ~ a + b * foot y`` is fitted over everyone in view (boxes cut by the
    frame edge left out, one pass of outlier rejection), and a person's box height over the line's
    prediction measures their stature: players differ by up to ±7 %, one player's fragments agree
    within ~2 %. Zoom and pan change every box of a frame alike, so the per-frame fit absorbs them.
    """
    sizes = frame_size or {}
    box = tracks.select(
        "angle", "frame", "track_id", "y1", "y2", "x1", "x2", (pl.col("y2") - pl.col("y1")).alias("h")
    )
    width = pl.col("angle").replace_strict(
        {k: v[0] for k, v in sizes.items()}, default=None, return_dtype=pl.Float64
    )
    height = pl.col("angle").replace_strict(
        {k: v[1] for k, v in sizes.items()}, default=None, return_dtype=pl.Float64
    )
    inside = (pl.col("x1") > 1) & (pl.col("y1") > 1)
    if sizes:
        inside = (
            inside & (pl.col("x2") < width.fill_null(1e9) - 1) & (pl.col("y2") < height.fill_null(1e9) - 1)
        )
    box = box.filter(inside & (pl.col("h") > 4))
    ratios: list[np.ndarray] = []
    owners: list[np.ndarray] = []
    for _, group in box.group_by("angle", "frame"):
        if group.height < 4:
            continue
        y, h = group["y2"].to_numpy().astype(float), group["h"].to_numpy().astype(float)
        design = np.stack([np.ones_like(y), y], axis=1)
        keep = np.ones(len(y), bool)
        for _ in range(2):
            coef, *_ = np.linalg.lstsq(design[keep], h[keep], rcond=None)
            predicted = np.maximum(design @ coef, 1.0)
            ratio = h / predicted
            keep = np.abs(ratio - 1) < 0.15
            if keep.sum() < 4:
                break
        ratios.append(100 * np.log(np.clip(ratio, 0.5, 2.0)))
        owners.append(group["track_id"].to_numpy())
    if not ratios:
        return {}
    table = pl.DataFrame({"track_id": np.concatenate(owners), "s": np.concatenate(ratios)})
    per_track = table.group_by("track_id").agg(pl.col("s").median())
    return dict(zip(per_track["track_id"].to_list(), per_track["s"].to_list(), strict=True))


def _kit_space(torso: np.ndarray, params: ClusterParams) -> np.ndarray:
    return torso * np.array([params.lightness_weight, 1.0, 1.0], np.float32)


def team_centres(kit: np.ndarray, weights: np.ndarray, params: ClusterParams) -> dict[str, np.ndarray]:
    """The kit colour of each team: the two heaviest colour groups of per-track kit colours.

    Keyed ``A``/``B`` by the hue angle of the centre, so re-runs of one event name them alike.
    """
    if len(kit) == 0:
        return {}
    labels = flat_groups(kit, params.kit_distance)
    mass = np.bincount(labels, weights=weights)
    order = np.argsort(-mass, kind="stable")[:2]
    centres = [np.average(kit[labels == g], axis=0, weights=weights[labels == g]) for g in order]
    centres.sort(key=lambda c: float(np.arctan2(c[2], c[1])))
    return dict(zip("AB", centres, strict=False))


def sample_teams(
    sample_kit: np.ndarray, centres: dict[str, np.ndarray], params: ClusterParams
) -> list[str | None]:
    """The team each sample's kit colour votes for: the nearest centre within ``kit_distance``, or none."""
    keys = list(centres)
    if not keys:
        return [None] * len(sample_kit)
    dists = np.stack([np.linalg.norm(sample_kit - centres[k], axis=1) for k in keys], axis=1)
    nearest = np.argmin(dists, axis=1)
    near = dists[np.arange(len(dists)), nearest] <= params.kit_distance
    return [keys[int(k)] if ok else None for k, ok in zip(nearest, near, strict=True)]


def vote_teams(
    sample_tracks: np.ndarray,
    sample_kit: np.ndarray,
    sample_weight: np.ndarray,
    centres: dict[str, np.ndarray],
    params: ClusterParams,
) -> tuple[dict[int, str | None], dict[int, float]]:
    """Each sample votes for the nearest team centre within ``kit_distance`` (or for none); the track
    takes the team with most votes unless "none" has strictly more (referees, keepers). Returns the
    team per track and a confidence: the winning share of the votes times the colour margin."""
    keys = list(centres)
    if not keys:
        return dict.fromkeys((int(t) for t in np.unique(sample_tracks)), None), {}
    dists = np.stack([np.linalg.norm(sample_kit - centres[k], axis=1) for k in keys], axis=1)
    nearest = np.argmin(dists, axis=1)
    vote = np.where(dists[np.arange(len(dists)), nearest] <= params.kit_distance, nearest, len(keys))
    team_of: dict[int, str | None] = {}
    confidence: dict[int, float] = {}
    for tid in np.unique(sample_tracks):
        rows = sample_tracks == tid
        tally = np.bincount(vote[rows], weights=sample_weight[rows], minlength=len(keys) + 1)
        best = int(np.argmax(tally[: len(keys)]))
        total = max(float(tally.sum()), 1e-9)
        if tally[len(keys)] > params.outlier_votes * tally[best]:
            team_of[int(tid)] = None
            confidence[int(tid)] = float(tally[len(keys)] / total)
            continue
        team_of[int(tid)] = keys[best]
        d = np.median(dists[rows], axis=0)
        margin = 1.0 if len(keys) == 1 else float(np.clip((d[1 - best] - d[best]) / max(d.sum(), 1e-6), 0, 1))
        confidence[int(tid)] = float(tally[best] / total) * (0.5 + 0.5 * margin)
    return team_of, confidence


def keeper_side(
    tracks: pl.DataFrame, members: Sequence[int], team_of: dict[int, str | None], params: ClusterParams
) -> str | None:
    """The team whose players stand clearly nearer to these (outlier-kit) tracks: the keeper's team.

    In every frame where the group is seen, the mean distance (in box heights) to the two nearest
    visible players of each team is measured; a goalkeeper stands behind their own defence, the
    opponents' forwards are further up, so their own team is nearer on average. Below a ratio of
    ``keeper_ratio`` (or with fewer than 3 frames seeing both teams) nothing is decided.
    """
    teams = pl.DataFrame(
        {"track_id": list(team_of), "team": list(team_of.values())},
        schema={"track_id": pl.Int64, "team": pl.Utf8},
    ).drop_nulls()
    centre_x = ((pl.col("x1") + pl.col("x2")) / 2).alias("x")
    mine = tracks.filter(pl.col("track_id").is_in(list(members))).select(
        "angle",
        "frame",
        centre_x.alias("gx"),
        pl.col("y2").alias("gy"),
        (pl.col("y2") - pl.col("y1")).alias("gh"),
    )
    others = tracks.join(teams, on="track_id").select("angle", "frame", "team", centre_x, "y2")
    pairs = mine.join(others, on=["angle", "frame"])
    if pairs.is_empty():
        return None
    distance = ((pl.col("x") - pl.col("gx")) ** 2 + (pl.col("y2") - pl.col("gy")) ** 2).sqrt()
    per_frame = (
        pairs.with_columns(d=distance / pl.col("gh").clip(lower_bound=1.0))
        .sort("d")
        .group_by("angle", "frame", "team")
        .agg(pl.col("d").head(2).mean())
        .pivot(on="team", index=["angle", "frame"], values="d")
    )
    if "A" not in per_frame.columns or "B" not in per_frame.columns:
        return None
    both = per_frame.drop_nulls(["A", "B"])
    if both.height < 3:
        return None
    a, b = float(both["A"].mean()), float(both["B"].mean())  # type: ignore[arg-type]
    if b > a * params.keeper_ratio:
        return "A"
    if a > b * params.keeper_ratio:
        return "B"
    return None


def _look_dims() -> np.ndarray:
    return np.concatenate(
        [
            np.arange(APPEARANCE_LAYOUT[f"{b}_lab"].start, APPEARANCE_LAYOUT[f"{b}_lab"].stop)
            for b in LOOK_BANDS
        ]
    )


def _look(median: np.ndarray, params: ClusterParams) -> np.ndarray:
    weight = np.tile(np.array([params.lightness_weight, 1.0, 1.0]), len(LOOK_BANDS))
    return np.asarray(median[_look_dims()] * weight)


def _sample_times(embeddings: pl.DataFrame, tracks: pl.DataFrame) -> np.ndarray:
    """The time of each appearance sample, in the order of ``embedding_vectors`` (NaN if unknown)."""
    rows = embeddings.filter(pl.col("kind") == "appearance").select("track_id", "frame").with_row_index("i")
    times = tracks.select("track_id", "frame", "time_s").unique(["track_id", "frame"])
    joined = rows.join(times, on=["track_id", "frame"], how="left").sort("i")
    return joined["time_s"].cast(pl.Float64).fill_null(float("nan")).to_numpy()


def _box(row: np.ndarray) -> np.ndarray:
    """A box with the foot point and height of a path row (time, foot x, foot y, height)."""
    return np.array([row[1], row[2] - row[3], row[1], row[2]])


def sample_numbers(vectors: np.ndarray, params: ClusterParams) -> list[int | None]:
    """Each sample's jersey number where it was read with ``number_min_conf`` or more (else None)."""
    if vectors.ndim != 2:
        return [None] * len(vectors)
    return [number_read(v, params.number_min_conf) for v in vectors]


def dominant_number(reads: Sequence[int | None], params: ClusterParams) -> int | None:
    """A track's (or stretch's) jersey number: the one most of its confident reads agree on."""
    confident = [r for r in reads if r is not None]
    if len(confident) < params.number_min_reads:
        return None
    number, count = Counter(confident).most_common(1)[0]
    return number if count >= params.number_share * len(confident) else None


def number_sides(
    side: tuple[float, float, str], times: np.ndarray, reads: Sequence[int | None], params: ClusterParams
) -> list[tuple[float, float, str]]:
    """``side`` (a time range of a track and its team) cut wherever its confident number reads switch
    from one number to another (:func:`label_switches` on the reads)."""
    lo, hi, team = side
    inside = [i for i in range(len(times)) if lo < times[i] < hi and reads[i] is not None]
    cuts = label_switches(
        times[inside], [str(reads[i]) for i in inside], params.number_min_reads, params.number_share
    )
    return [(a, b, team) for a, b in pairwise([lo, *cuts, hi])]


def merge_by_number(identities: list[Identity], infos: dict[int, TrackInfo]) -> list[Identity]:
    """Player identities of one team and angle whose tracks read one shirt number (most samples' of
    the identity's numbered tracks) are one player, whatever the chaining said of their gaps."""
    out: list[Identity] = []
    seen: dict[tuple[str, str | None, int], Identity] = {}
    for identity in identities:
        number = shirt_number(identity.tracks, infos)
        if identity.kind != "player" or number is None:
            out.append(identity)
            continue
        key = (infos[min(identity.tracks)].angle, identity.team, number)
        if key in seen:
            seen[key].tracks |= identity.tracks
        else:
            seen[key] = identity
            out.append(identity)
    return out


def split_stretches(
    infos: dict[int, TrackInfo],
    team_of: dict[int, str | None],
    samples: dict[int, tuple[np.ndarray, np.ndarray, list[str | None], list[int | None]]],
    params: ClusterParams,
    first_id: int,
    whole: set[int],
) -> tuple[dict[int, TrackInfo], dict[int, int], dict[int, str]]:
    """Each team track cut where its kit switches team and where it went unseen for over
    ``stretch_gap_s`` (see the module docstring): the stretches' infos (a track seen throughout in
    one kit keeps its own), the track each came from, and each one's team. Tracks in ``whole`` are
    only cut where their kit switches."""
    out: dict[int, TrackInfo] = {}
    owner: dict[int, int] = {}
    team: dict[int, str] = {}
    next_id = first_id
    for tid, kit in team_of.items():
        if kit is None:
            continue
        info = infos[tid]
        times, vectors, votes, reads = samples[tid]
        switch = team_switch(times, votes, params.min_track_rows)
        sides = (
            [(-np.inf, np.inf, kit)]
            if switch is None
            else [(-np.inf, switch[0], switch[1]), (switch[0], np.inf, switch[2])]
        )
        sides = [part for side in sides for part in number_sides(side, times, reads, params)]
        pieces = []
        for lo, hi, side in sides:
            rows = np.flatnonzero((info.path[:, 0] > lo) & (info.path[:, 0] < hi))
            mine = (times > lo) & (times < hi)
            gap = np.inf if tid in whole else params.stretch_gap_s
            for a, b in stretches(info.path[rows, 0], times[mine], gap, params.min_track_rows):
                pieces.append((rows[a], rows[b - 1] + 1, side))

        def piece(
            a: int,
            b: int,
            info: TrackInfo = info,
            times: np.ndarray = times,
            vectors: np.ndarray = vectors,
            reads: list[int | None] = reads,
        ) -> TrackInfo:
            path = info.path[a:b]
            seen = (times >= path[0, 0] - 1e-6) & (times <= path[-1, 0] + 1e-6)
            features = {
                **{k: v for k, v in info.features.items() if k != "number"},
                "look": _look(np.median(vectors[seen], axis=0), params),
                "look_samples": np.array([int(seen.sum())]),
            }
            number = dominant_number([r for r, s in zip(reads, seen, strict=True) if s], params)
            if number is not None:
                features["number"] = np.array([number])
            return TrackInfo(
                info.angle, path[0, 0], path[-1, 0], b - a, _box(path[0]), _box(path[-1]), features, path
            )

        if len(pieces) == 1 and pieces[0][1] - pieces[0][0] == len(info.path):
            out[tid], owner[tid], team[tid] = info, tid, kit
            continue
        for a, b, side in pieces:
            out[next_id] = piece(a, b)
            owner[next_id], team[next_id] = tid, side
            next_id += 1
    return out, owner, team


def cluster_game(embeddings: pl.DataFrame, tracks: pl.DataFrame, params: ClusterParams) -> list[Identity]:
    """Teams, then players within each team, then keepers, referees and others among the outliers."""
    ids, vectors = embedding_vectors(embeddings, "appearance")
    sample_times = _sample_times(embeddings, tracks) if len(ids) else np.empty(0)
    infos = track_infos(tracks)
    embedded = {int(t) for t in ids}
    tiny = {t for t, info in infos.items() if info.samples < params.min_track_rows or t not in embedded}
    known_rows = np.asarray([int(t) in infos and int(t) not in tiny for t in ids], bool)
    ids, vectors, sample_times = ids[known_rows], vectors[known_rows], sample_times[known_rows]
    if len(ids) == 0:
        return [Identity("other", {t}, confidence=0.0) for t in sorted(tiny)]
    sample_kit = _kit_space(vectors[:, APPEARANCE_LAYOUT["torso_lab"]], params)
    sample_weight = np.clip(vectors[:, APPEARANCE_LAYOUT["torso_coverage"]].ravel(), 0.05, 1.0)
    per_track = (
        pl.DataFrame({"track_id": ids, "i": np.arange(len(ids))})
        .group_by("track_id", maintain_order=True)
        .agg(pl.col("i"))
    )
    track_ids = per_track["track_id"].to_numpy()
    rows_of = [np.asarray(rows) for rows in per_track["i"].to_list()]
    medians = np.stack([np.median(vectors[rows], axis=0) for rows in rows_of])
    track_kit = _kit_space(medians[:, APPEARANCE_LAYOUT["torso_lab"]], params)
    track_weight = np.asarray([sample_weight[rows].sum() for rows in rows_of])
    heights = stature(tracks)
    # the picture's width, as the rightmost box edge of its angle (boxes are clipped to the frame)
    widths = dict(tracks.group_by("angle").agg(pl.col("x2").max()).iter_rows())
    for tid, median, rows in zip(track_ids, medians, rows_of, strict=True):
        infos[int(tid)].features = {
            "look": _look(median, params),
            "look_samples": np.array([len(rows)]),
            "picture_width": np.array([float(widths[infos[int(tid)].angle])]),
        }
        if int(tid) in heights:
            infos[int(tid)].features["stature"] = np.array([heights[int(tid)]])
    centres = team_centres(track_kit, track_weight, params)
    team_of, confidence = vote_teams(ids, sample_kit, sample_weight, centres, params)

    outliers = [int(t) for t in track_ids if team_of[int(t)] is None]
    extra: list[Identity] = []
    if outliers:
        index = {int(t): i for i, t in enumerate(track_ids)}
        labels = flat_groups(track_kit[[index[t] for t in outliers]], params.kit_distance)
        groups = [
            [t for t, g in zip(outliers, labels, strict=True) if g == k] for k in range(labels.max() + 1)
        ]
        mass = [float(track_weight[[index[t] for t in group]].sum()) for group in groups]
        # The referee is near play, so on screen most: the heaviest outlier kit. Other outlier kits
        # are goalkeepers when one team is clearly nearer them, else "other".
        order = sorted(range(len(groups)), key=lambda k: -mass[k])
        for rank, k in enumerate(order):
            side = None
            if rank > 0 and len(centres) == 2:
                side = keeper_side(tracks, groups[k], team_of, params)
            if side is not None:
                for t in groups[k]:
                    team_of[t], confidence[t] = side, 0.5
                continue
            for members in merge_fragments(infos, groups[k], params):
                extra.append(Identity("referee" if rank == 0 else "other", members, confidence=0.5))
    identities: list[Identity] = []
    votes = sample_teams(sample_kit, centres, params)
    numbers = sample_numbers(vectors, params)
    samples = {
        int(t): (sample_times[rows], vectors[rows], [votes[i] for i in rows], [numbers[i] for i in rows])
        for t, rows in zip(track_ids, rows_of, strict=True)
    }
    for t, rows in zip(track_ids, rows_of, strict=True):
        number = dominant_number([numbers[i] for i in rows], params)
        if number is not None:
            infos[int(t)].features["number"] = np.array([number])

    two_people = {
        t for t, kit in team_of.items() if kit is not None and heights.get(t, 0.0) > params.max_stature
    }

    def chain(whole: set[int]) -> tuple[dict[int, TrackInfo], dict[int, int], list[set[int]], list[str]]:
        pieces, owner, piece_team = split_stretches(infos, team_of, samples, params, max(infos) + 1, whole)
        chains: list[set[int]] = []
        chain_team: list[str] = []
        for team in centres:
            mine = [p for p, k in piece_team.items() if k == team and owner[p] not in two_people]
            shadows = track_shadows(pieces, mine, params)
            for links in merge_fragments(pieces, [p for p in mine if p not in shadows], params):
                chains.append(links | {s for s, host in shadows.items() if host in links})
                chain_team.append(team)
        return pieces, owner, chains, chain_team

    pieces, owner, chains, chain_team = chain(set())
    doubtful = unclaimed_cuts(chains, owner, pieces, params)
    if doubtful:
        pieces, owner, chains, chain_team = chain(doubtful)
    for k, members in regroup(chains, owner, pieces):
        conf = float(np.mean([confidence[t] for t in members]))
        identities.append(Identity("player", members, team=chain_team[k], confidence=conf))
    identities = merge_by_number(identities, infos)
    identities = absorb_shadows(identities, infos, params)
    identities = stand_on_players(identities, sorted(two_people), team_of, confidence, infos, params)
    return attach_tiny(identities + extra, sorted(tiny, key=lambda t: infos[t].start), infos, params)
