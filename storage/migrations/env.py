"""Alembic environment, configured in code by :func:`storage.db.alembic_config` (there is no alembic.ini).

The URL comes from ``config.attributes["database_url"]`` (or an open ``connection``), falling back
to filmroom's settings. Concurrent migrations are serialized — an advisory lock on PostgreSQL,
BEGIN IMMEDIATE on SQLite — so several processes may call ``init_db()`` at start-up.

On SQLite, migrations run with foreign keys OFF — batch mode rebuilds a table by copy-and-rename,
and with them ON, dropping the old copy would cascade-delete child rows — and
``PRAGMA foreign_key_check`` verifies the result before the commit.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

import storage.models  # noqa: F401  (registers filmroom's tables on SQLModel.metadata)
from infra.settings import get_settings
from storage.db import SQLITE_BEGIN_OPTION, create_engine_for, normalize_url

config = context.config
target_metadata = SQLModel.metadata
MIGRATION_LOCK_ID = 0x66696C6D  # 'film': the advisory lock that serializes migrations on PostgreSQL


def _url() -> str:
    url = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
    return normalize_url(url or get_settings().database.url).render_as_string(hide_password=False)


def _run(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        connection.execution_options(**{SQLITE_BEGIN_OPTION: "BEGIN IMMEDIATE"})
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        render_as_batch=sqlite,
        # storage.db's SQLite engine emits BEGIN itself, so SQLite DDL is transactional as well
        transactional_ddl=True,
    )
    with context.begin_transaction():
        # Several processes may run init_db() at once (`filmroom up`); the first migrates, the others
        # wait for it here and then find the database at head. SQLite: BEGIN IMMEDIATE above.
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")
        context.run_migrations()
        if sqlite:
            violations = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
            if violations:
                raise RuntimeError(f"migration left foreign-key violations: {violations[:10]}")


def run_migrations_offline() -> None:
    url = _url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection: Connection | None = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine_for(_url(), foreign_keys=False)
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
