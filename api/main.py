"""The FastAPI application: composes routers, error rendering, rate limits and the webhook dispatcher.

``create_app(settings)`` builds one app; ``filmroom serve`` runs it under uvicorn. Middleware, outermost
first: rate limits (headers on every response, 429s) → the 500 catch-all → FastAPI's exception handlers
→ the routers. The lifespan starts the outbox dispatcher thread when ``settings.webhooks.dispatch_in_api``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import anyio.to_thread
import httpx
import sqlalchemy as sa
from fastapi import Depends, FastAPI
from sqlalchemy.engine import Engine

from api.auth import JwtVerifier
from api.breakdown_runs.router import router as breakdown_runs_router
from api.deps import get_engine_dep
from api.errors import CatchAllMiddleware, error_responses, install_error_handlers
from api.files import router as files_router
from api.jobs.router import router as jobs_router
from api.jobs.schemas import Health
from api.orchestrator import Orchestrator, PrefectOrchestrator
from api.ratelimit import RateLimiter, RateLimitMiddleware
from api.webhooks.dispatcher import Dispatcher
from api.webhooks.router import router as webhooks_router
from api.webhooks.router import webhooks as webhook_payloads
from api.webhooks.urls import Resolver, system_resolver
from infra.errors import TechnicalIssues
from infra.settings import Settings, get_settings
from infra.version import code_version
from storage.artifacts import ArtifactStore
from storage.db import get_engine

DESCRIPTION = """\
Submit sports and broadcast footage for analysis, poll jobs, and receive signed webhooks.

Authenticate every `/v1` call with `Authorization: Bearer <API key>` (keys come from
`filmroom keys create --tenant T`) or `Authorization: Bearer <JWT>` (HS256 or RS256, with `exp`, `iss`
and the tenant claim; the tenant must be registered); both authenticate the same tenant. Links in
`fileUrl` (`/v1/files/...`) need no header. Every non-2xx body is `{"error": {"code", "details"}}`.
Every response carries `X-RateLimit-Limit` and `X-RateLimit-Remaining`.

Register webhook endpoints with `POST /v1/webhooks`: every status change of the tenant's breakdown
runs is POSTed to them as the breakdown-runs document's payload (`timestamp` in milliseconds), signed
with `X-Hub-Signature-256` and the Standard Webhooks headers (see `webhooks` below).
"""


def create_app(
    settings: Settings | None = None,
    *,
    orchestrator: Orchestrator | None = None,
    resolver: Resolver | None = None,
    webhook_client: httpx.Client | None = None,
) -> FastAPI:
    """The API for ``settings`` (default: the process settings). ``orchestrator``, ``resolver`` (DNS
    for callback checks) and ``webhook_client`` (the dispatcher's HTTP client) are for tests."""
    settings = settings or get_settings()
    engine = get_engine(settings.database.url)
    resolve = resolver or system_resolver
    store = ArtifactStore.from_settings(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        dispatcher = None
        if settings.webhooks.dispatch_in_api:
            dispatcher = Dispatcher(
                settings, engine=engine, client=webhook_client, resolve=resolve, store=store
            )
            dispatcher.start()
        try:
            yield
        finally:
            if dispatcher is not None:
                await anyio.to_thread.run_sync(dispatcher.stop)

    app = FastAPI(title="filmroom", version=code_version(), description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.engine = engine
    app.state.orchestrator = orchestrator or PrefectOrchestrator(settings)
    app.state.resolver = resolve
    app.state.artifacts = store
    app.state.jwt_verifier = JwtVerifier(settings.api)  # reads the public key file once, fails fast

    install_error_handlers(app)
    app.include_router(jobs_router)
    app.include_router(breakdown_runs_router)
    app.include_router(files_router)
    app.include_router(webhooks_router)
    app.webhooks.include_router(webhook_payloads)  # documents what registered endpoints receive
    app.add_api_route(
        "/healthz",
        healthz,
        methods=["GET"],
        response_model=Health,
        tags=["health"],
        summary="Liveness and database check (no authentication)",
        responses=error_responses(503),
    )
    app.add_middleware(CatchAllMiddleware)
    app.add_middleware(RateLimitMiddleware, limiter=RateLimiter(settings.api))
    return app


def healthz(engine: Annotated[Engine, Depends(get_engine_dep)]) -> Health:
    """``ok`` when the API runs and its database answers."""
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError:
        raise TechnicalIssues("the database does not answer") from None
    return Health()
