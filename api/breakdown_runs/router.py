"""The breakdown-runs API (breakdown-runs-api.md): events, their breakdown runs, and manual uploads.

Reads (as documented): ``GET /v1/events/breakdown-runs``, ``GET /v1/events/{id}/breakdown-runs``,
``GET /v1/events/{eventId}/breakdown-runs/{id}``. Writes (designed in the document's style):
``POST /v1/events``, ``GET /v1/events/{id}``, ``POST /v1/events/{id}/breakdown-runs`` and
``PUT /v1/events/{eventId}/breakdown-runs/{id}/file``.

Every route takes ``Authorization: Bearer <JWT or API key>`` (a bare ``Authorization: <JWT>`` as in the
document's examples works too); everything is scoped to the caller's tenant, so another tenant's ids
are 404s. A malformed ObjectId is a 400 ``bad_request``; an unknown one a 404 ``not_found``.

Pagination
----------
Listings are in a total order: the ``sort`` field, then ``_id`` in the same direction, so while
nothing changes, ``skip``/``limit`` pages never repeat or miss an item. Runs do change while a client
pages (a status change bumps ``modified$date`` and moves the run, and its event, in that order), and
then offsets shift. So every full page also returns ``X-Next-Cursor`` (and a ``Link: <...>; rel="next"``
header): pass it back as ``cursor`` (with the same ``sort`` and filters, ``skip`` omitted) and the next
page starts strictly after the last item you received, in (sort value, ``_id``) order, wherever the
other items have moved. With a cursor, an item that did not change is returned exactly once; an item
that changed while you paged is returned according to its new ``modified$date``: for
``-modified$date`` it has moved ahead of your cursor, so it is not repeated (poll again with
``startDate`` = when you started to see it); for ``modified$date`` it reappears near the end with its new
state (keep the newest per ``_id``). ``create$date`` never changes, so cursor pages over it are exact.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode

import anyio.to_thread
from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response, status

from api.breakdown_runs import service
from api.breakdown_runs.schemas import (
    OBJECT_ID_PATTERN,
    BreakdownRunCreate,
    BreakdownRunCreated,
    BreakdownRunResponse,
    BreakdownRunsAggregatedResponse,
    EventCreate,
    EventResponse,
    RunModeValue,
    RunStatusValue,
    SortValue,
)
from api.deps import (
    ArtifactsDep,
    OrchestratorDep,
    PrincipalDep,
    SessionDep,
    SettingsDep,
    WriteSessionDep,
)
from api.errors import error_responses
from infra.errors import BadRequest, ValidationFailed
from storage.models import RunMode, RunStatus

router = APIRouter(prefix="/v1/events", tags=["breakdown runs"])

REPLAYED_HEADER = "Idempotent-Replayed"
CURSOR_HEADER = "X-Next-Cursor"


def _object_id(description: str, alias: str | None = None) -> Any:
    # The pattern is documented but checked by the service: a malformed id is a 400 bad_request
    # (breakdown-runs-api.md), not FastAPI's 422.
    return Path(
        alias=alias,
        description=f"{description} (MongoDB ObjectId, `^[0-9a-fA-F]{{24}}$`).",
        max_length=64,
        json_schema_extra={"pattern": OBJECT_ID_PATTERN},
    )


EventId = Annotated[str, _object_id("Event ID")]
EventIdAlias = Annotated[str, _object_id("Event ID", alias="eventId")]
RunId = Annotated[str, _object_id("Breakdown run ID")]
Sort = Annotated[
    SortValue,
    Query(
        description="Sort field; prefix `-` for descending. Ties are broken by `_id` in the same direction."
    ),
]
Limit = Annotated[int, Query(ge=1, le=1000, description="Maximum number of records to return (1-1000).")]
Skip = Annotated[int, Query(ge=0, le=1_000_000_000, description="Number of records to skip.")]
Mode = Annotated[RunModeValue | None, Query(description="Filter by mode.")]
StatusFilter = Annotated[RunStatusValue | None, Query(alias="status", description="Filter by status.")]
Cursor = Annotated[
    str | None,
    Query(
        max_length=512,
        description="`X-Next-Cursor` of the previous page: continue strictly after its last item "
        "(stable while runs change; see the API description). Use the same `sort`.",
    ),
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        min_length=1,
        max_length=255,
        description="Makes the POST safe to retry: the same key with the same body answers with what the "
        "first request created (header `Idempotent-Replayed: true`); with another body it is a 422 "
        "`idempotency_conflict`. Run keys share the tenant's key space with `POST /v1/jobs`.",
    ),
]

PAGE_HEADERS = {
    CURSOR_HEADER: {
        "description": "Present when the page is full: pass it as `cursor` to get the next page.",
        "schema": {"type": "string"},
    },
    "Link": {"description": 'The next page\'s URL, `<...>; rel="next"`.', "schema": {"type": "string"}},
}
REPLAY_HEADERS = {
    REPLAYED_HEADER: {
        "description": "`true` when this answers an earlier request.",
        "schema": {"type": "string"},
    }
}


def _page_headers(request: Request, response: Response, next_cursor: str | None) -> None:
    if next_cursor is None:
        return
    params = [(k, v) for k, v in request.query_params.multi_items() if k not in ("cursor", "skip")]
    url = request.url.replace(query=urlencode([*params, ("cursor", next_cursor)]))
    response.headers[CURSOR_HEADER] = next_cursor
    response.headers["Link"] = f'<{url}>; rel="next"'


# --- reads -----------------------------------------------------------------------------------------


@router.get(
    "/breakdown-runs",
    response_model=list[BreakdownRunsAggregatedResponse],
    operation_id="getAllBreakdownRuns",
    summary="Get all breakdown runs",
    responses={
        200: {"description": "Breakdown runs grouped by event.", "headers": PAGE_HEADERS},
        **error_responses(400),
    },
)
def get_all_breakdown_runs(
    request: Request,
    response: Response,
    principal: PrincipalDep,
    session: SessionDep,
    settings: SettingsDep,
    store: ArtifactsDep,
    sort: Sort = "-modified$date",
    limit: Limit = 10,
    skip: Skip = 0,
    mode: Mode = None,
    status_filter: StatusFilter = None,
    event_id: Annotated[
        str | None,
        Query(
            alias="eventId",
            max_length=64,
            description="Filter by event ID (MongoDB ObjectId).",
            json_schema_extra={"pattern": OBJECT_ID_PATTERN},
        ),
    ] = None,
    start_date: Annotated[
        datetime | None,
        Query(
            alias="startDate",
            description="Start of a `modified$date` range (with `endDate`); UTC if no offset.",
        ),
    ] = None,
    end_date: Annotated[
        datetime | None,
        Query(alias="endDate", description="End of a `modified$date` range (with `startDate`), inclusive."),
    ] = None,
    cursor: Cursor = None,
) -> list[BreakdownRunsAggregatedResponse]:
    """The tenant's events that have a run matching `mode`/`status`, grouped by event: each with its
    matching `runs` (in the requested order), the `latest` of them (most recently created), and every
    mode the event has runs in. `sort`, `startDate`/`endDate` apply to the event's `modified$date`
    (bumped whenever one of its runs changes). Both dates or neither (400 otherwise)."""
    start, end = service.date_range(start_date, end_date)
    page = service.list_aggregated(
        session,
        tenant_id=principal.tenant_id,
        sort=sort,
        limit=limit,
        skip=skip,
        mode=RunMode(mode) if mode else None,
        status=RunStatus(status_filter) if status_filter else None,
        event_id=service.check_object_id(event_id, "eventId") if event_id is not None else None,
        start=start,
        end=end,
        cursor=cursor,
        settings=settings,
        store=store,
    )
    _page_headers(request, response, page.next_cursor)
    return page.items


@router.get(
    "/{id}/breakdown-runs",
    response_model=list[BreakdownRunResponse],
    operation_id="getEventBreakdownRuns",
    summary="Get event breakdown runs",
    responses={
        200: {"description": "The event's breakdown runs.", "headers": PAGE_HEADERS},
        **error_responses(400, 404),
    },
)
def get_event_breakdown_runs(
    id: EventId,
    request: Request,
    response: Response,
    principal: PrincipalDep,
    session: SessionDep,
    settings: SettingsDep,
    store: ArtifactsDep,
    sort: Sort = "-modified$date",
    limit: Limit = 10,
    skip: Skip = 0,
    mode: Mode = None,
    status_filter: StatusFilter = None,
    cursor: Cursor = None,
) -> list[BreakdownRunResponse]:
    """Every breakdown run of one event, filtered by `mode`/`status` (404 for an unknown event)."""
    page = service.list_event_runs(
        session,
        tenant_id=principal.tenant_id,
        event_id=id,
        sort=sort,
        limit=limit,
        skip=skip,
        mode=RunMode(mode) if mode else None,
        status=RunStatus(status_filter) if status_filter else None,
        cursor=cursor,
        settings=settings,
        store=store,
    )
    _page_headers(request, response, page.next_cursor)
    return page.items


@router.get(
    "/{eventId}/breakdown-runs/{id}",
    response_model=BreakdownRunResponse,
    operation_id="getEventBreakdownRunById",
    summary="Get specific breakdown run",
    responses=error_responses(400, 404),
)
def get_event_breakdown_run(
    event_id: EventIdAlias,
    id: RunId,
    principal: PrincipalDep,
    session: SessionDep,
    settings: SettingsDep,
    store: ArtifactsDep,
) -> BreakdownRunResponse:
    """One breakdown run of one event."""
    run = service.get_event_run(session, tenant_id=principal.tenant_id, event_id=event_id, run_id=id)
    return service.run_response(run, settings, store)


# --- writes ----------------------------------------------------------------------------------------


@router.post(
    "",
    response_model=EventResponse,
    status_code=status.HTTP_201_CREATED,
    operation_id="createEvent",
    summary="Register an event",
    responses={
        201: {
            "description": "The event (or, for a replayed Idempotency-Key, the first one).",
            "headers": REPLAY_HEADERS,
        },
        **error_responses(400),
    },
)
def create_event(
    body: EventCreate,
    response: Response,
    principal: PrincipalDep,
    session: WriteSessionDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> EventResponse:
    """Register footage to break down: its camera angles (`videos`), `sport`, `title` and `kind`.
    A video URL outside the allowed footage folders, or not http(s), is a 400 `video_invalid_url`."""
    event, replayed = service.create_event(
        session, tenant_id=principal.tenant_id, body=body, idempotency_key=idempotency_key, settings=settings
    )
    if replayed:
        response.headers[REPLAYED_HEADER] = "true"
    response.headers["Location"] = f"/v1/events/{event.id}"
    return service.event_response(event)


@router.get(
    "/{id}",
    response_model=EventResponse,
    operation_id="getEvent",
    summary="Get an event",
    responses=error_responses(400, 404),
)
def get_event(id: EventId, principal: PrincipalDep, session: SessionDep) -> EventResponse:
    """One event of the caller's tenant."""
    return service.event_response(service.get_event(session, tenant_id=principal.tenant_id, event_id=id))


@router.post(
    "/{id}/breakdown-runs",
    response_model=BreakdownRunCreated,
    status_code=status.HTTP_201_CREATED,
    operation_id="createBreakdownRun",
    summary="Start a breakdown run",
    responses={
        201: {
            "description": "The run (or, for a replayed Idempotency-Key, the first one).",
            "headers": REPLAY_HEADERS,
        },
        **error_responses(400, 404),
    },
)
def create_breakdown_run(
    id: EventId,
    body: BreakdownRunCreate,
    response: Response,
    principal: PrincipalDep,
    session: WriteSessionDep,
    settings: SettingsDep,
    store: ArtifactsDep,
    orchestrator: OrchestratorDep,
    idempotency_key: IdempotencyKey = None,
) -> BreakdownRunCreated:
    """A new `queued` run of the event. `ai`: filmroom's pipeline analyses it in the background (never
    inside this request) through `processing`, `completed` to `file_ready` (or `failed`/`file_failed`).
    `manual`: it waits for an analyst's `PUT .../breakdown-runs/{id}/file`. `jobId` is the same run in
    the Jobs API (`GET /v1/jobs/{jobId}`)."""
    run, replayed = service.start_run(
        session,
        tenant_id=principal.tenant_id,
        event_id=id,
        body=body,
        idempotency_key=idempotency_key,
        settings=settings,
        orchestrator=orchestrator,
    )
    if replayed:
        response.headers[REPLAYED_HEADER] = "true"
    response.headers["Location"] = f"/v1/events/{run.event_id}/breakdown-runs/{run.id}"
    return service.created_response(run, settings, store)


async def read_breakdown_file(request: Request, settings: SettingsDep) -> dict[str, Any]:
    """The request body as a JSON object, read up to ``api.breakdown_file_max_bytes``."""
    limit = settings.api.breakdown_file_max_bytes
    too_large = BadRequest(f"the breakdown file is larger than {limit} bytes")
    declared = request.headers.get("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        document = await anyio.to_thread.run_sync(json.loads, raw) if size > 1 << 20 else json.loads(raw)
    except ValueError:  # also UnicodeDecodeError
        raise ValidationFailed("the breakdown file must be JSON (UTF-8)") from None
    if not isinstance(document, dict):
        raise ValidationFailed("the breakdown file must be a JSON object")
    return document


@router.put(
    "/{eventId}/breakdown-runs/{id}/file",
    response_model=BreakdownRunResponse,
    operation_id="uploadBreakdownFile",
    summary="Upload the breakdown file of a manual run",
    responses=error_responses(400, 404, 409),
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "The breakdown file: a JSON object (at most `api.breakdown_file_max_bytes`).",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
def upload_breakdown_file(
    event_id: EventIdAlias,
    id: RunId,
    principal: PrincipalDep,
    document: Annotated[dict[str, Any], Depends(read_breakdown_file)],
    session: WriteSessionDep,
    settings: SettingsDep,
    store: ArtifactsDep,
) -> BreakdownRunResponse:
    """Complete a `manual` run: the file is stored atomically as the run's breakdown file and the run
    becomes `file_ready` (through `processing` and `completed`, one webhook each), with a `fileUrl`.
    Not a JSON object: 422 `validation_error`; too large: 400 `bad_request`; an `ai` run or a
    finished one: 409 `conflict`."""
    run = service.upload_file(
        session,
        tenant_id=principal.tenant_id,
        event_id=event_id,
        run_id=id,
        document=document,
        store=store,
    )
    return service.run_response(run, settings, store)
