"""Request and response bodies of the Jobs API (jobs-api.md), plus the two job types' specs.

Job types (``job.type``):

* ``breakdown`` — a game: one or more camera ``videos`` (``{url, angle}``), the ``sport``, a ``title``
  and analysis ``options``. Results: who was on screen for how long, per team and player.
* ``screentime`` — a broadcast episode: its ``videos`` (parts of the episode), optional ``cast`` hints
  (names the clustering may attach to faces) and ``options``. Results: screen time per cast member.

A video ``url`` is an ``http(s)`` URL or a local path (or ``file://`` URL) inside one of
``settings.ingest.allowed_roots``. Every timestamp is ISO 8601 UTC with ``Z``, to the second
(``2025-08-27T14:30:00Z``), as the contract writes them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema, model_validator

JobStatusValue = Literal["queued", "processing", "completed", "failed"]
WebhookEvent = Literal["job.success", "job.fail"]
DeliveryStatusValue = Literal["pending", "failed", "delivered", "dead"]


def to_iso_z(value: datetime) -> str:
    """``2025-08-27T14:30:00Z``."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


UtcDateTime = Annotated[
    datetime,
    PlainSerializer(to_iso_z, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time", "examples": ["2025-08-27T14:30:00Z"]}),
]

ANGLE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- job specs -------------------------------------------------------------------------------------


class VideoInput(_Strict):
    url: str = Field(
        min_length=1,
        max_length=2048,
        description="http(s) URL of the video, or a local path / file:// URL inside one of the "
        "server's allowed footage folders.",
        examples=["https://cdn.example.com/games/1234/main.mp4"],
    )
    angle: str | None = Field(
        default=None,
        pattern=ANGLE_PATTERN,
        description="Camera angle name, unique within the job (default: main, angle_2, angle_3, ...).",
        examples=["main"],
    )


class BreakdownOptions(_Strict):
    analysis_fps: float | None = Field(
        default=None, gt=0, le=120, description="Frames per second analysed (default: the server's)."
    )
    tracker: Literal["bytetrack", "botsort"] | None = Field(
        default=None, description="Tracker used inside each chunk (default: the server's)."
    )
    min_confidence: float | None = Field(
        default=None, ge=0, le=1, description="Minimum detection confidence (default: the server's)."
    )
    screentime_preset: Literal["default", "strict", "broadcast"] | None = Field(
        default=None,
        description="How samples become on-screen time (tasks/screentime.py): default = time in the "
        "picture, strict = only detected samples, broadcast = continuous spans (default: default).",
    )


class ScreentimeOptions(_Strict):
    analysis_fps: float | None = Field(
        default=None, gt=0, le=120, description="Frames per second analysed (default: the server's)."
    )
    min_face_px: int | None = Field(
        default=None, ge=8, le=1024, description="Smallest face, in pixels, that counts as on screen."
    )
    screentime_preset: Literal["default", "strict", "broadcast"] | None = Field(
        default=None,
        description="How samples become on-screen time (tasks/screentime.py): default = time in the "
        "picture, strict = only detected samples, broadcast = continuous spans (default: default).",
    )


class CastMember(_Strict):
    name: str = Field(min_length=1, max_length=255, description="Performer's name.")
    character: str | None = Field(default=None, max_length=255, description="Role played, if any.")


def _check_angles(videos: list[VideoInput]) -> None:
    named = [video.angle for video in videos if video.angle is not None]
    if len(set(named)) != len(named):
        raise ValueError("video angles must be unique within a job")


class BreakdownJob(_Strict):
    """A game to break down."""

    type: Literal["breakdown"] = Field(description="Job type.")
    videos: list[VideoInput] = Field(min_length=1, max_length=16, description="Camera angles of the game.")
    sport: str = Field(
        pattern=r"^[a-z][a-z0-9_-]{0,31}$", description="Sport, lowercase.", examples=["soccer"]
    )
    title: str | None = Field(default=None, max_length=255, description="Readable name of the game.")
    options: BreakdownOptions = Field(default_factory=BreakdownOptions, description="Analysis options.")

    @model_validator(mode="after")
    def _unique_angles(self) -> BreakdownJob:
        _check_angles(self.videos)
        return self


class ScreentimeJob(_Strict):
    """A broadcast episode whose cast's screen time is measured."""

    type: Literal["screentime"] = Field(description="Job type.")
    videos: list[VideoInput] = Field(min_length=1, max_length=16, description="The episode's video files.")
    title: str | None = Field(default=None, max_length=255, description="Readable name of the episode.")
    episode_id: str | None = Field(default=None, max_length=128, description="The client's own episode id.")
    cast: list[CastMember] | None = Field(
        default=None, max_length=500, description="Optional cast hints to name the identities found."
    )
    options: ScreentimeOptions = Field(default_factory=ScreentimeOptions, description="Analysis options.")

    @model_validator(mode="after")
    def _unique_angles(self) -> ScreentimeJob:
        _check_angles(self.videos)
        return self


JobSpec = Annotated[BreakdownJob | ScreentimeJob, Field(discriminator="type")]


class WebhookInput(_Strict):
    url: str = Field(
        min_length=1,
        max_length=2048,
        description="Where the POST is sent; must be a public http(s) URL.",
        examples=["https://client.example.com/webhook/results"],
    )
    secret: str = Field(
        min_length=1, max_length=255, description="Secret that signs the webhook (X-Hub-Signature-256)."
    )
    events: list[WebhookEvent] = Field(
        min_length=1, max_length=2, description="Events that trigger the webhook."
    )


class JobCreate(_Strict):
    """``POST /v1/jobs`` body."""

    job: JobSpec
    webhooks: list[WebhookInput] = Field(
        default_factory=list, max_length=10, description="Webhooks called on job events."
    )


# --- responses -------------------------------------------------------------------------------------


class JobCreated(BaseModel):
    job_id: str = Field(description="UUIDv4 of the job.", examples=["550e8400-e29b-41d4-a716-446655440000"])
    created_at: UtcDateTime = Field(description="When the job was created.")
    estimated_completion: UtcDateTime = Field(description="When the job is expected to finish.")


class JobError(BaseModel):
    code: str = Field(description="Error code.", examples=["processing_failed"])
    timestamp: UtcDateTime = Field(description="When the error occurred.")
    details: str = Field(description="What went wrong.")


class IdentityScreenTime(BaseModel):
    """One identity's screen time, as ``breakdown.json`` states it (intervals are in the file)."""

    identity_id: int = Field(description="Identity id, unique within the job.")
    kind: str = Field(description="player, referee, cast or other.")
    label: str | None = Field(default=None, description="Name or label, when known.")
    team: str | None = Field(default=None, description="Team key or name, if any.")
    seconds_on_screen: float = Field(ge=0, description="Seconds on screen.")
    share: float = Field(ge=0, le=1, description="Share of the analysed duration, 0..1.")
    first_seen_s: float | None = Field(default=None, description="First time on screen, seconds.")
    last_seen_s: float | None = Field(default=None, description="Last time on screen, seconds.")


class TeamScreenTime(BaseModel):
    team: str = Field(description="Team key or name.")
    seconds_on_screen: float = Field(ge=0, description="Seconds any member was on screen.")
    share: float = Field(ge=0, le=1, description="Share of the analysed duration, 0..1.")


class ScreenTimeSummary(BaseModel):
    """The screen-time summary of a completed job (the full detail is in the breakdown file)."""

    duration_s: float = Field(ge=0, description="Analysed duration, seconds.")
    identities: list[IdentityScreenTime] = Field(description="Per identity, as in breakdown.json.")
    teams: list[TeamScreenTime] = Field(description="Per team (games); empty for episodes.")


class JobResults(BaseModel):
    breakdown_url: str | None = Field(description="Link to the breakdown file (breakdown.json).")
    artifacts: dict[str, str] = Field(
        description="Links to the run's files by name: Parquet tables (tracks, screentime, ...), "
        "breakdown.json, manifest.json."
    )
    screentime: ScreenTimeSummary | None = Field(
        description="Screen-time summary from the breakdown file, or null when it has none."
    )


class JobSummary(BaseModel):
    job_id: str = Field(description="UUIDv4 of the job.")
    job_type: Literal["breakdown", "screentime"] = Field(description="Type of the job.")
    status: JobStatusValue = Field(description="queued, processing, completed or failed.")
    created_at: UtcDateTime
    updated_at: UtcDateTime
    estimated_completion: UtcDateTime


class JobStatus(JobSummary):
    errors: list[JobError] | None = Field(description="Errors of the job, or null.")
    results: JobResults | None = Field(description="Results when the job is completed, else null.")


class JobWebhookBody(JobStatus):
    """What a ``job.success`` / ``job.fail`` webhook POSTs: the job status plus ``webhook_timestamp``."""

    webhook_timestamp: UtcDateTime = Field(description="When this webhook attempt was sent.")


class DeliveryAttempt(BaseModel):
    attempt: int = Field(ge=1, description="1 for the first attempt.")
    at: UtcDateTime
    status_code: int | None = Field(description="Receiver's HTTP status, null when no answer came.")
    error: str | None = Field(description="Why the attempt failed, if it did.")
    duration_ms: int = Field(ge=0)


class Delivery(BaseModel):
    delivery_id: str = Field(description="Id of the delivery (also sent as the webhook-id header).")
    event: str = Field(description="Event type, e.g. job.success.", examples=["job.success"])
    url: str = Field(description="Callback URL.")
    status: DeliveryStatusValue = Field(description="pending, failed (will retry), delivered or dead.")
    attempts: int = Field(ge=0, description="Attempts made so far.")
    created_at: UtcDateTime
    next_attempt_at: UtcDateTime | None = Field(description="When the next attempt is due, if any.")
    delivered_at: UtcDateTime | None
    last_status_code: int | None
    last_error: str | None
    log: list[DeliveryAttempt] = Field(description="Every attempt, oldest first.")


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    database: Literal["ok"] = "ok"


def dump(model: BaseModel) -> dict[str, Any]:
    """The JSON form of a response model (what clients and webhook receivers see)."""
    return model.model_dump(mode="json")
