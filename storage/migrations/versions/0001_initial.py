"""initial schema: tenants, api keys, events, runs, webhooks (subscriptions, outbox, attempts), corrections

Written by hand and frozen: it names every type, constraint and index itself instead of importing
storage.models, so later model changes cannot rewrite history. tests/storage/test_db.py checks that
it and the models agree (alembic check) on SQLite and PostgreSQL.

Revision ID: 0001_initial
Revises:
Create Date: 2025-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)
OBJECT_ID = sa.String(24)
TENANT_ID = sa.String(64)


def _one_of(column: str, values: Sequence[str], name: str) -> sa.CheckConstraint:
    listed = ", ".join(f"'{value}'" for value in values)
    return sa.CheckConstraint(f"{column} IN ({listed})", name=op.f(name))


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", TENANT_ID, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenants")),
    )

    op.create_table(
        "api_keys",
        sa.Column("id", OBJECT_ID, nullable=False),
        sa.Column("tenant_id", TENANT_ID, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("last_used_at", TIMESTAMP, nullable=True),
        sa.Column("revoked_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_api_keys_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_index(op.f("ix_api_keys_tenant_id"), "api_keys", ["tenant_id"])
    op.create_index(op.f("ix_api_keys_prefix"), "api_keys", ["prefix"])

    op.create_table(
        "events",
        sa.Column("id", OBJECT_ID, nullable=False),
        sa.Column("tenant_id", TENANT_ID, nullable=False),
        sa.Column("kind", sa.String(7), nullable=False),
        sa.Column("sport", sa.String(32), nullable=False),
        sa.Column("title", sa.String(255), nullable=False),
        sa.Column("external_id", sa.String(128), nullable=True),
        sa.Column("sources", JSON, nullable=False),
        sa.Column("meta", JSON, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("modified_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_events_tenant_id_tenants"), ondelete="RESTRICT"
        ),
        sa.UniqueConstraint("id", "tenant_id", name=op.f("uq_events_id_tenant_id")),
        sa.UniqueConstraint("tenant_id", "external_id", name=op.f("uq_events_tenant_id_external_id")),
        _one_of("kind", ["game", "episode"], "ck_events_event_kind"),
    )
    op.create_index(
        op.f("ix_events_tenant_id_modified_at"), "events", ["tenant_id", sa.text("modified_at DESC")]
    )
    op.create_index(
        op.f("ix_events_tenant_id_created_at"), "events", ["tenant_id", sa.text("created_at DESC")]
    )

    op.create_table(
        "runs",
        sa.Column("id", OBJECT_ID, nullable=False),
        sa.Column("job_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("tenant_id", TENANT_ID, nullable=False),
        sa.Column("event_id", OBJECT_ID, nullable=False),
        sa.Column("mode", sa.String(6), nullable=False),
        sa.Column("job_type", sa.String(10), nullable=False),
        sa.Column("status", sa.String(11), nullable=False),
        sa.Column("errors", JSON, nullable=False),
        sa.Column("file_uri", sa.String(2048), nullable=True),
        sa.Column("flow_run_id", sa.String(64), nullable=True),
        sa.Column("params", JSON, nullable=False),
        sa.Column("progress", JSON, nullable=False),
        sa.Column("estimated_completion", TIMESTAMP, nullable=True),
        sa.Column("model_version", sa.String(128), nullable=True),
        sa.Column("code_version", sa.String(64), nullable=True),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("request_hash", sa.String(64), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=True),
        sa.Column("finished_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_runs_tenant_id_tenants"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["event_id", "tenant_id"],
            ["events.id", "events.tenant_id"],
            name=op.f("fk_runs_event_id_tenant_id_events"),
            ondelete="RESTRICT",
        ),
        sa.UniqueConstraint("job_id", name=op.f("uq_runs_job_id")),
        sa.UniqueConstraint("id", "tenant_id", name=op.f("uq_runs_id_tenant_id")),
        sa.UniqueConstraint("tenant_id", "idempotency_key", name=op.f("uq_runs_tenant_id_idempotency_key")),
        _one_of("mode", ["ai", "manual"], "ck_runs_run_mode"),
        _one_of("job_type", ["breakdown", "screentime"], "ck_runs_job_type"),
        _one_of(
            "status",
            ["queued", "processing", "completed", "failed", "file_ready", "file_failed"],
            "ck_runs_run_status",
        ),
    )
    op.create_index(op.f("ix_runs_tenant_id_updated_at"), "runs", ["tenant_id", sa.text("updated_at DESC")])
    op.create_index(op.f("ix_runs_event_id_created_at"), "runs", ["event_id", "created_at"])
    op.create_index(op.f("ix_runs_status"), "runs", ["status"])

    op.create_table(
        "webhook_subscriptions",
        sa.Column("id", OBJECT_ID, nullable=False),
        sa.Column("tenant_id", TENANT_ID, nullable=False),
        sa.Column("run_id", OBJECT_ID, nullable=True),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("secret", sa.String(255), nullable=True),
        sa.Column("events", JSON, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_subscriptions")),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_webhook_subscriptions_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id", "tenant_id"],
            ["runs.id", "runs.tenant_id"],
            name=op.f("fk_webhook_subscriptions_run_id_tenant_id_runs"),
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        op.f("ix_webhook_subscriptions_tenant_id_active"), "webhook_subscriptions", ["tenant_id", "active"]
    )
    op.create_index(op.f("ix_webhook_subscriptions_run_id"), "webhook_subscriptions", ["run_id"])

    op.create_table(
        "webhook_deliveries",
        sa.Column("id", OBJECT_ID, nullable=False),
        sa.Column("subscription_id", OBJECT_ID, nullable=False),
        sa.Column("run_id", OBJECT_ID, nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("status", sa.String(9), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TIMESTAMP, nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("delivered_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["webhook_subscriptions.id"],
            name=op.f("fk_webhook_deliveries_subscription_id_webhook_subscriptions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_webhook_deliveries_run_id_runs"), ondelete="CASCADE"
        ),
        _one_of(
            "status", ["pending", "failed", "delivered", "dead"], "ck_webhook_deliveries_delivery_status"
        ),
    )
    op.create_index(
        op.f("ix_webhook_deliveries_status_next_attempt_at"),
        "webhook_deliveries",
        ["status", "next_attempt_at"],
    )
    op.create_index(op.f("ix_webhook_deliveries_run_id"), "webhook_deliveries", ["run_id"])
    op.create_index(op.f("ix_webhook_deliveries_subscription_id"), "webhook_deliveries", ["subscription_id"])

    op.create_table(
        "webhook_delivery_attempts",
        sa.Column("delivery_id", OBJECT_ID, nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("delivery_id", "attempt", name=op.f("pk_webhook_delivery_attempts")),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["webhook_deliveries.id"],
            name=op.f("fk_webhook_delivery_attempts_delivery_id_webhook_deliveries"),
            ondelete="CASCADE",
        ),
    )

    op.create_table(
        "corrections",
        sa.Column("id", OBJECT_ID, nullable=False),
        sa.Column("tenant_id", TENANT_ID, nullable=False),
        sa.Column("event_id", OBJECT_ID, nullable=False),
        sa.Column("source_run_id", OBJECT_ID, nullable=True),
        sa.Column("kind", sa.String(14), nullable=False),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("author", sa.String(255), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_corrections")),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_corrections_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["event_id", "tenant_id"],
            ["events.id", "events.tenant_id"],
            name=op.f("fk_corrections_event_id_tenant_id_events"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["source_run_id"],
            ["runs.id"],
            name=op.f("fk_corrections_source_run_id_runs"),
            ondelete="SET NULL",
        ),
        _one_of(
            "kind",
            ["assign_cluster", "override_track", "exclude_track", "exclude_face"],
            "ck_corrections_correction_kind",
        ),
    )
    op.create_index(op.f("ix_corrections_event_id_active"), "corrections", ["event_id", "active"])


def downgrade() -> None:
    # Children first; dropping a table drops its indexes and constraints with it.
    for table in (
        "corrections",
        "webhook_delivery_attempts",
        "webhook_deliveries",
        "webhook_subscriptions",
        "runs",
        "events",
        "api_keys",
        "tenants",
    ):
        op.drop_table(table)
