"""Engines, sessions and migrations of filmroom's database (SQLite by default, PostgreSQL when deployed).

Alembic is configured here in code (no alembic.ini), so migrations run from an installed package and
from any working directory: ``migrate(url)``, ``downgrade(url, revision)``, ``init_db()``.

SQLite is opened for several processes at once (API, flows, dispatcher): WAL journal, foreign keys on,
a busy timeout, and SQLAlchemy — not the sqlite3 module — emitting BEGIN, so every statement of a
session, reads included, runs in one real transaction (and SAVEPOINT and transactional DDL work).
Within one process, ``BEGIN IMMEDIATE`` writers first queue on a lock held for their transaction:
SQLite's own busy handler polls with growing sleeps, so under a burst of concurrent writers (the API's
thread pool) some waited out the busy timeout while the write lock was free most of the time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.pool import StaticPool
from sqlmodel import Session

from infra.settings import get_settings

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 15_000
SQLITE_BEGIN_OPTION = "filmroom_sqlite_begin"  # execution option: the BEGIN statement to emit

SQLITE_POOL_SIZE = 20  # SQLite connections are cheap; a request thread should never wait for one
SQLITE_MAX_OVERFLOW = 80

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()
_GATE_HELD = "filmroom_write_gate_held"  # connection.info key: this connection holds the gate


def normalize_url(url: str | URL) -> URL:
    """``url`` with filmroom's driver choices: ``postgres://``/``postgresql://`` mean psycopg 3."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _is_memory_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def create_engine_for(url: str | URL, *, echo: bool = False, foreign_keys: bool = True) -> Engine:
    """A new engine for ``url``. ``foreign_keys=False`` is for SQLite migrations only (see env.py)."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, echo=echo, foreign_keys=foreign_keys)
    if parsed.get_backend_name() == "postgresql":
        return sa.create_engine(
            parsed,
            echo=echo,
            pool_pre_ping=True,  # survive server restarts and idle-connection reapers
            pool_recycle=1800,
            connect_args={"connect_timeout": 10, "options": "-c timezone=UTC"},
        )
    return sa.create_engine(parsed, echo=echo, pool_pre_ping=True)


def _sqlite_engine(url: URL, *, echo: bool, foreign_keys: bool) -> Engine:
    memory = _is_memory_sqlite(url)
    if not memory and url.database:
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(
        url,
        echo=echo,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        # one shared connection keeps an in-memory database alive; files get a roomy pool
        **(
            {"poolclass": StaticPool}
            if memory
            else {"pool_size": SQLITE_POOL_SIZE, "max_overflow": SQLITE_MAX_OVERFLOW}
        ),
    )

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # sqlite3 must not BEGIN on its own; see _on_begin
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        if not memory:
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")  # durable across app crashes in WAL mode
        cursor.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
        cursor.close()

    gate = threading.Lock()  # this process's writers queue here, see the module docstring

    def _release(info: dict[Any, Any]) -> None:
        if info.pop(_GATE_HELD, False):
            gate.release()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # A connection may ask for BEGIN IMMEDIATE (take the write lock up front), as migrations do.
        begin = connection.get_execution_options().get(SQLITE_BEGIN_OPTION, "BEGIN")
        if begin != "BEGIN":
            if not gate.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000):
                raise sa.exc.TimeoutError("timed out waiting for the database's write lock")
            connection.info[_GATE_HELD] = True
        try:
            connection.exec_driver_sql(begin)
        except BaseException:
            _release(connection.info)
            raise

    @sa.event.listens_for(engine, "commit")
    @sa.event.listens_for(engine, "rollback")
    def _on_end(connection: Connection) -> None:
        _release(connection.info)

    @sa.event.listens_for(engine.pool, "reset")
    def _on_reset(_dbapi_connection: Any, record: Any, _reset_state: Any) -> None:
        _release(record.info)  # a connection returned mid-transaction

    return engine


def get_engine(url: str | None = None) -> Engine:
    """The process-wide engine for ``url`` (default: the configured database), created once."""
    settings = get_settings().database
    key = normalize_url(url or settings.url).render_as_string(hide_password=False)
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = create_engine_for(key, echo=settings.echo)
        return engine


def dispose_engines() -> None:
    """Close every cached engine's connections and forget them (tests, forked workers)."""
    with _engines_lock:
        engines = list(_engines.values())
        _engines.clear()
    for engine in engines:
        engine.dispose()


@contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """One unit of work: commits when the block ends, rolls back if it raises.

    Objects stay usable after the commit (``expire_on_commit=False``) so they can be returned.
    """
    session = Session(engine or get_engine(), expire_on_commit=False)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def writer(engine: Engine) -> Engine:
    """``engine`` for units of work that read and then write.

    On SQLite every transaction of a session bound to it begins ``BEGIN IMMEDIATE`` (after the
    process's gate): SQLite only waits for a busy write lock when the transaction holds no read
    snapshot yet; a transaction that read first fails at once with "database is locked" if another
    connection is writing. The transaction begins lazily, at the session's first statement, so a
    session can be handed out before its user runs. PostgreSQL needs none of this.
    """
    if engine.dialect.name != "sqlite":
        return engine
    return engine.execution_options(**{SQLITE_BEGIN_OPTION: "BEGIN IMMEDIATE"})


@contextmanager
def write_scope(engine: Engine | None = None) -> Iterator[Session]:
    """A :func:`session_scope` on :func:`writer`: for a unit of work that reads and then writes.

    Waiting longer than the busy timeout for the write lock raises SQLAlchemy's ``TimeoutError`` or
    ``OperationalError`` (the API answers 503 ``technical_issues``).
    """
    with session_scope(writer(engine or get_engine())) as session:
        yield session


def get_session() -> Iterator[Session]:
    """FastAPI dependency: a :func:`session_scope` around one request."""
    with session_scope() as session:
        yield session


# --- migrations ------------------------------------------------------------------------------------


def alembic_config(url: str | URL, *, connection: Connection | None = None) -> Config:
    """An Alembic config for ``url`` built in code (env.py reads ``attributes``, not an ini file)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # attributes, not set_main_option: configparser would choke on a '%' in a password
    config.attributes["database_url"] = normalize_url(url).render_as_string(hide_password=False)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def migrate(url: str | URL, revision: str = "head") -> None:
    """Upgrade the database at ``url`` to ``revision``."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str | URL, revision: str) -> None:
    """Downgrade the database at ``url`` to ``revision`` (``"base"`` drops every table)."""
    command.downgrade(alembic_config(url), revision)


def current_revision(url: str | URL) -> str | None:
    """The revision the database at ``url`` is at (None before the first migration)."""
    engine = create_engine_for(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def init_db() -> None:
    """Bring the configured database to the newest schema (idempotent; run at every start-up)."""
    migrate(get_settings().database.url)
