"""export: ``breakdown.json``, the one file a client downloads — its schema is :class:`Breakdown`.

The schema is versioned by ``schema_version`` (:data:`BREAKDOWN_SCHEMA_VERSION`). Adding an optional
field keeps the version; renaming, removing or changing the meaning of a field bumps it. The JSON
Schema of the current version is ``Breakdown.model_json_schema()`` (every field has a description).

Layout (times in seconds from the start of the event, boxes never appear here)::

    schema_version, generated_at
    event       id, tenant, kind (game|episode), title, sport
    run         id, job_id, mode, preset (screentime preset)
    videos[]    angle, uri, width, height, fps, duration_s, offset_s
    duration_s  analysed duration of the event
    teams[]     team, identities (ids), seconds_on_screen, share, first/last_seen_s, intervals[]
    identities[] identity_id, kind, label, team, track_ids, confidence, corrected,
                seconds_on_screen, share, first/last_seen_s, intervals[]
    validation  ok, failed, warnings, summary figures, checks[] (the validation table)
    provenance  code_version, artifact_schema_version, table_versions, models, params (per stage:
                the run's, and ``screentime``: every rule of the preset the times were computed
                with, since a preset's rules can change between versions), corrections

:func:`build_breakdown` is pure (tables in, model out); :func:`export_breakdown` writes it atomically
through :class:`~storage.artifacts.ArtifactStore` and turns any failure into
:class:`~infra.errors.ExportFailed` (the run becomes ``file_failed``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Literal

import polars as pl
from prefect import task
from pydantic import BaseModel, ConfigDict, Field

from infra.errors import ExportFailed
from storage.artifacts import ArtifactStore, RunRef, code_version
from storage.schemas import ARTIFACT_SCHEMA_VERSION, TABLE_VERSIONS
from tasks.common import as_frame, retry_transient, store
from tasks.screentime import ScreentimeResult, event_duration, preset, teams_from_table
from tasks.validate import ValidationReport, VideoInfo, videos_from_manifest

BREAKDOWN_SCHEMA_VERSION: Final = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IntervalOut(_Model):
    start_s: float = Field(description="Start of an on-screen span, seconds from the event start.")
    end_s: float = Field(description="End of the span.")


class EventOut(_Model):
    id: str = Field(description="Event id (24-hex ObjectId).")
    tenant: str = Field(description="Tenant the event belongs to.")
    kind: Literal["game", "episode"] = Field(description="What the footage is.")
    title: str | None = Field(default=None, description="Event title.")
    sport: str | None = Field(default=None, description="Sport, for games.")


class RunOut(_Model):
    id: str = Field(description="Run id (24-hex ObjectId).")
    job_id: str | None = Field(default=None, description="The same run's UUIDv4 (Jobs API).")
    mode: str | None = Field(default=None, description="ai | manual.")
    preset: str = Field(description="Screentime preset the times were computed with.")


class VideoOut(_Model):
    angle: str = Field(description="Camera angle name.")
    uri: str | None = Field(default=None, description="Where the source came from.")
    width: int = Field(description="Frame width, pixels.")
    height: int = Field(description="Frame height, pixels.")
    fps: float = Field(description="Frame rate of the source.")
    duration_s: float = Field(description="Duration of the source, seconds.")
    offset_s: float = Field(default=0.0, description="Start of the source on the event clock.")


class ScreenTimeOut(_Model):
    seconds_on_screen: float = Field(description="Seconds on screen (merged intervals).")
    share: float = Field(description="seconds_on_screen / duration_s, 0..1.")
    first_seen_s: float | None = Field(default=None, description="First time on screen; null if never.")
    last_seen_s: float | None = Field(default=None, description="Last time on screen; null if never.")
    intervals: list[IntervalOut] = Field(default_factory=list, description="On-screen spans.")


class TeamOut(ScreenTimeOut):
    team: str = Field(description="Team key (A/B) or the name a correction gave it.")
    identities: list[int] = Field(description="Identity ids of the team's members.")


class IdentityOut(ScreenTimeOut):
    identity_id: int = Field(description="Identity id, unique within the run.")
    kind: Literal["player", "referee", "cast", "other"] = Field(description="What the identity is.")
    label: str | None = Field(default=None, description="Name, when a correction gave one.")
    team: str | None = Field(default=None, description="Team key or name; null if none.")
    track_ids: list[int] = Field(description="Tracks (tracks.parquet) grouped into the identity.")
    confidence: float = Field(description="Clustering confidence, 0..1.")
    corrected: bool = Field(description="True when a human correction decided the identity.")


class CheckOut(_Model):
    check_name: str = Field(description="Integrity check.")
    status: Literal["pass", "warn", "fail"] = Field(description="Outcome.")
    value: float = Field(description="Measured value.")
    threshold: float | None = Field(default=None, description="Threshold it was held to.")
    message: str = Field(description="Human-readable outcome.")


class ValidationOut(_Model):
    ok: bool = Field(description="No integrity check failed.")
    failed: list[str] = Field(default_factory=list, description="Names of failed checks.")
    warnings: list[str] = Field(default_factory=list, description="Names of checks that warned.")
    summary: dict[str, Any] = Field(
        default_factory=dict, description="Coverage, short tracks, identities/min..."
    )
    checks: list[CheckOut] = Field(default_factory=list, description="Every check (validation.parquet).")


class ProvenanceOut(_Model):
    code_version: str = Field(description="filmroom version that produced the run.")
    artifact_schema_version: int = Field(description="Version of the Parquet artifact layout.")
    table_versions: dict[str, int] = Field(description="Per-table schema versions.")
    models: dict[str, str] = Field(default_factory=dict, description="Model per role (detector, embedders).")
    params: dict[str, Any] = Field(default_factory=dict, description="Parameters per stage.")
    corrections_applied: int = Field(default=0, description="Active corrections of the event applied.")


class Breakdown(_Model):
    """breakdown.json: who was on screen, where, for how long, on which team."""

    schema_version: Literal[1] = Field(default=BREAKDOWN_SCHEMA_VERSION, description="Schema version.")
    generated_at: datetime = Field(description="When the file was built (UTC).")
    event: EventOut
    run: RunOut
    videos: list[VideoOut]
    duration_s: float = Field(description="Analysed duration of the event, seconds.")
    teams: list[TeamOut] = Field(default_factory=list, description="Per-team screen time (games).")
    identities: list[IdentityOut] = Field(default_factory=list, description="Per-identity screen time.")
    validation: ValidationOut
    provenance: ProvenanceOut


def _intervals(items: Sequence[Mapping[str, float]] | Sequence[tuple[float, float]]) -> list[IntervalOut]:
    out = []
    for item in items:
        if isinstance(item, Mapping):
            out.append(IntervalOut(start_s=item["start_s"], end_s=item["end_s"]))
        else:
            out.append(IntervalOut(start_s=item[0], end_s=item[1]))
    return out


def build_breakdown(
    *,
    event: EventOut,
    run: RunOut,
    videos: Sequence[VideoInfo],
    identities: pl.DataFrame,
    screentime: ScreentimeResult,
    validation: ValidationReport,
    models: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
    corrections_applied: int = 0,
    generated_at: datetime | None = None,
) -> Breakdown:
    """The breakdown of one run (pure)."""
    times = {r["identity_id"]: r for r in screentime.table.iter_rows(named=True)}
    people = []
    for row in identities.sort("identity_id").iter_rows(named=True):
        st = times.get(row["identity_id"], {})
        people.append(
            IdentityOut(
                identity_id=row["identity_id"],
                kind=row["kind"],
                label=row["label"],
                team=row["team"],
                track_ids=list(row["track_ids"]),
                confidence=float(row["confidence"]),
                corrected=bool(row["corrected"]),
                seconds_on_screen=float(st.get("seconds_on_screen", 0.0)),
                share=float(st.get("share", 0.0)),
                first_seen_s=st.get("first_seen_s"),
                last_seen_s=st.get("last_seen_s"),
                intervals=_intervals(st.get("intervals", [])),
            )
        )
    members: dict[str, list[int]] = {}
    for person in people:
        if person.team is not None:
            members.setdefault(person.team, []).append(person.identity_id)
    teams = [
        TeamOut(
            team=t.team,
            identities=members.get(t.team, []),
            seconds_on_screen=t.seconds_on_screen,
            share=t.share,
            first_seen_s=t.first_seen_s,
            last_seen_s=t.last_seen_s,
            intervals=_intervals(t.intervals),
        )
        for t in screentime.teams
    ]
    summary = dict(validation.summary)
    return Breakdown(
        generated_at=generated_at or datetime.now(UTC),
        event=event,
        run=run,
        videos=[
            VideoOut(
                angle=v.angle,
                uri=v.uri,
                width=v.width,
                height=v.height,
                fps=v.fps,
                duration_s=v.duration_s,
                offset_s=v.offset_s,
            )
            for v in videos
        ],
        duration_s=screentime.duration_s,
        teams=teams,
        identities=people,
        validation=ValidationOut(
            ok=bool(summary.pop("ok", False)),
            failed=list(summary.pop("failed", [])),
            warnings=list(summary.pop("warnings", [])),
            summary=summary,
            checks=[CheckOut(**r) for r in validation.table.iter_rows(named=True)],
        ),
        provenance=ProvenanceOut(
            code_version=code_version(),
            artifact_schema_version=ARTIFACT_SCHEMA_VERSION,
            table_versions={t.value: v for t, v in TABLE_VERSIONS.items()},
            models=dict(models or {}),
            params=_stage_params(params, screentime),
            corrections_applied=corrections_applied,
        ),
    )


def export_breakdown(store: ArtifactStore, ref: RunRef, breakdown: Breakdown) -> str:
    """Write ``breakdown.json`` atomically; its URL. Any failure is :class:`ExportFailed`."""
    try:
        checked = Breakdown.model_validate(breakdown.model_dump())
        return store.write_json(ref, "breakdown", checked.model_dump(mode="json"))
    except ExportFailed:
        raise
    except Exception as exc:
        raise ExportFailed(
            f"breakdown.json could not be written: {type(exc).__name__}: {exc}", run=str(ref)
        ) from exc


def _stage_params(params: Mapping[str, Any] | None, screentime: ScreentimeResult) -> dict[str, Any]:
    """The run's parameters per stage, with the screentime preset's rules under ``screentime``."""
    out = dict(params or {})
    out["screentime"] = {**dict(out.get("screentime") or {}), **screentime.params.model_dump(mode="json")}
    return out


# --- the stage -------------------------------------------------------------------------------------


@task(name="export", retries=2, retry_delay_seconds=1, retry_condition_fn=retry_transient)
def export_task(
    ref: RunRef,
    *,
    event: EventOut,
    run: RunOut,
    models: dict[str, str],
    corrections_applied: int = 0,
) -> str:
    """The run's tables and manifest → breakdown.json (its URL); ExportFailed on any failure."""
    try:
        artifacts = store()
        manifest = artifacts.read_manifest(ref)
        videos = videos_from_manifest(manifest.videos)
        duration = event_duration(manifest.videos)
        table = as_frame(artifacts.read_table(ref, "screentime"))
        names = table["preset"].unique().to_list()
        result = ScreentimeResult(
            table=table,
            teams=teams_from_table(table, duration),
            duration_s=duration,
            sample_period_s=0.0,
            params=preset(names[0]) if names else preset(run.preset),
        )
        summary = (manifest.model_extra or {}).get("validation", {})
        breakdown = build_breakdown(
            event=event,
            run=run,
            videos=videos,
            identities=as_frame(artifacts.read_table(ref, "identities")),
            screentime=result,
            validation=ValidationReport(as_frame(artifacts.read_table(ref, "validation")), dict(summary)),
            models=models,
            params=manifest.params,
            corrections_applied=corrections_applied,
        )
    except Exception as exc:
        raise ExportFailed(
            f"breakdown.json could not be built: {type(exc).__name__}: {exc}", run=str(ref)
        ) from exc
    return export_breakdown(artifacts, ref, breakdown)
