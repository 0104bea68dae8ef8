"""Bodies of the per-tenant webhook endpoints (``/v1/webhooks``), in breakdown-runs-api.md's style:
``_id`` for ids, ``$date`` suffixes for times rendered as ISO 8601 with milliseconds and ``Z``, camelCase
names. The webhook body itself (:class:`BreakdownRunWebhook`) is the document's "Webhook Payload".
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema
from pydantic.json_schema import SkipJsonSchema

from storage.models import RunStatus
from storage.repo import iso_utc

RunStatusValue = Literal["queued", "processing", "completed", "failed", "file_ready", "file_failed"]
DeliveryStatusValue = Literal["pending", "failed", "delivered", "dead"]
ALL_STATUSES: tuple[RunStatusValue, ...] = (
    "queued",
    "processing",
    "completed",
    "failed",
    "file_ready",
    "file_failed",
)
assert set(ALL_STATUSES) == {status.value for status in RunStatus}

IsoDate = Annotated[
    datetime,
    PlainSerializer(iso_utc, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time", "examples": ["2024-01-20T14:45:00.000Z"]}),
]


class WebhookEndpointCreate(BaseModel):
    """``POST /v1/webhooks``: where to send the tenant's breakdown-run status changes."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        min_length=1,
        max_length=2048,
        description="Where each status change is POSTed; a public http(s) URL.",
        examples=["https://client.example.com/hooks/breakdown-runs"],
    )
    secret: str | None = Field(
        default=None,
        min_length=16,
        max_length=255,
        description="Signs every delivery (X-Hub-Signature-256 and Standard Webhooks headers). "
        "Omit it to have one generated; it is shown once, in this request's response.",
    )
    statuses: list[RunStatusValue] = Field(
        default_factory=lambda: list(ALL_STATUSES),
        min_length=1,
        max_length=len(ALL_STATUSES),
        description="Run statuses that trigger a delivery (default: all six).",
    )


class WebhookEndpoint(BaseModel):
    """A registered endpoint (its secret is never shown again after creation)."""

    id: str = Field(serialization_alias="_id", description="Endpoint id (ObjectId).")
    url: str = Field(description="Callback URL.")
    statuses: list[RunStatusValue] = Field(description="Run statuses that trigger a delivery.")
    tenant: str = Field(description="Tenant identifier.")
    create_date: IsoDate = Field(serialization_alias="create$date", description="When it was registered.")


class WebhookEndpointCreated(WebhookEndpoint):
    secret: str = Field(description="The signing secret: store it now, it is not shown again.")


class WebhookDeliveryAttempt(BaseModel):
    attempt: int = Field(ge=1, description="1 for the first attempt.")
    at_date: IsoDate = Field(serialization_alias="at$date", description="When the attempt was made.")
    statusCode: int | None = Field(description="The receiver's HTTP status; null when none came.")
    error: str | None = Field(description="Why the attempt failed, if it did.")
    durationMs: int = Field(ge=0, description="How long the attempt took.")


class WebhookDeliveryLog(BaseModel):
    """One delivery of one status change to this endpoint, with every attempt."""

    id: str = Field(serialization_alias="_id", description="Delivery id (also the webhook-id header).")
    eventId: str = Field(description="Event of the run.")
    breakdownRunId: str = Field(description="The run whose status changed.")
    status: RunStatusValue = Field(description="The status the delivery announces.")
    deliveryStatus: DeliveryStatusValue = Field(
        description="pending, failed (another attempt is scheduled), delivered or dead (retries exhausted)."
    )
    attempts: int = Field(ge=0, description="Attempts made so far.")
    create_date: IsoDate = Field(serialization_alias="create$date", description="When the status changed.")
    next_attempt_date: IsoDate | None = Field(
        serialization_alias="nextAttempt$date", description="When the next attempt is due, if any."
    )
    delivered_date: IsoDate | None = Field(
        serialization_alias="delivered$date", description="When a 2xx answer came, if one did."
    )
    log: list[WebhookDeliveryAttempt] = Field(description="Every attempt, oldest first.")


class BreakdownRunWebhook(BaseModel):
    """The body POSTed on a status change: breakdown-runs-api.md's "Webhook Payload", field for field.

    Optional fields are left out, never sent as null (the schema says so: they are not nullable).
    """

    eventId: str = Field(description="Event of the run.")
    breakdownRunId: str = Field(description="The breakdown run's id.")
    fileUrl: str | SkipJsonSchema[None] = Field(
        default=None,
        description="Short-lived download link of the breakdown file; only with status file_ready "
        "(made when the attempt is sent, so it is fresh on every retry).",
    )
    status: RunStatusValue = Field(description="The status the run moved to.")
    timestamp: int = Field(
        description="When the run moved to that status: milliseconds since the Unix epoch."
    )
    errorCode: str | SkipJsonSchema[None] = Field(
        default=None, description="Only on failed / file_failed: the error code."
    )
    errorMessage: str | SkipJsonSchema[None] = Field(
        default=None, description="Only on failed / file_failed: what went wrong."
    )
