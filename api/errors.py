"""Every non-2xx answer of the HTTP API is ``{"error": {"code", "details"}}`` (jobs-api.md, "Error handling").

Where each kind of failure is rendered:

* errors of the registry (``infra.errors.FilmroomError``) raised by a route, a dependency or a service:
  their ``code`` and ``http_status``; a 5xx shows the class's generic message, never the instance's
  details (those are logged);
* FastAPI's request validation (:class:`RequestValidationError`): 422 ``validation_error`` with one
  readable line per problem;
* Starlette's own HTTP errors (unknown route 404, wrong method 405): ``not_found`` / ``bad_request``;
* anything else: 500 ``internal_server_error`` from :class:`CatchAllMiddleware`, which logs the traceback
  and sends none of it. It sits inside the rate-limit middleware so that a 500 carries the rate-limit
  headers too (Starlette's outermost ServerErrorMiddleware would bypass every user middleware).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infra.errors import (
    BadRequest,
    FilmroomError,
    InternalServerError,
    NotFound,
    TechnicalIssues,
    Unauthorized,
    ValidationFailed,
)

logger = logging.getLogger("filmroom.api")

MAX_DETAILS_CHARS = 2000


class ErrorBody(BaseModel):
    """The envelope's inner object."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(description="Stable error code (see the error registry).", examples=["not_found"])
    details: str = Field(description="Human-readable explanation.", examples=["job not found"])


class ErrorEnvelope(BaseModel):
    """The body of every non-2xx response."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorBody


_DESCRIPTIONS: Mapping[int, str] = {
    400: "Bad request: a problem with the request's values (e.g. `video_invalid_url`, "
    "`callback_invalid_url`).",
    401: "Unauthorized: no valid API key in `Authorization: Bearer <key>`.",
    404: "Not found (also for another tenant's resources).",
    409: "Conflict: the resource's state does not allow this operation.",
    422: "Request validation error (`validation_error`, `idempotency_conflict`).",
    429: "Too many requests (`rate_limited`); see the `Retry-After` header.",
    500: "Internal server error (`internal_server_error`); no details are disclosed.",
    503: "Temporarily unavailable (`technical_issues`); retrying may help.",
}

COMMON_ERRORS: tuple[int, ...] = (401, 422, 429, 500)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: the envelope for each status (plus 401, 422, 429 and 500)."""
    wanted = sorted({*statuses, *COMMON_ERRORS})
    return {status: {"model": ErrorEnvelope, "description": _DESCRIPTIONS[status]} for status in wanted}


def error_response(
    status_code: int, code: str, details: str, *, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = ErrorEnvelope(error=ErrorBody(code=code, details=details[:MAX_DETAILS_CHARS]))
    return JSONResponse(body.model_dump(), status_code=status_code, headers=dict(headers or {}))


def render_error(error: FilmroomError) -> JSONResponse:
    """The response for a registry error (a 5xx never shows the instance's details)."""
    if error.http_status >= 500:
        logger.error("request failed with %s: %s", error.code, error.details)
        details = type(error).message
    else:
        details = error.details
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(error, Unauthorized) else None
    return error_response(error.http_status, error.code, details, headers=headers)


def describe_validation_errors(errors: Sequence[Any]) -> str:
    """``body.job.videos.0.url: Field required; query.limit: ...`` (input values are not echoed)."""
    lines = []
    for error in errors:
        location = ".".join(str(part) for part in error.get("loc", ()))
        message = str(error.get("msg", "invalid value"))
        lines.append(f"{location}: {message}" if location else message)
    return "; ".join(lines) or "The request has the wrong format."


async def _filmroom_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FilmroomError)
    return render_error(exc)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, ValidationFailed.code, describe_validation_errors(exc.errors()))


_HTTP_CODES: Mapping[int, str] = {
    400: BadRequest.code,
    401: Unauthorized.code,
    404: NotFound.code,
    405: BadRequest.code,  # the registry has no method_not_allowed; the details say which method
    422: ValidationFailed.code,
}


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        details = f"no route {request.method} {request.url.path}"
    elif exc.status_code == 405:
        details = f"method {request.method} is not allowed on {request.url.path}"
    else:
        details = str(exc.detail)
    code = _HTTP_CODES.get(exc.status_code)
    if code is None:
        code = InternalServerError.code if exc.status_code >= 500 else BadRequest.code
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
    return error_response(exc.status_code, code, details, headers=headers)


def _allowed_methods(request: Request) -> str:
    """Every method some route accepts on this path (Starlette names only the first route's)."""
    allowed = []
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return ", ".join(allowed)


async def _database_busy(_request: Request, exc: Exception) -> JSONResponse:
    # SQLite under a burst of concurrent writers (bench/api.py): nothing was written, a retry helps.
    logger.warning("database busy: %s", exc)
    return error_response(
        TechnicalIssues.http_status,
        TechnicalIssues.code,
        "The database is busy; retry the request.",
        headers={"Retry-After": "1"},
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(FilmroomError, _filmroom_error)
    app.add_exception_handler(sqlalchemy.exc.OperationalError, _database_busy)
    app.add_exception_handler(sqlalchemy.exc.TimeoutError, _database_busy)  # connection pool exhausted
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)


class CatchAllMiddleware:
    """Turns any exception that escaped the routes into the 500 envelope, logging the traceback."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracking)
        except Exception as exc:
            if isinstance(exc, FilmroomError):  # raised outside the routes (e.g. by a middleware)
                response = render_error(exc)
            else:
                logger.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
                response = error_response(500, InternalServerError.code, "An internal error occurred.")
            if started:  # too late for a clean answer; let the server drop the connection
                raise
            await response(scope, receive, send)
