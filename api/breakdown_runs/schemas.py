"""Bodies of the breakdown-runs API (breakdown-runs-api.md) and of the event/run writes designed in its style.

Field names are the document's, Mongo-flavoured: ``_id``, ``eventId``, ``fileUrl``, ``create$date``,
``modified$date``. Dates are ISO 8601 UTC with milliseconds and ``Z`` (``2024-01-20T14:45:00.000Z``).

The document's schema block labels ``mode`` with the six statuses; its field table and examples say
``mode`` is the processing mode (``ai`` or ``manual``), and that is what filmroom returns.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema, model_validator

from api.jobs.schemas import BreakdownOptions, VideoInput
from storage.repo import iso_utc

RunStatusValue = Literal["queued", "processing", "completed", "failed", "file_ready", "file_failed"]
RunModeValue = Literal["ai", "manual"]
EventKindValue = Literal["game", "episode"]
SortValue = Literal["modified$date", "-modified$date", "create$date", "-create$date"]

OBJECT_ID_PATTERN = r"^[0-9a-fA-F]{24}$"
DATE_EXAMPLE = "2024-01-20T14:45:00.000Z"

MsDateTime = Annotated[
    datetime,
    PlainSerializer(iso_utc, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time", "examples": [DATE_EXAMPLE]}),
]


class _Aliased(BaseModel):
    """Python names inside, the document's names on the wire."""

    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=True)


# --- reads -----------------------------------------------------------------------------------------


class BreakdownRunError(BaseModel):
    message: str = Field(description="What went wrong.", examples=["The camera angles do not line up."])
    code: str = Field(
        description="Error code: internal_server_error, athlete_id_issue, technical_issues, "
        "not_synchronized_camera_angles, wrong_sport, wrong_video, not_a_game, incomplete_video, "
        "missing_videos (or another code of filmroom's error registry).",
        examples=["not_synchronized_camera_angles"],
    )


class BreakdownRunResponse(_Aliased):
    """Complete breakdown run information with processing details and error tracking."""

    id: str = Field(
        alias="_id", description="The breakdown run's ObjectId.", examples=["507f191e810c19729de860ea"]
    )
    event_id: str = Field(
        alias="eventId", description="The event's ObjectId.", examples=["507f1f77bcf86cd799439011"]
    )
    status: RunStatusValue = Field(description="Current status of the breakdown run.")
    file_url: str | None = Field(
        alias="fileUrl",
        description="Download URL of the breakdown file (a short-lived signed link, no Authorization "
        "header needed); null until the file exists, when the run failed, or when the file is gone.",
    )
    mode: RunModeValue = Field(
        description="Processing mode: `ai` (filmroom's pipeline) or `manual` (an analyst uploads the file). "
        "The document's schema block lists statuses here; its field table and examples say ai/manual."
    )
    modified_date: MsDateTime = Field(alias="modified$date", description="Last modification timestamp.")
    create_date: MsDateTime = Field(alias="create$date", description="Creation timestamp.")
    tenant: str = Field(description="Tenant identifier.", examples=["tenant-123"])
    errors: list[BreakdownRunError] = Field(description="Errors of the run, oldest first (empty if none).")


class BreakdownRunsAggregatedResponse(_Aliased):
    """Breakdown runs grouped by event, with the modes the event has runs in."""

    latest: BreakdownRunResponse = Field(description="The most recently created run among `runs`.")
    runs: list[BreakdownRunResponse] = Field(
        description="The event's runs matching `mode`/`status`, in the requested sort order."
    )
    event_id: str = Field(alias="eventId", description="The event's ObjectId.")
    create_date: MsDateTime = Field(alias="create$date", description="Event creation timestamp.")
    modified_date: MsDateTime = Field(
        alias="modified$date", description="Last event modification (any of its runs changed)."
    )
    modes: list[RunModeValue] = Field(
        description="Every mode the event has runs in (regardless of the `mode`/`status` filters)."
    )


# --- writes ----------------------------------------------------------------------------------------


class EventCreate(BaseModel):
    """``POST /v1/events``: footage to break down, one video per camera angle."""

    model_config = ConfigDict(extra="forbid")

    kind: EventKindValue = Field(default="game", description="`game` (sports) or `episode` (broadcast).")
    sport: str = Field(
        pattern=r"^[a-z][a-z0-9_-]{0,31}$",
        description="Sport, lowercase (episodes: `broadcast`).",
        examples=["soccer"],
    )
    title: str = Field(default="", max_length=255, description="Readable name of the event.")
    videos: list[VideoInput] = Field(
        min_length=1,
        max_length=16,
        description="Camera angles: `{angle, url}`; `url` is http(s) or a local path inside the server's "
        "allowed footage folders; `angle` defaults to main, angle_2, ...",
    )

    @model_validator(mode="after")
    def _unique_angles(self) -> EventCreate:
        named = [video.angle for video in self.videos if video.angle is not None]
        if len(set(named)) != len(named):
            raise ValueError("camera angles must be unique within an event")
        return self


class EventVideo(BaseModel):
    angle: str = Field(description="Camera angle name.", examples=["main"])
    url: str = Field(description="Where the video is read from.")


class EventResponse(_Aliased):
    id: str = Field(alias="_id", description="The event's ObjectId.", examples=["507f1f77bcf86cd799439011"])
    kind: EventKindValue
    sport: str
    title: str
    videos: list[EventVideo] = Field(description="Camera angles of the event.")
    tenant: str = Field(description="Tenant identifier.")
    create_date: MsDateTime = Field(alias="create$date", description="Creation timestamp.")
    modified_date: MsDateTime = Field(alias="modified$date", description="Last modification timestamp.")


class BreakdownRunCreate(BaseModel):
    """``POST /v1/events/{id}/breakdown-runs``."""

    model_config = ConfigDict(extra="forbid")

    mode: RunModeValue = Field(
        default="ai",
        description="`ai`: filmroom's pipeline analyses the footage (queued at once). `manual`: the run "
        "waits (queued) for an analyst to upload the breakdown file with "
        "`PUT /v1/events/{eventId}/breakdown-runs/{id}/file`.",
    )
    options: BreakdownOptions = Field(
        default_factory=BreakdownOptions, description="Analysis options of an `ai` run (ignored for manual)."
    )


class BreakdownRunCreated(BreakdownRunResponse):
    """The new run, plus its Jobs API id (``GET /v1/jobs/{jobId}`` shows the same run)."""

    job_id: str = Field(alias="jobId", description="UUIDv4 of the same run in the Jobs API.")
