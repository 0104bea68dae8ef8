"""The event's corrections, applied to a run's identities after clustering.

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
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from storage.models import Correction
from tasks.cluster_base import Identity

CorrectionKindName = Literal["assign_cluster", "override_track", "exclude_track", "exclude_face"]


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
class Resolver:
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


def excluded_faces(corrections: Sequence[CorrectionIn], resolver: Resolver) -> set[tuple[int, int]]:
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
    state: dict[int, Identity], corrections: Sequence[CorrectionIn], resolver: Resolver
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


def _assign(state: dict[int, Identity], c: CorrectionIn, resolver: Resolver) -> None:
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
