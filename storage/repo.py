"""Keyword-only services over filmroom's tables; the API, flows and dispatcher build on these.

Every function takes the caller's ``session`` and flushes but never commits: the caller's
``session_scope()`` is the transaction, so a status change and the outbox rows it creates are
committed — or rolled back — together. Failures raise errors of the registry (``infra.errors``):
``NotFound``, ``Conflict``, ``IdempotencyConflict``, ``ValidationFailed``, ``MissingVideos``.

Functions that read a run and then write it (:func:`transition_run`, :func:`update_run_progress`,
:func:`append_run_error`) lock it first with a no-op UPDATE: a row lock on PostgreSQL (like
SELECT ... FOR UPDATE) and the write lock on SQLite, where a read followed by a write would fail with
SQLITE_BUSY instead of waiting if another process wrote in between. Call them first in their
transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped
from sqlmodel import Session, col, select

from infra.errors import (
    REGISTRY,
    Conflict,
    IdempotencyConflict,
    MissingVideos,
    NotFound,
    ValidationFailed,
)
from infra.ids import is_job_id
from storage.models import (
    ApiKey,
    Correction,
    CorrectionKind,
    DeliveryStatus,
    Event,
    EventKind,
    EventSource,
    JobType,
    Run,
    RunError,
    RunMode,
    RunProgress,
    RunStatus,
    Tenant,
    WebhookDelivery,
    WebhookDeliveryAttempt,
    WebhookSubscription,
    to_stored_utc,
    utc_now,
)

TENANT_ID_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
API_KEY_RE = re.compile(r"^frk_(?P<prefix>[0-9a-f]{8})_(?P<secret>[A-Za-z0-9_-]{43})$")
LAST_USED_RESOLUTION = timedelta(minutes=1)  # at most one last_used_at write per key and minute

S = RunStatus
RUN_TRANSITIONS: Mapping[RunStatus, frozenset[RunStatus]] = {
    S.queued: frozenset({S.processing, S.failed}),
    S.processing: frozenset({S.completed, S.failed, S.queued}),  # queued: Prefect retries the flow run
    S.completed: frozenset({S.file_ready, S.file_failed, S.failed}),
    S.failed: frozenset({S.queued}),  # a retry of the same run
    S.file_failed: frozenset({S.queued}),
    S.file_ready: frozenset(),  # final; reprocessing creates a new run
}
FINISHED = frozenset({S.failed, S.file_ready, S.file_failed})
# jobs-api.md's events, from the jobs view of a status (ARCHITECTURE.md, "Statuses")
JOB_EVENTS: Mapping[RunStatus, str] = {
    S.file_ready: "job.success",
    S.failed: "job.fail",
    S.file_failed: "job.fail",
}
EVENT_TYPES = frozenset({"job.success", "job.fail", *(status.value for status in RunStatus)})

RunOrder = Literal["-updated_at", "updated_at", "-created_at", "created_at"]
EventOrder = Literal["-modified_at", "modified_at", "-created_at", "created_at"]


def iso_utc(value: datetime) -> str:
    """``2024-01-20T14:45:00.000Z``, the APIs' date format."""
    return to_stored_utc(value).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- tenants and API keys --------------------------------------------------------------------------


def create_tenant(session: Session, *, tenant_id: str, name: str) -> Tenant:
    if not TENANT_ID_RE.fullmatch(tenant_id):
        raise ValidationFailed(f"tenant id {tenant_id!r} is not a lowercase slug (a-z, 0-9, '-')")
    tenant = Tenant(id=tenant_id, name=name)
    session.add(tenant)
    session.flush()
    return tenant


def get_tenant(session: Session, *, tenant_id: str) -> Tenant | None:
    return session.get(Tenant, tenant_id)


@dataclass(frozen=True)
class IssuedApiKey:
    key: ApiKey
    plaintext: str  # shown once; only its sha256 is stored


def hash_api_key(plaintext: str) -> str:
    # A 256-bit random key needs no slow KDF: sha256 cannot be brute-forced back to it.
    return hashlib.sha256(plaintext.encode()).hexdigest()


def create_api_key(session: Session, *, tenant_id: str, name: str) -> IssuedApiKey:
    """A new key ``frk_<8-hex lookup prefix>_<43 url-safe chars>``; keep ``plaintext``, it is not stored."""
    prefix = secrets.token_hex(4)
    plaintext = f"frk_{prefix}_{secrets.token_urlsafe(32)}"
    key = ApiKey(tenant_id=tenant_id, name=name, prefix=prefix, key_hash=hash_api_key(plaintext))
    session.add(key)
    session.flush()
    return IssuedApiKey(key=key, plaintext=plaintext)


def verify_api_key(session: Session, *, plaintext: str) -> ApiKey | None:
    """The active key ``plaintext`` names, or None. Reads only: see :func:`record_api_key_use`."""
    match = API_KEY_RE.fullmatch(plaintext.strip())
    if match is None:
        return None
    presented = hash_api_key(match.group(0))
    candidates = session.exec(
        select(ApiKey).where(ApiKey.prefix == match["prefix"], col(ApiKey.revoked_at).is_(None))
    ).all()
    return next((c for c in candidates if hmac.compare_digest(c.key_hash, presented)), None)


def api_key_use_is_stale(key: ApiKey, now: datetime | None = None) -> bool:
    """Whether ``last_used_at`` is older than its resolution (so a request should record its use)."""
    return key.last_used_at is None or (now or utc_now()) - key.last_used_at >= LAST_USED_RESOLUTION


def record_api_key_use(session: Session, *, key_id: str, now: datetime | None = None) -> None:
    """Set ``last_used_at``, at most once per key and :data:`LAST_USED_RESOLUTION`.

    Separate from :func:`verify_api_key` so that authenticating a request is a read: on SQLite a
    write per request would queue every call, GETs included, behind the single writer lock.
    """
    now = to_stored_utc(now or utc_now())
    session.exec(
        sa.update(ApiKey)
        .where(
            col(ApiKey.id) == key_id,
            sa.or_(
                col(ApiKey.last_used_at).is_(None), col(ApiKey.last_used_at) <= now - LAST_USED_RESOLUTION
            ),
        )
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )


def revoke_api_key(
    session: Session, *, tenant_id: str, key_id: str, now: datetime | None = None
) -> ApiKey | None:
    """Revoke one of the tenant's keys (idempotent: the first revocation time is kept)."""
    key = session.exec(select(ApiKey).where(ApiKey.id == key_id, ApiKey.tenant_id == tenant_id)).first()
    if key is not None and key.revoked_at is None:
        key.revoked_at = now or utc_now()
        session.flush()
    return key


# --- events ----------------------------------------------------------------------------------------


def create_event(
    session: Session,
    *,
    tenant_id: str,
    kind: EventKind,
    sport: str,
    title: str,
    sources: Sequence[EventSource | Mapping[str, Any]],
    meta: Mapping[str, Any] | None = None,
    external_id: str | None = None,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
) -> Event:
    validated = [EventSource.model_validate(source) for source in sources]
    if not validated:
        raise MissingVideos("an event needs at least one source (camera angle or video)")
    angles = [source.angle for source in validated]
    if len(set(angles)) != len(angles):
        raise ValidationFailed(f"camera angles must be unique, got {angles}")
    event = Event(
        tenant_id=tenant_id,
        kind=kind,
        sport=sport,
        title=title,
        external_id=external_id,
        sources=[source.model_dump(exclude_none=True) for source in validated],
        meta=dict(meta or {}),
        idempotency_key=idempotency_key,
        request_hash=request_hash,
    )
    session.add(event)
    session.flush()
    return event


class EventCreation(NamedTuple):
    event: Event
    created: bool  # False: an earlier request with the same Idempotency-Key created ``event``


def create_event_once(
    session: Session,
    *,
    tenant_id: str,
    idempotency_key: str | None,
    request_hash: str | None,
    **fields: Any,
) -> EventCreation:
    """:func:`create_event` (``fields`` are its arguments) made safe to retry: with ``idempotency_key``,
    a replay returns the first event; the key with another ``request_hash`` is ``IdempotencyConflict``."""

    def earlier() -> Event | None:
        return session.exec(
            select(Event).where(Event.tenant_id == tenant_id, Event.idempotency_key == idempotency_key)
        ).first()

    if idempotency_key is not None and (found := earlier()) is not None:
        return EventCreation(_same_event_request(found, request_hash), created=False)
    try:
        with session.begin_nested():
            event = create_event(
                session,
                tenant_id=tenant_id,
                idempotency_key=idempotency_key,
                request_hash=request_hash,
                **fields,
            )
    except IntegrityError:
        found = earlier() if idempotency_key is not None else None
        if found is None:
            raise
        return EventCreation(_same_event_request(found, request_hash), created=False)
    return EventCreation(event, created=True)


def _same_event_request(event: Event, request_hash: str | None) -> Event:
    if event.request_hash != request_hash:
        raise IdempotencyConflict(f"Idempotency-Key {event.idempotency_key!r} was used with another body")
    return event


def get_event(session: Session, *, tenant_id: str, event_id: str) -> Event | None:
    return session.exec(select(Event).where(Event.id == event_id, Event.tenant_id == tenant_id)).first()


def _run_filters(
    *,
    status: RunStatus | Collection[RunStatus] | None,
    mode: RunMode | None,
    job_type: JobType | None,
    modified_from: datetime | None,
    modified_to: datetime | None,
) -> list[sa.ColumnElement[bool]]:
    filters: list[sa.ColumnElement[bool]] = []
    if status is not None:
        statuses = [status] if isinstance(status, RunStatus) else list(status)
        filters.append(col(Run.status).in_(statuses))
    if mode is not None:
        filters.append(col(Run.mode) == mode)
    if job_type is not None:
        filters.append(col(Run.job_type) == job_type)
    if modified_from is not None:
        filters.append(col(Run.updated_at) >= to_stored_utc(modified_from))
    if modified_to is not None:
        filters.append(col(Run.updated_at) <= to_stored_utc(modified_to))
    return filters


def _ordering(
    field: Mapped[Any], tiebreak: Mapped[Any], *, descending: bool
) -> tuple[sa.UnaryExpression[Any], ...]:
    # the id breaks ties so that pages (limit/offset) never repeat or skip a row
    if descending:
        return field.desc(), tiebreak.desc()
    return field.asc(), tiebreak.asc()


def _after(
    field: Mapped[Any], tiebreak: Mapped[Any], *, descending: bool, after: tuple[datetime, str]
) -> sa.ColumnElement[bool]:
    """Rows strictly after ``after`` = (sort value, id) in :func:`_ordering`'s order (keyset paging)."""
    value, row_id = to_stored_utc(after[0]), after[1]
    if descending:
        return sa.or_(field < value, sa.and_(field == value, tiebreak < row_id))
    return sa.or_(field > value, sa.and_(field == value, tiebreak > row_id))


def list_events(
    session: Session,
    *,
    tenant_id: str,
    event_id: str | None = None,
    status: RunStatus | Collection[RunStatus] | None = None,
    mode: RunMode | None = None,
    modified_from: datetime | None = None,
    modified_to: datetime | None = None,
    order_by: EventOrder = "-modified_at",
    limit: int | None = None,
    offset: int = 0,
    after: tuple[datetime, str] | None = None,
) -> list[Event]:
    """The tenant's events that have at least one run matching the filters (the aggregated listing).

    ``modified_from``/``modified_to`` bound the event's ``modified_at``; ``status``/``mode`` the runs.
    ``after`` = (sort value, id) of the last event of the previous page: only events after it.
    """
    run_filters = _run_filters(status=status, mode=mode, job_type=None, modified_from=None, modified_to=None)
    query = select(Event).where(
        Event.tenant_id == tenant_id,
        sa.exists().where(col(Run.event_id) == col(Event.id), *run_filters),
    )
    if event_id is not None:
        query = query.where(Event.id == event_id)
    if modified_from is not None:
        query = query.where(col(Event.modified_at) >= to_stored_utc(modified_from))
    if modified_to is not None:
        query = query.where(col(Event.modified_at) <= to_stored_utc(modified_to))
    field = col(Event.created_at) if order_by.endswith("created_at") else col(Event.modified_at)
    descending = order_by.startswith("-")
    if after is not None:
        query = query.where(_after(field, col(Event.id), descending=descending, after=after))
    query = query.order_by(*_ordering(field, col(Event.id), descending=descending))
    return list(session.exec(query.offset(offset).limit(limit)).all())


# --- runs ------------------------------------------------------------------------------------------


class RunCreation(NamedTuple):
    run: Run
    created: bool  # False: an earlier request with the same Idempotency-Key created ``run``


def create_run(
    session: Session,
    *,
    tenant_id: str,
    event_id: str,
    mode: RunMode = RunMode.ai,
    job_type: JobType = JobType.breakdown,
    params: Mapping[str, Any] | None = None,
    estimated_completion: datetime | None = None,
    model_version: str | None = None,
    code_version: str | None = None,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    now: datetime | None = None,
) -> RunCreation:
    """A queued run of the event; with ``idempotency_key``, a replay returns the first run instead.

    The run's first status is a change like any other: tenant-wide subscriptions to ``queued`` get a
    delivery, in this transaction (a replay queues nothing).

    Raises ``IdempotencyConflict`` when the key was used with a different ``request_hash``.
    """
    event = get_event(session, tenant_id=tenant_id, event_id=event_id)
    if event is None:
        raise NotFound(f"event {event_id} not found")
    if idempotency_key is not None:
        earlier = _run_by_idempotency_key(session, tenant_id=tenant_id, key=idempotency_key)
        if earlier is not None:
            return RunCreation(_same_request(earlier, request_hash), created=False)
    now = to_stored_utc(now or utc_now())
    run = Run(
        tenant_id=tenant_id,
        event_id=event_id,
        mode=mode,
        job_type=job_type,
        params=dict(params or {}),
        estimated_completion=estimated_completion,
        model_version=model_version,
        code_version=code_version,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        created_at=now,
        updated_at=now,
    )
    try:
        with session.begin_nested():
            session.add(run)
    except IntegrityError:
        # A concurrent request with the same key won the race; answer with its run.
        earlier = _run_by_idempotency_key(session, tenant_id=tenant_id, key=idempotency_key or "")
        if earlier is None:
            raise
        return RunCreation(_same_request(earlier, request_hash), created=False)
    event.modified_at = now
    session.flush()
    _queue_deliveries(session, run=run, previous=None, now=now)
    session.flush()
    return RunCreation(run, created=True)


def _run_by_idempotency_key(session: Session, *, tenant_id: str, key: str) -> Run | None:
    return session.exec(select(Run).where(Run.tenant_id == tenant_id, Run.idempotency_key == key)).first()


def _same_request(run: Run, request_hash: str | None) -> Run:
    if run.request_hash != request_hash:
        raise IdempotencyConflict(f"Idempotency-Key {run.idempotency_key!r} was used with another body")
    return run


def get_run(session: Session, *, tenant_id: str, run_id: str) -> Run | None:
    return session.exec(select(Run).where(Run.id == run_id, Run.tenant_id == tenant_id)).first()


def get_run_by_id(session: Session, *, run_id: str) -> Run | None:
    """A run by id across tenants: for the flow and the reconciler, never for an API route."""
    return session.get(Run, run_id)


def list_active_runs(session: Session) -> list[Run]:
    """Runs not yet finished (queued, processing, completed), oldest first: what the reconciler watches."""
    unfinished = [RunStatus.queued, RunStatus.processing, RunStatus.completed]
    return list(
        session.exec(select(Run).where(col(Run.status).in_(unfinished)).order_by(col(Run.created_at)))
    )


def list_latest_runs(
    session: Session, *, status: Collection[RunStatus], limit: int | None = None, offset: int = 0
) -> list[Run]:
    """The newest run of every event whose newest run has one of ``status``, oldest first (all tenants):
    what the reprocessing flow looks through. An event with a newer run of any status is left out."""
    newer = sa.orm.aliased(Run)
    created, run_id = col(Run.created_at), col(Run.id)
    newer_created, newer_id = col(newer.created_at), col(newer.id)
    has_newer = (
        sa.select(newer_id)
        .where(
            col(newer.event_id) == col(Run.event_id),
            col(newer.tenant_id) == col(Run.tenant_id),
            sa.or_(newer_created > created, sa.and_(newer_created == created, newer_id > run_id)),
        )
        .exists()
    )
    query = (
        select(Run)
        .where(col(Run.status).in_(list(status)), ~has_newer)
        .order_by(*_ordering(created, run_id, descending=False))
    )
    return list(session.exec(query.offset(offset).limit(limit)).all())


def get_run_by_job_id(session: Session, *, tenant_id: str, job_id: str) -> Run | None:
    if not is_job_id(job_id):  # PostgreSQL's uuid column would refuse the comparison
        return None
    return session.exec(select(Run).where(Run.job_id == job_id, Run.tenant_id == tenant_id)).first()


def list_runs(
    session: Session,
    *,
    tenant_id: str,
    event_ids: Collection[str] | None = None,
    status: RunStatus | Collection[RunStatus] | None = None,
    mode: RunMode | None = None,
    job_type: JobType | None = None,
    modified_from: datetime | None = None,
    modified_to: datetime | None = None,
    order_by: RunOrder = "-updated_at",
    limit: int | None = None,
    offset: int = 0,
    after: tuple[datetime, str] | None = None,
) -> list[Run]:
    """The tenant's runs, filtered; ``modified_*`` bound ``updated_at`` (inclusive); ``limit=None``: all.

    ``after`` = (sort value, id) of the last run of the previous page: only runs after it.
    """
    query = select(Run).where(
        Run.tenant_id == tenant_id,
        *_run_filters(
            status=status,
            mode=mode,
            job_type=job_type,
            modified_from=modified_from,
            modified_to=modified_to,
        ),
    )
    if event_ids is not None:
        query = query.where(col(Run.event_id).in_(list(event_ids)))
    field = col(Run.created_at) if order_by.endswith("created_at") else col(Run.updated_at)
    descending = order_by.startswith("-")
    if after is not None:
        query = query.where(_after(field, col(Run.id), descending=descending, after=after))
    query = query.order_by(*_ordering(field, col(Run.id), descending=descending))
    return list(session.exec(query.offset(offset).limit(limit)).all())


def _lock_run(session: Session, run_id: str) -> Run:
    """The run, freshly read after locking its row (see the module docstring)."""
    locked = session.exec(
        sa.update(Run)
        .where(col(Run.id) == run_id)
        .values(status=col(Run.status))
        .execution_options(synchronize_session=False)
    )
    if locked.rowcount == 0:
        raise NotFound(f"run {run_id} not found")
    run = session.get(Run, run_id, populate_existing=True)
    assert run is not None
    return run


def _touch(session: Session, run: Run, now: datetime) -> None:
    """A run changed: bump its ``updated_at`` and its event's ``modified_at``."""
    run.updated_at = now
    session.exec(sa.update(Event).where(col(Event.id) == run.event_id).values(modified_at=now))


@dataclass(frozen=True)
class Transition:
    run: Run
    previous: RunStatus
    changed: bool  # False: the run already had this status (a retried write); nothing was written
    deliveries: list[WebhookDelivery]


def transition_run(
    session: Session,
    *,
    run_id: str,
    status: RunStatus,
    error_code: str | None = None,
    error_message: str | None = None,
    file_uri: str | None = None,
    flow_run_id: str | None = None,
    model_version: str | None = None,
    code_version: str | None = None,
    now: datetime | None = None,
) -> Transition:
    """Move a run to ``status`` and, in the same transaction, queue a webhook delivery for every
    active subscription of its tenant (or of this run) that wants the change.

    Raises ``Conflict`` for a move :data:`RUN_TRANSITIONS` does not allow and ``NotFound``.
    """
    run = _lock_run(session, run_id)
    previous = RunStatus(run.status)
    if previous == status:
        return Transition(run=run, previous=previous, changed=False, deliveries=[])
    if status not in RUN_TRANSITIONS[previous]:
        raise Conflict(f"run {run_id} cannot go from {previous.value} to {status.value}")
    now = to_stored_utc(now or utc_now())
    run.status = status
    if status == S.processing and run.started_at is None:
        run.started_at = now
    if status in FINISHED:
        run.finished_at = now
    elif status == S.queued:
        run.finished_at = None
    if file_uri is not None:
        run.file_uri = file_uri
    if flow_run_id is not None:
        run.flow_run_id = flow_run_id
    if model_version is not None:  # what the flow runs with (the reprocessing flow compares them)
        run.model_version = model_version
    if code_version is not None:
        run.code_version = code_version
    if error_code is not None:
        run.errors = [*run.errors, _error_entry(error_code, error_message, now)]
    _touch(session, run, now)
    deliveries = _queue_deliveries(session, run=run, previous=previous, now=now)
    session.flush()
    return Transition(run=run, previous=previous, changed=True, deliveries=deliveries)


def _error_entry(code: str, message: str | None, now: datetime) -> dict[str, Any]:
    if code not in REGISTRY:
        raise ValueError(f"unknown error code {code!r}; add it to infra.errors first")
    entry = RunError(code=code, message=message or REGISTRY[code].message, timestamp=now)
    return {"code": entry.code, "message": entry.message, "timestamp": iso_utc(entry.timestamp)}


def append_run_error(
    session: Session, *, run_id: str, code: str, message: str | None = None, now: datetime | None = None
) -> Run:
    """Add ``{code, message, timestamp}`` to the run's errors (``code`` from the registry)."""
    run = _lock_run(session, run_id)
    now = to_stored_utc(now or utc_now())
    run.errors = [*run.errors, _error_entry(code, message, now)]
    _touch(session, run, now)
    session.flush()
    return run


def update_run_progress(
    session: Session,
    *,
    run_id: str,
    stage: str,
    fraction: float,
    eta: datetime | None = None,
    now: datetime | None = None,
) -> Run:
    """Record where the flow is; sends no webhook."""
    progress = RunProgress(stage=stage, fraction=fraction, eta=eta)
    run = _lock_run(session, run_id)
    run.progress = {
        "stage": progress.stage,
        "fraction": progress.fraction,
        "eta": iso_utc(progress.eta) if progress.eta else None,
    }
    if eta is not None:
        run.estimated_completion = eta
    _touch(session, run, to_stored_utc(now or utc_now()))
    session.flush()
    return run


# --- webhooks --------------------------------------------------------------------------------------


def create_webhook_subscription(
    session: Session,
    *,
    tenant_id: str,
    url: str,
    events: Sequence[str],
    secret: str | None = None,
    run_id: str | None = None,
) -> WebhookSubscription:
    """Tenant-wide when ``run_id`` is None; ``events`` are jobs events or breakdown run statuses."""
    unknown = sorted(set(events) - EVENT_TYPES)
    if unknown or not events:
        raise ValidationFailed(f"webhook events must be among {sorted(EVENT_TYPES)}, got {list(events)}")
    if run_id is not None and get_run(session, tenant_id=tenant_id, run_id=run_id) is None:
        raise NotFound(f"run {run_id} not found")
    subscription = WebhookSubscription(
        tenant_id=tenant_id, run_id=run_id, url=url, events=list(dict.fromkeys(events)), secret=secret
    )
    session.add(subscription)
    session.flush()
    return subscription


def event_types_for(status: RunStatus) -> list[str]:
    """The webhook event types a move to ``status`` emits: the status itself, and a jobs event."""
    return [status.value, *([JOB_EVENTS[status]] if status in JOB_EVENTS else [])]


def run_snapshot(run: Run, *, event_type: str, previous: RunStatus | None, at: datetime) -> dict[str, Any]:
    """What a delivery remembers: the run as of the change (``previous`` None: it was just created);
    the dispatcher renders the body from it."""

    def when(value: datetime | None) -> str | None:
        return iso_utc(value) if value is not None else None

    return {
        "event_type": event_type,
        "occurred_at": iso_utc(at),
        "previous_status": previous.value if previous is not None else None,
        "run_id": run.id,
        "job_id": run.job_id,
        "event_id": run.event_id,
        "tenant_id": run.tenant_id,
        "mode": run.mode.value,
        "job_type": run.job_type.value,
        "status": run.status.value,
        "file_uri": run.file_uri,
        "errors": list(run.errors),
        "created_at": when(run.created_at),
        "updated_at": when(run.updated_at),
        "estimated_completion": when(run.estimated_completion),
    }


def _queue_deliveries(
    session: Session, *, run: Run, previous: RunStatus | None, now: datetime
) -> list[WebhookDelivery]:
    subscriptions = session.exec(
        select(WebhookSubscription)
        .where(
            WebhookSubscription.tenant_id == run.tenant_id,
            col(WebhookSubscription.active).is_(True),
            sa.or_(col(WebhookSubscription.run_id).is_(None), col(WebhookSubscription.run_id) == run.id),
        )
        .order_by(col(WebhookSubscription.id))
    ).all()
    deliveries = [
        WebhookDelivery(
            subscription_id=subscription.id,
            run_id=run.id,
            event_type=event_type,
            payload=run_snapshot(run, event_type=event_type, previous=previous, at=now),
            next_attempt_at=now,
            created_at=now,
        )
        for subscription in subscriptions
        for event_type in event_types_for(RunStatus(run.status))
        if event_type in subscription.events
    ]
    session.add_all(deliveries)
    return deliveries


def claim_due_deliveries(
    session: Session, *, lease: timedelta, now: datetime | None = None, limit: int = 100
) -> list[WebhookDelivery]:
    """Take up to ``limit`` due deliveries, oldest first, for ``lease``: their next attempt moves to
    ``now + lease``, so a dispatcher that dies mid-send has them retried when the lease ends.

    Commit right away, then send, then :func:`record_delivery_attempt`. Several dispatchers never
    claim the same row: SKIP LOCKED on PostgreSQL, the single writer lock on SQLite.
    """
    now = to_stored_utc(now or utc_now())
    query = (
        select(WebhookDelivery)
        .where(
            col(WebhookDelivery.status).in_([DeliveryStatus.pending, DeliveryStatus.failed]),
            col(WebhookDelivery.next_attempt_at) <= now,
        )
        .order_by(col(WebhookDelivery.next_attempt_at), col(WebhookDelivery.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    claimed = list(session.exec(query).all())
    for delivery in claimed:
        delivery.next_attempt_at = now + lease
    session.flush()
    return claimed


def delivery_attempts(
    session: Session, delivery_ids: Sequence[str]
) -> dict[str, list[WebhookDeliveryAttempt]]:
    """Every attempt of each delivery in ``delivery_ids``, oldest first, in one query."""
    attempts: dict[str, list[WebhookDeliveryAttempt]] = {i: [] for i in delivery_ids}
    if attempts:
        for attempt in session.exec(
            select(WebhookDeliveryAttempt)
            .where(col(WebhookDeliveryAttempt.delivery_id).in_(list(attempts)))
            .order_by(col(WebhookDeliveryAttempt.delivery_id), col(WebhookDeliveryAttempt.attempt))
        ).all():
            attempts[attempt.delivery_id].append(attempt)
    return attempts


def requeue_delivery(session: Session, delivery: WebhookDelivery, *, now: datetime | None = None) -> None:
    """One more attempt of ``delivery``, due now: a delivered or dead one is sent once more (with the
    same ``webhook-id``); a pending or failing one just stops waiting for its backoff."""
    if delivery.status in (DeliveryStatus.delivered, DeliveryStatus.dead):
        delivery.status = DeliveryStatus.pending
    delivery.next_attempt_at = now or utc_now()
    session.add(delivery)
    session.flush()


def record_delivery_attempt(
    session: Session,
    *,
    delivery_id: str,
    delivered: bool,
    status_code: int | None,
    error: str | None = None,
    duration_ms: int = 0,
    retry_at: datetime | None = None,
    now: datetime | None = None,
) -> WebhookDelivery:
    """Log one attempt and move the delivery on: delivered, failed (retry at ``retry_at``) or dead."""
    delivery = session.get(WebhookDelivery, delivery_id, with_for_update=True)
    if delivery is None:
        raise NotFound(f"delivery {delivery_id} not found")
    now = to_stored_utc(now or utc_now())
    delivery.attempts += 1
    session.add(
        WebhookDeliveryAttempt(
            delivery_id=delivery.id,
            attempt=delivery.attempts,
            at=now,
            status_code=status_code,
            error=error,
            duration_ms=duration_ms,
        )
    )
    delivery.last_status_code = status_code
    delivery.last_error = error
    if delivered:
        delivery.status, delivery.delivered_at, delivery.next_attempt_at = DeliveryStatus.delivered, now, None
    elif retry_at is not None:
        delivery.status, delivery.next_attempt_at = DeliveryStatus.failed, retry_at
    else:
        delivery.status, delivery.next_attempt_at = DeliveryStatus.dead, None
    session.flush()
    return delivery


# --- corrections -----------------------------------------------------------------------------------


def create_correction(
    session: Session,
    *,
    tenant_id: str,
    event_id: str,
    kind: CorrectionKind,
    payload: Mapping[str, Any],
    author: str,
    source_run_id: str | None = None,
) -> Correction:
    """A correction of the event (so every later run applies it), made while looking at ``source_run_id``."""
    if get_event(session, tenant_id=tenant_id, event_id=event_id) is None:
        raise NotFound(f"event {event_id} not found")
    if source_run_id is not None and get_run(session, tenant_id=tenant_id, run_id=source_run_id) is None:
        raise NotFound(f"run {source_run_id} not found")
    correction = Correction(
        tenant_id=tenant_id,
        event_id=event_id,
        kind=kind,
        payload=dict(payload),
        author=author,
        source_run_id=source_run_id,
    )
    session.add(correction)
    session.flush()
    return correction


def list_corrections(
    session: Session, *, tenant_id: str, event_id: str, include_inactive: bool = False
) -> list[Correction]:
    """The event's corrections in the order they were made (later ones win)."""
    query = select(Correction).where(Correction.tenant_id == tenant_id, Correction.event_id == event_id)
    if not include_inactive:
        query = query.where(col(Correction.active).is_(True))
    return list(session.exec(query.order_by(col(Correction.created_at), col(Correction.id))).all())
