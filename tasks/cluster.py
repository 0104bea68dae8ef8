"""cluster: tracks → identities (teams and players, or cast members), then the event's corrections.

**Games** (:mod:`tasks.cluster_game`, fragment merging in :mod:`tasks.cluster_fragments`): two teams
by kit colour, keepers and the referee among the outlier kits, and within a team the track fragments
chained into players by look, stature, gap and motion. How each threshold was chosen is written there.

**Episodes.** Face descriptors (dlib, 128-d) are averaged per track; tracks are grouped by scipy's
average-linkage agglomeration cut at ``face_distance`` = **0.5** (Euclidean). dlib's model is trained
so that two photos of one person are < 0.6 apart. On eight generated episodes (real LFW faces, each
cast member re-scaled, re-lit and tilted in every scene; 360p and 720p) one member's track means
stay within 0.25 of each other (0.17 at 720p) and distinct members' are ≥ 0.57 apart; 0.5 sits
between, a little under dlib's 0.6 so two similar-looking people are not merged. Each cluster is
a ``cast`` identity.

**Corrections** are applied last (see :mod:`tasks.corrections` for the payloads).

Shared pieces (parameters, an identity, per-track summaries) live in :mod:`tasks.cluster_base`; this
module holds episodes and the stage itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl
from prefect import task

from storage.artifacts import ArtifactRef, ArtifactStore, RunRef
from storage.schemas import polars_schema, validate_table
from tasks.cluster_base import (
    ClusterParams,
    EventKind,
    Identity,
    TrackInfo,
    embedding_vectors,
    flat_groups,
    track_infos,
)
from tasks.cluster_game import cluster_game
from tasks.common import as_frame, retry_transient, store
from tasks.corrections import (
    CorrectionIn,
    Resolver,
    SourceRun,
    apply_corrections,
    corrections_in,
    excluded_faces,
    map_tracks,
)

__all__ = [
    "ClusterParams",
    "CorrectionIn",
    "EventKind",
    "SourceRun",
    "cluster_episode",
    "cluster_task",
    "cluster_tracks",
    "corrections_in",
    "identities_table",
    "load_sources",
    "map_tracks",
]


# --- episodes ------------------------------------------------------------------------------------


def cluster_episode(embeddings: pl.DataFrame, params: ClusterParams) -> list[Identity]:
    """Cast members: average-linkage agglomeration of per-track mean face descriptors."""
    ids, vectors = embedding_vectors(embeddings, "face")
    if len(ids) == 0:
        return []
    frame = pl.DataFrame({"track_id": ids, "i": np.arange(len(ids))})
    per_track = frame.group_by("track_id", maintain_order=True).agg(pl.col("i"))
    track_ids = per_track["track_id"].to_list()
    means = np.stack([vectors[np.asarray(rows)].mean(axis=0) for rows in per_track["i"].to_list()])
    labels = flat_groups(means, params.face_distance)
    identities = []
    for g in range(labels.max() + 1):
        rows = np.flatnonzero(labels == g)
        centre = means[rows].mean(axis=0)
        spread = float(np.linalg.norm(means[rows] - centre, axis=1).mean()) if len(rows) > 1 else 0.0
        conf = float(np.clip(1 - spread / params.face_distance, 0, 1))
        identities.append(Identity("cast", {int(track_ids[r]) for r in rows}, confidence=conf))
    return identities


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


def _numbered(identities: list[Identity], infos: dict[int, TrackInfo]) -> dict[int, Identity]:
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
    resolver = Resolver(tracks, sources or {}, run_id, p.track_iou)
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
    state = _numbered(found, track_infos(tracks))
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
