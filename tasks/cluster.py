"""cluster: tracks → identities (teams and players, or cast members), then the event's corrections.

**Games.** Each track is summarised by the per-channel median of its appearance samples (robust to a
few frames of occlusion); tracks with fewer than ``min_track_rows`` rows are "tiny" and handled last.

* *Teams.* Per-track torso colours (CIELAB, lightness halved so shade matters less than hue) are
  grouped by average-linkage agglomeration cut at ``kit_distance`` = ΔE 18 (one kit in sun and
  shade, compressed, stays within ~10; two teams' kits differ by 30+). The two groups with the most
  (coverage-weighted) samples give the team colours, keyed ``A`` and ``B`` by the hue angle of the
  colour (stable across re-runs of one event; an ``assign_cluster`` correction names them). Then
  every *sample* votes for the team colour within ``kit_distance`` of it, or for none, and a track
  takes its majority; "none" must outvote the best team ``outlier_votes`` (2) to one, so a track
  whose few samples are half cut by the frame edge still joins its team.
* *Referees and keepers.* Outlier tracks are grouped by kit colour. The heaviest group is the
  referee (always near play, so on screen most); a lighter group is a team's goalkeeper when that
  team's players stand clearly nearer it (``keeper_ratio`` 1.3: mean distance, in box heights, to
  the two nearest players of each team over the frames it is seen), otherwise ``other``.
* *Players.* Within a team (and one angle), fragments are chained into identities: each track may
  be continued by one later track that does not overlap it. A link costs the distance between the
  two tracks' *looks* (torso, skin, hair and shorts colours: team-mates share a kit but not skin,
  hair and build), their *stature* difference (box height against the frame's height-vs-position
  line, in percent: players differ by up to ±7 %, a player's fragments agree within ~2 %) times
  ``stature_weight``, ``gap_cost_per_s`` per second of gap, and a motion term — the jump from one
  track's last box to the other's first, in box heights, against what a sprinter covers in the gap
  (``max_speed_heights_s`` per second + ``motion_slack_heights``): ``motion_soft`` for a jump as
  large as that, ``motion_weight`` per height beyond it (no motion term past ``max_gap_s``). All
  links are chosen together (Hungarian assignment, an unlinked end costing ``merge_max_cost`` =
  28), so one ambiguous pair cannot steal the links that make two others right. Jersey numbers are
  not read.
* *Tiny tracks* join the identity they continue within ``tiny_gap_s`` at a plausible distance, or
  become ``other`` identities (flickers, false detections).

**Episodes.** Face descriptors (dlib, 128-d) are averaged per track; tracks are grouped by scipy's
average-linkage agglomeration cut at ``face_distance`` = **0.5** (Euclidean). dlib's model is trained
so that two photos of one person are < 0.6 apart. On eight generated episodes (real LFW faces, each
cast member re-scaled, re-lit and tilted in every scene; 360p and 720p) one member's track means
stay within 0.25 of each other (0.17 at 720p) and distinct members' are ≥ 0.57 apart; 0.5 sits
between, a little under dlib's 0.6 so two similar-looking people are not merged. Each cluster is
a ``cast`` identity.

**Corrections** (rows of the event's ``corrections`` table; later rows win). Payloads:

================  =========================================================================================
kind              payload
================  =========================================================================================
assign_cluster    ``{"identity_id": 7, "label": "Jane Doe", "team": "Lions", "kind": "player"}`` names an
                  identity; ``{"team_cluster": "A", "team": "Lions"}`` renames a team. Identities given the
                  same label are merged (the user says they are one person).
override_track    ``{"track_id": 12, "identity_id": 7}`` moves a track into identity 7; ``{"track_id": 12,
                  "label": "Jane Doe"}`` into the identity with that label (created if absent);
                  ``{"track_id": 12, "team": "B"}`` makes the track its own identity of that team.
exclude_track     ``{"track_id": 12}``: the track belongs to no identity (and counts for no screen time).
exclude_face      ``{"track_id": 12, "frame": 340}`` (optional ``"angle"``): that face sample is ignored
                  before clustering (a wrong face detection that pulled a track into the wrong cast member).
================  =========================================================================================

Ids in a payload are those of the correction's ``source_run_id``. When that run's tracks (and
identities) are available, the ids are re-located in the current run: a source track maps to the
current tracks that cover the same boxes (mean IoU ≥ 0.5 on their shared frames), a source
identity to the current identity that holds most of its mapped tracks. Without them (or when the
source run is the current run) the ids are taken as they are: detect_track is deterministic, so a
re-run of the same footage with the same parameters numbers its tracks identically.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import polars as pl
from prefect import task
from pydantic import BaseModel, ConfigDict, Field
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.optimize import linear_sum_assignment

from storage.artifacts import ArtifactRef, ArtifactStore, RunRef
from storage.models import Correction
from storage.schemas import polars_schema, validate_table
from tasks.common import as_frame, retry_transient, store
from tasks.embed import APPEARANCE_LAYOUT

EventKind = Literal["game", "episode"]
LOOK_BANDS = ("torso", "skin", "hair", "shorts")  # kit, then what tells team-mates apart
CorrectionKindName = Literal["assign_cluster", "override_track", "exclude_track", "exclude_face"]


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
    min_track_rows: int = Field(default=3, ge=1, description="Games: shorter tracks are 'tiny'.")
    tiny_gap_s: float = Field(
        default=1.0, ge=0, description="Games: how far a tiny track may be from its identity."
    )
    stature_weight: float = Field(default=1.5, ge=0, description="Games: cost per percent of stature.")
    gap_cost_per_s: float = Field(default=0.5, ge=0, description="Games: cost per second of gap.")
    face_distance: float = Field(default=0.5, gt=0, description="Episodes: average-linkage cut (Euclidean).")
    outlier_votes: float = Field(
        default=2.0, ge=1, description="Games: 'no team' must outvote a team by this."
    )
    keeper_ratio: float = Field(default=1.3, gt=1, description="Games: how much nearer a keeper's team is.")
    track_iou: float = Field(default=0.5, gt=0, le=1, description="Corrections: IoU to re-locate a track.")


class CorrectionIn(BaseModel):
    """What the cluster stage needs of one stored correction (``storage.models.Correction``)."""

    model_config = ConfigDict(frozen=True)

    kind: CorrectionKindName
    payload: dict[str, Any] = Field(default_factory=dict)
    source_run_id: str | None = None


def corrections_in(rows: Iterable[Correction]) -> list[CorrectionIn]:
    """The event's stored corrections (``storage.repo.list_corrections``, oldest first) for this stage."""
    return [
        CorrectionIn(kind=row.kind.value, payload=dict(row.payload), source_run_id=row.source_run_id)
        for row in rows
    ]


@dataclass(frozen=True)
class SourceRun:
    """A run that corrections refer to: enough of it to re-locate its ids in the current run."""

    tracks: pl.DataFrame
    identities: pl.DataFrame | None = None


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
class _TrackInfo:
    angle: str
    start: float
    end: float
    samples: int
    first_box: np.ndarray
    last_box: np.ndarray
    features: dict[str, np.ndarray] = field(default_factory=dict)


# --- per-track summaries --------------------------------------------------------------------------


def _vectors(embeddings: pl.DataFrame, kind: str) -> tuple[np.ndarray, np.ndarray]:
    rows = embeddings.filter(pl.col("kind") == kind)
    if rows.is_empty():
        return np.empty(0, np.int64), np.empty((0, 0), np.float32)
    ids = rows["track_id"].to_numpy()
    vectors = np.asarray(rows["vector"].to_list(), np.float32)
    return ids, vectors


def _track_infos(tracks: pl.DataFrame) -> dict[int, _TrackInfo]:
    ordered = tracks.sort("track_id", "time_s")
    summary = ordered.group_by("track_id", maintain_order=True).agg(
        pl.col("angle").first(),
        pl.col("time_s").min().alias("start"),
        pl.col("time_s").max().alias("end"),
        pl.len().alias("n"),
        pl.concat_list("x1", "y1", "x2", "y2").first().alias("first_box"),
        pl.concat_list("x1", "y1", "x2", "y2").last().alias("last_box"),
    )
    return {
        int(r["track_id"]): _TrackInfo(
            r["angle"],
            r["start"],
            r["end"],
            r["n"],
            np.asarray(r["first_box"], float),
            np.asarray(r["last_box"], float),
        )
        for r in summary.iter_rows(named=True)
    }


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


# --- games ---------------------------------------------------------------------------------------


def _kit_space(torso: np.ndarray, params: ClusterParams) -> np.ndarray:
    return torso * np.array([params.lightness_weight, 1.0, 1.0], np.float32)


def _groups(points: np.ndarray, threshold: float) -> np.ndarray:
    """Average-linkage flat clusters (labels 0..k-1); one point is its own group."""
    if len(points) == 1:
        return np.zeros(1, int)
    labels = fcluster(linkage(points, method="average"), t=threshold, criterion="distance")
    return np.asarray(labels, int) - 1


def team_centres(kit: np.ndarray, weights: np.ndarray, params: ClusterParams) -> dict[str, np.ndarray]:
    """The kit colour of each team: the two heaviest colour groups of per-track kit colours.

    Keyed ``A``/``B`` by the hue angle of the centre, so re-runs of one event name them alike.
    """
    if len(kit) == 0:
        return {}
    labels = _groups(kit, params.kit_distance)
    mass = np.bincount(labels, weights=weights)
    order = np.argsort(-mass, kind="stable")[:2]
    centres = [np.average(kit[labels == g], axis=0, weights=weights[labels == g]) for g in order]
    centres.sort(key=lambda c: float(np.arctan2(c[2], c[1])))
    return dict(zip("AB", centres, strict=False))


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


def _motion_excess(a: _TrackInfo, b: _TrackInfo, params: ClusterParams) -> float:
    """Box heights by which the jump from ``a``'s end to ``b``'s start beats a sprint (0 if plausible)."""
    gap = b.start - a.end
    return max(0.0, _jump(a, b) - (params.max_speed_heights_s * gap + params.motion_slack_heights))


def _link_cost(a: _TrackInfo, b: _TrackInfo, appearance: float, params: ClusterParams) -> float:
    """Cost of ``b`` continuing ``a`` (``a`` ends before ``b`` starts); see the module docstring."""
    gap = b.start - a.end
    cost = appearance + params.gap_cost_per_s * gap
    if "stature" in a.features and "stature" in b.features:
        cost += params.stature_weight * abs(float(a.features["stature"][0] - b.features["stature"][0]))
    if gap <= params.max_gap_s:
        allowance = params.max_speed_heights_s * gap + params.motion_slack_heights
        cost += params.motion_soft * min(1.0, _jump(a, b) / allowance)
        cost += params.motion_weight * _motion_excess(a, b, params)
    else:
        cost += params.motion_soft  # no evidence either way
    return cost


def merge_fragments(
    infos: dict[int, _TrackInfo], members: Sequence[int], params: ClusterParams
) -> list[set[int]]:
    """Chain one team's tracks into identities: each track is continued by at most one later track.

    The links are chosen together (Hungarian assignment of track ends to track starts, where leaving
    an end unlinked costs ``merge_max_cost``), so one ambiguous pair cannot steal the link that
    would have made two others right, as a greedy cheapest-first merge does.
    """
    ids = sorted(members, key=lambda t: (infos[t].start, t))
    n = len(ids)
    if n < 2:
        return [{t} for t in ids]
    big = 1e6
    cost = np.full((n, 2 * n), big)
    for i, a in enumerate(ids):
        cost[i, n + i] = params.merge_max_cost
        for j, b in enumerate(ids):
            ia, ib = infos[a], infos[b]
            if i == j or ia.angle != ib.angle or ia.end > ib.start:
                continue
            appearance = float(np.linalg.norm(ia.features["look"] - ib.features["look"]))
            cost[i, j] = min(big, _link_cost(ia, ib, appearance, params))
    rows, cols = linear_sum_assignment(cost)
    successor = {
        ids[r]: ids[c]
        for r, c in zip(rows, cols, strict=True)
        if c < n and cost[r, c] < params.merge_max_cost
    }
    has_predecessor = set(successor.values())
    chains: list[set[int]] = []
    for t in ids:
        if t in has_predecessor:
            continue
        chain = {t}
        while t in successor:
            t = successor[t]
            chain.add(t)
        chains.append(chain)
    return sorted(chains, key=lambda g: min((infos[t].start, t) for t in g))


def _overlaps(infos: dict[int, _TrackInfo], left: set[int], right: set[int]) -> bool:
    return any(
        infos[a].angle == infos[b].angle and infos[a].start <= infos[b].end and infos[b].start <= infos[a].end
        for a in left
        for b in right
    )


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


def cluster_game(embeddings: pl.DataFrame, tracks: pl.DataFrame, params: ClusterParams) -> list[Identity]:
    """Teams, then players within each team, then keepers, referees and others among the outliers."""
    ids, vectors = _vectors(embeddings, "appearance")
    infos = _track_infos(tracks)
    embedded = {int(t) for t in ids}
    tiny = {t for t, info in infos.items() if info.samples < params.min_track_rows or t not in embedded}
    known_rows = np.asarray([int(t) in infos and int(t) not in tiny for t in ids], bool)
    ids, vectors = ids[known_rows], vectors[known_rows]
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
    for tid, median in zip(track_ids, medians, strict=True):
        infos[int(tid)].features = {"look": _look(median, params)}
        if int(tid) in heights:
            infos[int(tid)].features["stature"] = np.array([heights[int(tid)]])
    centres = team_centres(track_kit, track_weight, params)
    team_of, confidence = vote_teams(ids, sample_kit, sample_weight, centres, params)

    outliers = [int(t) for t in track_ids if team_of[int(t)] is None]
    extra: list[Identity] = []
    if outliers:
        index = {int(t): i for i, t in enumerate(track_ids)}
        labels = _groups(track_kit[[index[t] for t in outliers]], params.kit_distance)
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
    for team in centres:
        for members in merge_fragments(infos, [t for t, k in team_of.items() if k == team], params):
            conf = float(np.mean([confidence[t] for t in members]))
            identities.append(Identity("player", members, team=team, confidence=conf))
    return attach_tiny(identities + extra, sorted(tiny, key=lambda t: infos[t].start), infos, params)


def attach_tiny(
    identities: list[Identity], tiny: Sequence[int], infos: dict[int, _TrackInfo], params: ClusterParams
) -> list[Identity]:
    """Give each tiny track (too few rows to judge its colours) to the identity it continues.

    A tiny track joins the identity with a member ending within ``tiny_gap_s`` before it starts (or
    starting just after it ends) at a plausible distance (no motion penalty), the nearest such; an
    orphan becomes an ``other`` identity of its own (a flicker, a false detection).
    """
    for t in tiny:
        me = infos[t]
        best: tuple[float, int] | None = None
        for index, ident in enumerate(identities):
            if _overlaps(infos, ident.tracks, {t}):
                continue
            for m in ident.tracks:
                other = infos[m]
                if other.angle != me.angle:
                    continue
                first, second = (other, me) if other.end <= me.start else (me, other)
                if second.start - first.end > params.tiny_gap_s:
                    continue
                jump = _jump(first, second)
                if _motion_excess(first, second, params) <= 0 and (best is None or jump < best[0]):
                    best = (jump, index)
        if best is None:
            identities.append(Identity("other", {t}, confidence=0.0))
        else:
            identities[best[1]].tracks.add(t)
    return identities


def _jump(a: _TrackInfo, b: _TrackInfo) -> float:
    height = max(1.0, (a.last_box[3] - a.last_box[1] + b.first_box[3] - b.first_box[1]) / 2)
    ca = np.array([(a.last_box[0] + a.last_box[2]) / 2, a.last_box[3]])
    cb = np.array([(b.first_box[0] + b.first_box[2]) / 2, b.first_box[3]])
    return float(np.linalg.norm(cb - ca)) / height


# --- episodes ------------------------------------------------------------------------------------


def cluster_episode(embeddings: pl.DataFrame, params: ClusterParams) -> list[Identity]:
    """Cast members: average-linkage agglomeration of per-track mean face descriptors."""
    ids, vectors = _vectors(embeddings, "face")
    if len(ids) == 0:
        return []
    frame = pl.DataFrame({"track_id": ids, "i": np.arange(len(ids))})
    per_track = frame.group_by("track_id", maintain_order=True).agg(pl.col("i"))
    track_ids = per_track["track_id"].to_list()
    means = np.stack([vectors[np.asarray(rows)].mean(axis=0) for rows in per_track["i"].to_list()])
    labels = _groups(means, params.face_distance)
    identities = []
    for g in range(labels.max() + 1):
        rows = np.flatnonzero(labels == g)
        centre = means[rows].mean(axis=0)
        spread = float(np.linalg.norm(means[rows] - centre, axis=1).mean()) if len(rows) > 1 else 0.0
        conf = float(np.clip(1 - spread / params.face_distance, 0, 1))
        identities.append(Identity("cast", {int(track_ids[r]) for r in rows}, confidence=conf))
    return identities


# --- corrections ---------------------------------------------------------------------------------


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x1, y1 = np.maximum(a[:, 0], b[:, 0]), np.maximum(a[:, 1], b[:, 1])
    x2, y2 = np.minimum(a[:, 2], b[:, 2]), np.minimum(a[:, 3], b[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return np.asarray(inter / np.maximum(union, 1e-9))


def map_tracks(
    source: pl.DataFrame, current: pl.DataFrame, source_ids: Sequence[int], min_iou: float = 0.5
) -> dict[int, list[int]]:
    """Current tracks covering the same boxes as each source track (mean IoU over shared frames)."""
    wanted = source.filter(pl.col("track_id").is_in(list(source_ids)))
    if wanted.is_empty():
        return {}
    pairs = wanted.join(current, on=["angle", "frame"], suffix="_c")
    if pairs.is_empty():
        return {}
    cols = ["x1", "y1", "x2", "y2"]
    iou = _iou(pairs.select(cols).to_numpy(), pairs.select([f"{c}_c" for c in cols]).to_numpy())
    scored = (
        pairs.select("track_id", "track_id_c")
        .with_columns(iou=pl.Series(iou))
        .group_by("track_id", "track_id_c")
        .agg(pl.col("iou").mean().alias("mean_iou"), pl.len().alias("shared"))
        .filter(pl.col("mean_iou") >= min_iou)
        .sort("track_id", "track_id_c")
    )
    out: dict[int, list[int]] = {}
    for row in scored.iter_rows(named=True):
        out.setdefault(int(row["track_id"]), []).append(int(row["track_id_c"]))
    return out


@dataclass
class _Resolver:
    """Maps the ids of a correction's source run to the current run."""

    current_tracks: pl.DataFrame
    sources: dict[str, SourceRun]
    run_id: str | None
    min_iou: float

    def _source(self, correction: CorrectionIn) -> SourceRun | None:
        sid = correction.source_run_id
        if sid is None or sid == self.run_id:
            return None
        return self.sources.get(sid)

    def tracks(self, correction: CorrectionIn, track_id: int) -> list[int]:
        source = self._source(correction)
        if source is None:
            return [track_id]
        return map_tracks(source.tracks, self.current_tracks, [track_id], self.min_iou).get(track_id, [])

    def identity(self, correction: CorrectionIn, identity_id: int, state: dict[int, Identity]) -> int | None:
        source = self._source(correction)
        if source is None or source.identities is None:
            return identity_id if identity_id in state else None
        row = source.identities.filter(pl.col("identity_id") == identity_id)
        if row.is_empty():
            return None
        src_tracks = [int(t) for t in row["track_ids"][0]]
        mapped = map_tracks(source.tracks, self.current_tracks, src_tracks, self.min_iou)
        votes: dict[int, int] = {}
        for targets in mapped.values():
            for t in targets:
                for iid, ident in state.items():
                    if t in ident.tracks:
                        votes[iid] = votes.get(iid, 0) + 1
        return max(votes, key=lambda k: (votes[k], -k)) if votes else None

    def team(self, correction: CorrectionIn, key: str, state: dict[int, Identity]) -> str:
        source = self._source(correction)
        if source is None or source.identities is None:
            return key
        rows = source.identities.filter(pl.col("team") == key)
        src_tracks = [int(t) for ts in rows["track_ids"].to_list() for t in ts]
        mapped = map_tracks(source.tracks, self.current_tracks, src_tracks, self.min_iou)
        votes: dict[str, int] = {}
        for targets in mapped.values():
            for t in targets:
                for ident in state.values():
                    if t in ident.tracks and ident.team is not None:
                        votes[ident.team] = votes.get(ident.team, 0) + 1
        return max(votes, key=lambda k: votes[k]) if votes else key


def excluded_faces(corrections: Sequence[CorrectionIn], resolver: _Resolver) -> set[tuple[int, int]]:
    """(track_id, frame) of every face sample an ``exclude_face`` correction removes."""
    out: set[tuple[int, int]] = set()
    for c in corrections:
        if c.kind == "exclude_face" and "track_id" in c.payload and "frame" in c.payload:
            for t in resolver.tracks(c, int(c.payload["track_id"])):
                out.add((t, int(c.payload["frame"])))
    return out


def _detach(state: dict[int, Identity], track: int) -> None:
    for iid in list(state):
        state[iid].tracks.discard(track)
        if not state[iid].tracks:
            del state[iid]


def _new_id(state: dict[int, Identity]) -> int:
    return max(state, default=0) + 1


def apply_corrections(
    state: dict[int, Identity], corrections: Sequence[CorrectionIn], resolver: _Resolver
) -> dict[int, Identity]:
    """Apply the corrections in order (later ones win) to identities keyed by id."""
    for c in corrections:
        p = c.payload
        if c.kind == "exclude_track" and "track_id" in p:
            for t in resolver.tracks(c, int(p["track_id"])):
                _detach(state, t)
        elif c.kind == "override_track" and "track_id" in p:
            tracks = resolver.tracks(c, int(p["track_id"]))
            target: int | None = None
            if p.get("identity_id") is not None:
                target = resolver.identity(c, int(p["identity_id"]), state)
            elif p.get("label") is not None:
                target = next((i for i, d in state.items() if d.label == p["label"]), None)
            for t in tracks:
                _detach(state, t)
            if not tracks:
                continue
            if target is None or target not in state:
                target = _new_id(state)
                state[target] = Identity(
                    str(p.get("kind") or "player"),
                    set(),
                    label=p.get("label"),
                    team=p.get("team"),
                    order=(1e18,),
                )
            ident = state[target]
            ident.tracks |= set(tracks)
            ident.team = p.get("team", ident.team)
            ident.kind = str(p.get("kind") or ident.kind)
            ident.corrected, ident.confidence = True, 1.0
        elif c.kind == "assign_cluster":
            _assign(state, c, resolver)
    return _merge_same_labels(state)


def _assign(state: dict[int, Identity], c: CorrectionIn, resolver: _Resolver) -> None:
    p = c.payload
    if p.get("team_cluster") is not None:
        key = resolver.team(c, str(p["team_cluster"]), state)
        for ident in state.values():
            if ident.team == key and p.get("team") is not None:
                ident.team = str(p["team"])
                ident.corrected = True
        return
    if p.get("identity_id") is None:
        return
    iid = resolver.identity(c, int(p["identity_id"]), state)
    if iid is None:
        return
    ident = state[iid]
    for key in ("label", "team", "kind"):
        if key in p:
            setattr(ident, key, p[key] if key != "kind" else str(p[key]))
    ident.corrected, ident.confidence = True, 1.0


def _merge_same_labels(state: dict[int, Identity]) -> dict[int, Identity]:
    by_label: dict[str, int] = {}
    for iid in sorted(state):
        ident = state[iid]
        if not ident.corrected or ident.label is None:
            continue
        if ident.label in by_label:
            keep = state[by_label[ident.label]]
            keep.tracks |= ident.tracks
            keep.team = keep.team or ident.team
            del state[iid]
        else:
            by_label[ident.label] = iid
    return state


# --- the stage -----------------------------------------------------------------------------------


def identities_table(state: dict[int, Identity]) -> pl.DataFrame:
    """The pinned ``identities`` table of identities keyed by id."""
    rows = [
        {
            "identity_id": iid,
            "kind": d.kind,
            "label": d.label,
            "team": d.team,
            "track_ids": sorted(d.tracks),
            "confidence": float(np.clip(d.confidence, 0.0, 1.0)),
            "corrected": d.corrected,
        }
        for iid, d in sorted(state.items())
        if d.tracks
    ]
    table = pl.DataFrame(rows, schema=polars_schema("identities"))
    validate_table("identities", table)
    return table


def _numbered(identities: list[Identity], infos: dict[int, _TrackInfo]) -> dict[int, Identity]:
    kinds = {"player": 0, "cast": 0, "referee": 1, "other": 2}

    def key(d: Identity) -> tuple[Any, ...]:
        first = (
            min((infos[t].start, t) for t in d.tracks)
            if all(t in infos for t in d.tracks)
            else (0.0, min(d.tracks))
        )
        return (kinds.get(d.kind, 3), d.team or "~", first)

    return {i + 1: d for i, d in enumerate(sorted(identities, key=key))}


def cluster_tracks(
    embeddings: pl.DataFrame,
    tracks: pl.DataFrame,
    *,
    event_kind: EventKind,
    params: ClusterParams | None = None,
    corrections: Sequence[CorrectionIn] = (),
    sources: dict[str, SourceRun] | None = None,
    run_id: str | None = None,
) -> pl.DataFrame:
    """The identities of a run (pure): cluster, then apply the event's corrections in order."""
    p = params or ClusterParams()
    resolver = _Resolver(tracks, sources or {}, run_id, p.track_iou)
    dropped = excluded_faces(corrections, resolver)
    if dropped:
        keys = pl.DataFrame(
            {
                "track_id": [t for t, _ in dropped],
                "frame": [f for _, f in dropped],
                "_x": [True] * len(dropped),
            },
            schema={"track_id": pl.Int64, "frame": pl.Int32, "_x": pl.Boolean},
        )
        embeddings = (
            embeddings.join(keys, on=["track_id", "frame"], how="left")
            .filter(~((pl.col("kind") == "face") & pl.col("_x").fill_null(False)))
            .drop("_x")
        )
    found = cluster_game(embeddings, tracks, p) if event_kind == "game" else cluster_episode(embeddings, p)
    state = _numbered(found, _track_infos(tracks))
    state = apply_corrections(state, corrections, resolver)
    return identities_table(state)


def load_sources(
    artifacts: ArtifactStore, ref: RunRef, corrections: Sequence[CorrectionIn]
) -> dict[str, SourceRun]:
    """The earlier runs of the event that corrections refer to (those whose artifacts still exist)."""
    sources: dict[str, SourceRun] = {}
    for run_id in {c.source_run_id for c in corrections} - {None, ref.run_id}:
        assert run_id is not None
        source = RunRef(ref.tenant, ref.event_id, run_id)
        try:
            tracks = as_frame(artifacts.read_table(source, "tracks"))
        except FileNotFoundError:
            continue
        try:
            identities: pl.DataFrame | None = as_frame(artifacts.read_table(source, "identities"))
        except FileNotFoundError:
            identities = None
        sources[run_id] = SourceRun(tracks=tracks, identities=identities)
    return sources


@task(name="cluster", retries=2, retry_delay_seconds=1, retry_condition_fn=retry_transient)
def cluster_task(
    ref: RunRef, event_kind: EventKind, params: ClusterParams, corrections: list[CorrectionIn]
) -> ArtifactRef:
    """embeddings + tracks (+ the event's corrections, oldest first) → identities.parquet."""
    artifacts = store()
    identities = cluster_tracks(
        as_frame(artifacts.read_table(ref, "embeddings")),
        as_frame(artifacts.read_table(ref, "tracks")),
        event_kind=event_kind,
        params=params,
        corrections=corrections,
        sources=load_sources(artifacts, ref, corrections),
        run_id=ref.run_id,
    )
    return artifacts.write_table(ref, "identities", identities)
