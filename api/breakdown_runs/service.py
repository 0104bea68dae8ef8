"""The breakdown-runs API's logic: listings, event and run writes, manual uploads.

Runs are the same rows the Jobs API shows (``runs.job_id``); starting an ``ai`` run reuses the Jobs API's
hand-over (:func:`api.jobs.service.hand_over`), so both APIs submit to the orchestrator the same way.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session, col, select

from api.breakdown_runs.schemas import (
    BreakdownRunCreate,
    BreakdownRunCreated,
    BreakdownRunError,
    BreakdownRunResponse,
    BreakdownRunsAggregatedResponse,
    EventCreate,
    EventResponse,
    EventVideo,
    SortValue,
)
from api.files import file_url
from api.jobs import service as jobs
from api.orchestrator import Orchestrator
from infra.errors import BadRequest, Conflict, NotFound, breakdown_run_error
from infra.ids import is_object_id
from infra.settings import Settings
from storage import repo
from storage.artifacts import ArtifactStore, RunRef
from storage.models import Event, EventKind, JobType, Run, RunMode, RunStatus, to_stored_utc, utc_now

S = RunStatus
EVENT_ORDER: Mapping[str, repo.EventOrder] = {
    "modified$date": "modified_at",
    "-modified$date": "-modified_at",
    "create$date": "created_at",
    "-create$date": "-created_at",
}
RUN_ORDER: Mapping[str, repo.RunOrder] = {
    "modified$date": "updated_at",
    "-modified$date": "-updated_at",
    "create$date": "created_at",
    "-create$date": "-created_at",
}
UPLOADABLE = (S.queued, S.processing)


# --- parameters ------------------------------------------------------------------------------------


def check_object_id(value: str, name: str) -> str:
    """``value`` if it is a 24-hex ObjectId, else a 400 ``bad_request``."""
    if not is_object_id(value):
        raise BadRequest(f"{name} must be a MongoDB ObjectId (24 hexadecimal characters)")
    return value.lower()


def as_utc(value: datetime) -> datetime:
    """An aware UTC time; a date-time without an offset is read as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def date_range(start: datetime | None, end: datetime | None) -> tuple[datetime | None, datetime | None]:
    """``startDate``/``endDate``: both or neither (400 otherwise), start not after end."""
    if (start is None) != (end is None):
        raise BadRequest("startDate and endDate must be given together")
    if start is None or end is None:
        return None, None
    start, end = as_utc(start), as_utc(end)
    if start > end:
        raise BadRequest("startDate must not be after endDate")
    return start, end


@dataclass(frozen=True)
class Cursor:
    """Where a page ended: the sort it was taken with and the last item's (sort value, id)."""

    sort: str
    value: datetime
    item_id: str

    def encode(self) -> str:
        raw = json.dumps(
            {"s": self.sort, "v": repo.iso_utc(self.value), "i": self.item_id}, separators=(",", ":")
        )
        return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()

    @classmethod
    def decode(cls, text: str, sort: SortValue) -> Cursor:
        try:
            data = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
            cursor = cls(
                sort=str(data["s"]), value=as_utc(datetime.fromisoformat(data["v"])), item_id=str(data["i"])
            )
        except (binascii.Error, ValueError, KeyError, TypeError):
            raise BadRequest("cursor is not a cursor this API returned") from None
        if cursor.sort != sort:
            raise BadRequest(f"cursor was returned for sort={cursor.sort}, not sort={sort}")
        if not is_object_id(cursor.item_id):
            raise BadRequest("cursor is not a cursor this API returned")
        return cursor

    @property
    def after(self) -> tuple[datetime, str]:
        return self.value, self.item_id


@dataclass(frozen=True)
class Page:
    """A page of a listing and, when it is full, the cursor of the next one."""

    items: list[Any]
    next_cursor: str | None


def _sort_value(sort: SortValue, created: datetime, modified: datetime) -> datetime:
    return created if sort.endswith("create$date") else modified


# --- rendering -------------------------------------------------------------------------------------


def run_response(run: Run, settings: Settings, store: ArtifactStore) -> BreakdownRunResponse:
    return BreakdownRunResponse(
        id=run.id,
        event_id=run.event_id,
        status=RunStatus(run.status).value,
        file_url=file_url(settings, store, run),
        mode=RunMode(run.mode).value,
        modified_date=run.updated_at,
        create_date=run.created_at,
        tenant=run.tenant_id,
        errors=[
            BreakdownRunError(code=code, message=message)
            for code, message in (
                breakdown_run_error(entry.get("code"), entry.get("message")) for entry in run.errors
            )
        ],
    )


def event_response(event: Event) -> EventResponse:
    return EventResponse(
        id=event.id,
        kind=EventKind(event.kind).value,
        sport=event.sport,
        title=event.title,
        videos=[EventVideo(angle=str(s["angle"]), url=str(s["uri"])) for s in event.sources],
        tenant=event.tenant_id,
        create_date=event.created_at,
        modified_date=event.modified_at,
    )


# --- reads -----------------------------------------------------------------------------------------


def list_aggregated(
    session: Session,
    *,
    tenant_id: str,
    sort: SortValue,
    limit: int,
    skip: int,
    mode: RunMode | None,
    status: RunStatus | None,
    event_id: str | None,
    start: datetime | None,
    end: datetime | None,
    cursor: str | None,
    settings: Settings,
    store: ArtifactStore,
) -> Page:
    """``GET /v1/events/breakdown-runs``: events with at least one matching run, each with its runs."""
    after = Cursor.decode(cursor, sort).after if cursor else None
    events = repo.list_events(
        session,
        tenant_id=tenant_id,
        event_id=event_id,
        status=status,
        mode=mode,
        modified_from=start,
        modified_to=end,
        order_by=EVENT_ORDER[sort],
        limit=limit,
        offset=skip,
        after=after,
    )
    ids = [event.id for event in events]
    by_event: dict[str, list[Run]] = defaultdict(list)
    if ids:
        for run in repo.list_runs(
            session, tenant_id=tenant_id, event_ids=ids, status=status, mode=mode, order_by=RUN_ORDER[sort]
        ):
            by_event[run.event_id].append(run)
    modes: dict[str, set[str]] = defaultdict(set)
    if ids:
        rows = session.exec(
            select(Run.event_id, Run.mode)
            .where(Run.tenant_id == tenant_id, col(Run.event_id).in_(ids))
            .distinct()
        ).all()
        for run_event, run_mode in rows:
            modes[run_event].add(RunMode(run_mode).value)
    items = []
    for event in events:
        runs = [run_response(run, settings, store) for run in by_event[event.id]]
        if not runs:  # changed between the two queries: it no longer matches
            continue
        latest = max(runs, key=lambda r: (r.create_date, r.id))
        items.append(
            BreakdownRunsAggregatedResponse(
                latest=latest,
                runs=runs,
                event_id=event.id,
                create_date=event.created_at,
                modified_date=event.modified_at,
                modes=sorted(modes[event.id]),
            )
        )
    next_cursor = None
    if len(events) == limit:
        last = events[-1]
        next_cursor = Cursor(sort, _sort_value(sort, last.created_at, last.modified_at), last.id).encode()
    return Page(items, next_cursor)


def get_event(session: Session, *, tenant_id: str, event_id: str) -> Event:
    event = repo.get_event(session, tenant_id=tenant_id, event_id=check_object_id(event_id, "event id"))
    if event is None:
        raise NotFound(f"event {event_id} not found")
    return event


def list_event_runs(
    session: Session,
    *,
    tenant_id: str,
    event_id: str,
    sort: SortValue,
    limit: int,
    skip: int,
    mode: RunMode | None,
    status: RunStatus | None,
    cursor: str | None,
    settings: Settings,
    store: ArtifactStore,
) -> Page:
    """``GET /v1/events/{id}/breakdown-runs``: the event's runs (404 for an unknown event)."""
    after = Cursor.decode(cursor, sort).after if cursor else None
    event = get_event(session, tenant_id=tenant_id, event_id=event_id)
    runs = repo.list_runs(
        session,
        tenant_id=tenant_id,
        event_ids=[event.id],
        status=status,
        mode=mode,
        order_by=RUN_ORDER[sort],
        limit=limit,
        offset=skip,
        after=after,
    )
    next_cursor = None
    if len(runs) == limit:
        last = runs[-1]
        next_cursor = Cursor(sort, _sort_value(sort, last.created_at, last.updated_at), last.id).encode()
    return Page([run_response(run, settings, store) for run in runs], next_cursor)


def get_event_run(session: Session, *, tenant_id: str, event_id: str, run_id: str) -> Run:
    """The event's run ``run_id`` (400 for a malformed id; 404 if not the tenant's or not the event's)."""
    event_id = check_object_id(event_id, "eventId")
    run_id = check_object_id(run_id, "breakdown run id")
    run = repo.get_run(session, tenant_id=tenant_id, run_id=run_id)
    if run is None or run.event_id != event_id:
        raise NotFound(f"breakdown run {run_id} of event {event_id} not found")
    return run


# --- writes ----------------------------------------------------------------------------------------


def _digest(document: Mapping[str, Any]) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def create_event(
    session: Session, *, tenant_id: str, body: EventCreate, idempotency_key: str | None, settings: Settings
) -> tuple[Event, bool]:
    """Register an event (``(event, replayed)``); video URLs are checked like the Jobs API's."""
    sources = jobs.event_sources(body.videos, settings.ingest.allowed_roots)
    creation = repo.create_event_once(
        session,
        tenant_id=tenant_id,
        idempotency_key=idempotency_key,
        request_hash=_digest(body.model_dump(mode="json")) if idempotency_key is not None else None,
        kind=EventKind(body.kind),
        sport=body.sport,
        title=body.title,
        sources=sources,
    )
    session.commit()
    return creation.event, not creation.created


def start_run(
    session: Session,
    *,
    tenant_id: str,
    event_id: str,
    body: BreakdownRunCreate,
    idempotency_key: str | None,
    settings: Settings,
    orchestrator: Orchestrator,
) -> tuple[Run, bool]:
    """Create a queued run of the event (``(run, replayed)``); an ``ai`` run is handed to the orchestrator
    after the commit, exactly as a Jobs API submission is (a replay retries a failed hand-over)."""
    event = get_event(session, tenant_id=tenant_id, event_id=event_id)
    mode = RunMode(body.mode)
    options = body.options.model_dump(mode="json", exclude_none=True) if mode is RunMode.ai else {}
    now = utc_now()
    creation = repo.create_run(
        session,
        tenant_id=tenant_id,
        event_id=event.id,
        mode=mode,
        job_type=JobType.breakdown if event.kind == EventKind.game else JobType.screentime,
        params={jobs.PARAM_NAMES.get(name, name): value for name, value in options.items()},
        estimated_completion=jobs.measured_eta(session, settings, now) if mode is RunMode.ai else None,
        idempotency_key=idempotency_key,
        request_hash=_digest({"eventId": event.id, **body.model_dump(mode="json")})
        if idempotency_key is not None
        else None,
        now=now,
    )
    run = creation.run
    session.commit()
    if run.mode == RunMode.ai and run.flow_run_id is None and run.status == S.queued:
        jobs.hand_over(session, run=run, event=event, orchestrator=orchestrator)
    return run, not creation.created


def created_response(run: Run, settings: Settings, store: ArtifactStore) -> BreakdownRunCreated:
    return BreakdownRunCreated(**run_response(run, settings, store).model_dump(), job_id=run.job_id)


def upload_file(
    session: Session,
    *,
    tenant_id: str,
    event_id: str,
    run_id: str,
    document: dict[str, Any],
    store: ArtifactStore,
) -> Run:
    """Complete a manual run with the analyst's breakdown file: written atomically to the run's
    ``breakdown.json``, then queued/processing → completed → file_ready in one transaction (one webhook
    per status change). Only a manual run that is not finished takes a file (409 otherwise).

    Call it in a write session: the run stays locked from the first status change to the commit, so two
    concurrent uploads cannot both win.
    """
    run = get_event_run(session, tenant_id=tenant_id, event_id=event_id, run_id=run_id)
    if run.mode != RunMode.manual:
        raise Conflict("only a manual breakdown run takes an uploaded file; an ai run writes its own")
    if RunStatus(run.status) not in UPLOADABLE:
        raise Conflict(f"breakdown run {run.id} is {RunStatus(run.status).value}; start a new manual run")
    now = to_stored_utc(utc_now())
    repo.transition_run(session, run_id=run.id, status=S.processing, now=now)  # locks the run
    ref = RunRef(run.tenant_id, run.event_id, run.id)
    uri = store.write_json(ref, "breakdown", document)
    store.update_manifest(ref, params={"mode": "manual", "source": "upload"})
    repo.transition_run(session, run_id=run.id, status=S.completed, now=now)
    done = repo.transition_run(session, run_id=run.id, status=S.file_ready, file_uri=uri, now=now)
    session.commit()
    return done.run
