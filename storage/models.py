"""filmroom's tables: the system of record for tenants, events, runs, webhooks and corrections.

Only tables (and the small value types stored in their JSON columns) live here. API schemas — the
Create/Update/Public members of each family — live beside their routers and derive from the
``*Base`` classes below, which hold the client-settable fields.

Conventions:

* every timestamp is a :class:`UTCDateTime`: timezone-aware UTC in Python, millisecond precision in
  both databases (the APIs render milliseconds, so a value read back equals the value shown to clients);
* enums are stored as VARCHAR plus a named CHECK constraint, not PostgreSQL ENUM types, so adding a
  value is a one-line batch migration on both databases;
* JSON columns are JSONB on PostgreSQL and JSON text on SQLite; JSON lists/dicts are replaced, never
  mutated in place (SQLAlchemy does not see in-place changes);
* a child row repeats its parent's ``tenant_id`` and a composite foreign key
  ``(parent_id, tenant_id) -> parent(id, tenant_id)`` makes a cross-tenant reference impossible.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydanticField
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel, col

from infra.ids import new_job_id, new_object_id

# Deterministic constraint names: downgrades and SQLite batch migrations refer to constraints by name.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
SQLModel.metadata.naming_convention = NAMING_CONVENTION


# --- column types ----------------------------------------------------------------------------------


def utc_now() -> datetime:
    """The current time as stored: aware UTC, truncated to milliseconds."""
    return to_stored_utc(datetime.now(UTC))


def to_stored_utc(value: datetime) -> datetime:
    """``value`` in UTC at millisecond precision; a naive datetime is refused (its zone is unknown)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()} refused: filmroom stores aware UTC times")
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond - value.microsecond % 1000)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """TIMESTAMPTZ on PostgreSQL; naive-UTC text on SQLite (which has no zones); aware UTC in Python."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        stored = to_stored_utc(value)
        # SQLite's text format must be zone-free so that string comparison is time comparison.
        return stored.replace(tzinfo=None) if dialect.name == "sqlite" else stored

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
OBJECT_ID = sa.String(24)


def _str_enum(enum: type[StrEnum], name: str) -> sa.Enum:
    """VARCHAR + CHECK constraint ``ck_<table>_<name>`` holding the enum's values (not a native ENUM)."""
    return sa.Enum(
        enum,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=max(len(member.value) for member in enum),
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )


# --- enums -----------------------------------------------------------------------------------------


class EventKind(StrEnum):
    game = "game"
    episode = "episode"


class RunMode(StrEnum):
    ai = "ai"
    manual = "manual"


class JobType(StrEnum):
    breakdown = "breakdown"
    screentime = "screentime"


class RunStatus(StrEnum):
    """A run's status as breakdown-runs-api.md names it; the jobs view is derived from it."""

    queued = "queued"
    processing = "processing"
    completed = "completed"
    failed = "failed"
    file_ready = "file_ready"
    file_failed = "file_failed"


class DeliveryStatus(StrEnum):
    pending = "pending"  # waiting for its first attempt
    failed = "failed"  # an attempt failed; another is scheduled at next_attempt_at
    delivered = "delivered"
    dead = "dead"  # retries exhausted


class CorrectionKind(StrEnum):
    assign_cluster = "assign_cluster"
    override_track = "override_track"
    exclude_track = "exclude_track"
    exclude_face = "exclude_face"


# --- JSON value types (validated in storage.repo before they are stored as plain JSON) --------------


class EventSource(BaseModel):
    """One camera angle or video file of an event."""

    model_config = ConfigDict(extra="forbid")

    angle: str = PydanticField(min_length=1, max_length=64, description="Camera angle name, e.g. 'main'.")
    uri: str = PydanticField(min_length=1, max_length=2048, description="fsspec URL or local path.")
    offset_s: float | None = PydanticField(
        default=None, description="Start of this angle relative to the event clock, in seconds."
    )


class RunError(BaseModel):
    """One entry of ``runs.errors``; ``code`` is a code of the error registry (infra.errors)."""

    code: str
    message: str
    timestamp: datetime


class RunProgress(BaseModel):
    """``runs.progress``: where the flow is."""

    stage: str
    fraction: float = PydanticField(ge=0.0, le=1.0)
    eta: datetime | None = None


# --- tables ----------------------------------------------------------------------------------------


class TenantBase(SQLModel):
    name: str = Field(sa_type=sa.String(255), min_length=1, max_length=255)


class Tenant(TenantBase, table=True):
    __tablename__ = "tenants"

    id: str = Field(primary_key=True, sa_type=sa.String(64), description="Slug, e.g. 'tenant-123'.")
    created_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)


class ApiKey(SQLModel, table=True):
    """A Jobs-API bearer key. Only its sha256 is stored; the plaintext is shown once at creation."""

    __tablename__ = "api_keys"

    id: str = Field(default_factory=new_object_id, primary_key=True, sa_type=OBJECT_ID)
    tenant_id: str = Field(foreign_key="tenants.id", ondelete="CASCADE", sa_type=sa.String(64), index=True)
    name: str = Field(sa_type=sa.String(255))
    prefix: str = Field(sa_type=sa.String(16), index=True, description="Public lookup prefix of the key.")
    key_hash: str = Field(sa_type=sa.String(64), unique=True, description="sha256 hex of the whole key.")
    created_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)
    last_used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class EventBase(SQLModel):
    kind: EventKind = Field(sa_type=_str_enum(EventKind, "event_kind"))
    sport: str = Field(sa_type=sa.String(32), min_length=1, max_length=32)
    title: str = Field(sa_type=sa.String(255), max_length=255)
    external_id: str | None = Field(
        default=None,
        sa_type=sa.String(128),
        max_length=128,
        description="The client's own id (an episode's ep_id, a capture match_id); unique per tenant.",
    )
    sources: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSONType)
    meta: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)


class Event(EventBase, table=True):
    """Footage to analyse. ``sources`` is a JSON list of :class:`EventSource`: a handful of angles,
    always read and written with the event, never queried on their own."""

    __tablename__ = "events"
    __table_args__ = (
        sa.UniqueConstraint("id", "tenant_id"),  # target of the children's composite foreign keys
        sa.UniqueConstraint("tenant_id", "external_id"),
        sa.UniqueConstraint("tenant_id", "idempotency_key"),
    )

    id: str = Field(default_factory=new_object_id, primary_key=True, sa_type=OBJECT_ID)
    tenant_id: str = Field(foreign_key="tenants.id", ondelete="RESTRICT", sa_type=sa.String(64))
    idempotency_key: str | None = Field(
        default=None, sa_type=sa.String(255), description="Idempotency-Key of the POST that created it."
    )
    request_hash: str | None = Field(default=None, sa_type=sa.String(64))
    created_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)
    modified_at: datetime = Field(
        default_factory=utc_now, sa_type=UTCDateTime, description="Bumped whenever one of its runs changes."
    )


class RunBase(SQLModel):
    mode: RunMode = Field(default=RunMode.ai, sa_type=_str_enum(RunMode, "run_mode"))
    job_type: JobType = Field(default=JobType.breakdown, sa_type=_str_enum(JobType, "job_type"))
    params: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)


class Run(RunBase, table=True):
    """One processing attempt over an event, addressable by ObjectId (``id``) and UUIDv4 (``job_id``)."""

    __tablename__ = "runs"
    __table_args__ = (
        sa.UniqueConstraint("id", "tenant_id"),
        sa.UniqueConstraint("tenant_id", "idempotency_key"),
        sa.ForeignKeyConstraint(
            ["event_id", "tenant_id"], ["events.id", "events.tenant_id"], ondelete="RESTRICT"
        ),
        sa.Index("ix_runs_event_id_created_at", "event_id", "created_at"),
        sa.Index("ix_runs_status", "status"),
    )

    id: str = Field(default_factory=new_object_id, primary_key=True, sa_type=OBJECT_ID)
    job_id: str = Field(default_factory=new_job_id, unique=True, sa_type=sa.Uuid(as_uuid=False))
    tenant_id: str = Field(foreign_key="tenants.id", ondelete="RESTRICT", sa_type=sa.String(64))
    event_id: str = Field(sa_type=OBJECT_ID)
    status: RunStatus = Field(default=RunStatus.queued, sa_type=_str_enum(RunStatus, "run_status"))
    errors: list[dict[str, Any]] = Field(
        default_factory=list, sa_type=JSONType, description="RunError entries, oldest first."
    )
    file_uri: str | None = Field(default=None, sa_type=sa.String(2048))
    flow_run_id: str | None = Field(default=None, sa_type=sa.String(64), description="Prefect flow run.")
    progress: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType, description="RunProgress.")
    estimated_completion: datetime | None = Field(default=None, sa_type=UTCDateTime)
    model_version: str | None = Field(default=None, sa_type=sa.String(128))
    code_version: str | None = Field(default=None, sa_type=sa.String(64))
    idempotency_key: str | None = Field(default=None, sa_type=sa.String(255))
    request_hash: str | None = Field(default=None, sa_type=sa.String(64))
    created_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class WebhookSubscriptionBase(SQLModel):
    url: str = Field(sa_type=sa.String(2048), max_length=2048)
    events: list[str] = Field(
        default_factory=list,
        sa_type=JSONType,
        description='Event types wanted: "job.success"/"job.fail" or breakdown run statuses.',
    )


class WebhookSubscription(WebhookSubscriptionBase, table=True):
    """Tenant-wide (``run_id`` NULL, breakdown-runs API) or for one job (Jobs API ``webhooks``)."""

    __tablename__ = "webhook_subscriptions"
    __table_args__ = (
        sa.ForeignKeyConstraint(["run_id", "tenant_id"], ["runs.id", "runs.tenant_id"], ondelete="CASCADE"),
        sa.Index("ix_webhook_subscriptions_tenant_id_active", "tenant_id", "active"),
        sa.Index("ix_webhook_subscriptions_run_id", "run_id"),
    )

    id: str = Field(default_factory=new_object_id, primary_key=True, sa_type=OBJECT_ID)
    tenant_id: str = Field(foreign_key="tenants.id", ondelete="CASCADE", sa_type=sa.String(64))
    run_id: str | None = Field(default=None, sa_type=OBJECT_ID)
    secret: str | None = Field(
        default=None,
        sa_type=sa.String(255),
        description="HMAC secret (needed in clear to sign); NULL signs with the settings' signing secret.",
    )
    created_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)
    active: bool = Field(default=True)


class WebhookDelivery(SQLModel, table=True):
    """The outbox: one row per (subscription, event) written in the transaction of the status change.

    ``payload`` is a snapshot of the run at that moment; the dispatcher renders the contract's body
    from it at send time (signed file links and ``webhook_timestamp`` must be fresh on every attempt).
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        sa.Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
        sa.Index("ix_webhook_deliveries_run_id", "run_id"),
        sa.Index("ix_webhook_deliveries_subscription_id", "subscription_id"),
    )

    id: str = Field(default_factory=new_object_id, primary_key=True, sa_type=OBJECT_ID)
    subscription_id: str = Field(
        foreign_key="webhook_subscriptions.id", ondelete="CASCADE", sa_type=OBJECT_ID
    )
    run_id: str = Field(foreign_key="runs.id", ondelete="CASCADE", sa_type=OBJECT_ID)
    event_type: str = Field(sa_type=sa.String(64))
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    status: DeliveryStatus = Field(
        default=DeliveryStatus.pending, sa_type=_str_enum(DeliveryStatus, "delivery_status")
    )
    attempts: int = Field(default=0)
    next_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_status_code: int | None = Field(default=None)
    last_error: str | None = Field(default=None, sa_type=sa.Text)
    created_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class WebhookDeliveryAttempt(SQLModel, table=True):
    """The log behind ``GET /v1/jobs/{id}/deliveries``: one row per HTTP attempt."""

    __tablename__ = "webhook_delivery_attempts"

    delivery_id: str = Field(
        foreign_key="webhook_deliveries.id", ondelete="CASCADE", primary_key=True, sa_type=OBJECT_ID
    )
    attempt: int = Field(primary_key=True, description="1 for the first attempt.")
    at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)
    status_code: int | None = Field(default=None)
    error: str | None = Field(default=None, sa_type=sa.Text)
    duration_ms: int = Field(default=0)


class CorrectionBase(SQLModel):
    kind: CorrectionKind = Field(sa_type=_str_enum(CorrectionKind, "correction_kind"))
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    author: str = Field(sa_type=sa.String(255), max_length=255)


class Correction(CorrectionBase, table=True):
    """A human fix scoped to the event, so every later run of the event applies it."""

    __tablename__ = "corrections"
    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["event_id", "tenant_id"], ["events.id", "events.tenant_id"], ondelete="CASCADE"
        ),
        sa.Index("ix_corrections_event_id_active", "event_id", "active"),
    )

    id: str = Field(default_factory=new_object_id, primary_key=True, sa_type=OBJECT_ID)
    tenant_id: str = Field(foreign_key="tenants.id", ondelete="CASCADE", sa_type=sa.String(64))
    event_id: str = Field(sa_type=OBJECT_ID)
    source_run_id: str | None = Field(
        default=None,
        foreign_key="runs.id",
        ondelete="SET NULL",
        sa_type=OBJECT_ID,
        description="The run whose track/cluster ids the payload refers to (ids differ between runs).",
    )
    created_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)
    active: bool = Field(default=True)


# The listings' indexes (newest first per tenant) need column objects for DESC, hence declared here.
sa.Index("ix_events_tenant_id_modified_at", col(Event.tenant_id), col(Event.modified_at).desc())
sa.Index("ix_events_tenant_id_created_at", col(Event.tenant_id), col(Event.created_at).desc())
sa.Index("ix_runs_tenant_id_updated_at", col(Run.tenant_id), col(Run.updated_at).desc())
