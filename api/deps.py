"""The API's dependencies, as ``Annotated`` aliases routes put in their signatures.

* ``SettingsDep`` — the settings the app was built with (``app.state.settings``);
* ``SessionDep`` — a read-mostly session around the request; ``WriteSessionDep`` — one that takes
  SQLite's write lock up front (:func:`write_scope`), for routes that read then write. Both commit
  when the route returns, before the response is sent;
* ``PrincipalDep`` — the caller (tenant, and the API key or token subject), from
  ``Authorization: Bearer <API key or JWT>`` (401 otherwise; see :func:`get_principal`);
* ``OrchestratorDep`` — who runs the analysis (``app.state.orchestrator``; tests override
  :func:`get_orchestrator` or pass one to ``create_app``);
* ``ArtifactsDep`` — the artifact store; ``ResolverDep`` — DNS resolution for callback URL checks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy.engine import Engine
from sqlmodel import Session

from api.auth import JwtVerifier, looks_like_jwt
from api.orchestrator import Orchestrator
from api.webhooks.urls import Resolver
from infra.errors import Unauthorized
from infra.settings import Settings
from storage import repo
from storage.artifacts import ArtifactStore
from storage.db import session_scope, write_scope, writer


def get_settings_dep(request: Request) -> Settings:
    settings = request.app.state.settings
    assert isinstance(settings, Settings)
    return settings


def get_engine_dep(request: Request) -> Engine:
    engine = request.app.state.engine
    assert isinstance(engine, Engine)
    return engine


def get_session(engine: Annotated[Engine, Depends(get_engine_dep)]) -> Iterator[Session]:
    with session_scope(engine) as session:
        yield session


def get_orchestrator(request: Request) -> Orchestrator:
    orchestrator: Orchestrator = request.app.state.orchestrator
    return orchestrator


def get_artifacts(request: Request) -> ArtifactStore:
    store = request.app.state.artifacts
    assert isinstance(store, ArtifactStore)
    return store


def get_resolver(request: Request) -> Resolver:
    resolver: Resolver = request.app.state.resolver
    return resolver


def get_jwt_verifier(request: Request) -> JwtVerifier:
    """The app's verifier (``app.state.jwt_verifier``), built on first use when the app has none."""
    verifier = getattr(request.app.state, "jwt_verifier", None)
    if verifier is None:
        verifier = JwtVerifier(get_settings_dep(request).api)
        request.app.state.jwt_verifier = verifier
    assert isinstance(verifier, JwtVerifier)
    return verifier


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant, and the API key id (``key_id``) or ``jwt:<subject>`` it used."""

    tenant_id: str
    key_id: str
    method: str = "api_key"  # or "jwt"


_bearer = HTTPBearer(
    auto_error=False,
    description="An API key (`Authorization: Bearer frk_...`) or a JWT (`Authorization: Bearer <JWT>`; "
    "HS256 or RS256 with `exp`, `iss` and the tenant claim). Both authenticate the caller's tenant.",
)


def _presented_token(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str | None:
    if credentials is not None:
        return credentials.credentials or None
    # breakdown-runs-api.md's examples send `Authorization: <JWT_TOKEN>` without a scheme: accept a
    # bare JWT too, so a client written against the document works unchanged.
    authorization = request.headers.get("Authorization") or ""
    scheme, rest = get_authorization_scheme_param(authorization)
    return scheme if scheme and not rest and looks_like_jwt(scheme) else None


def get_principal(
    request: Request,
    engine: Annotated[Engine, Depends(get_engine_dep)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, from an API key (``frk_...``) or else a JWT.

    A read: API keys go first and stay one indexed lookup; the key's ``last_used_at`` is written in a
    short transaction of its own, at most once a minute per key, so authentication never queues a
    request behind SQLite's writer. A token that is not an API key is verified as a JWT
    (:class:`api.auth.JwtVerifier`), and its tenant must be registered.
    """
    token = _presented_token(request, credentials)
    if token is None:
        raise Unauthorized("missing credentials: send Authorization: Bearer <API key or JWT>")
    if repo.API_KEY_RE.fullmatch(token.strip()):
        with session_scope(engine) as session:
            key = repo.verify_api_key(session, plaintext=token)
        if key is None:
            raise Unauthorized("invalid or revoked API key")
        if repo.api_key_use_is_stale(key):
            with write_scope(engine) as session:
                repo.record_api_key_use(session, key_id=key.id)
        return Principal(tenant_id=key.tenant_id, key_id=key.id)
    if not looks_like_jwt(token):
        raise Unauthorized("the bearer token is neither an API key nor a JWT")
    claims = get_jwt_verifier(request).verify(token)
    with session_scope(engine) as session:
        if repo.get_tenant(session, tenant_id=claims.tenant_id) is None:
            raise Unauthorized(f"tenant {claims.tenant_id!r} is not registered")
    return Principal(tenant_id=claims.tenant_id, key_id=f"jwt:{claims.subject or ''}", method="jwt")


async def get_write_session(
    engine: Annotated[Engine, Depends(get_engine_dep)],
    _caller: Annotated[Principal, Depends(get_principal)],
) -> AsyncIterator[Session]:
    """A session whose transactions take SQLite's write lock (:func:`writer`) when the route first
    uses it, inside the route's own thread; routes commit before they return.

    Async on purpose, and lazy: a write lock taken in a threadpool dependency and released in
    another (the commit after the route) made the lock holder wait for a free thread while every
    thread waited for the lock -- a burst of submissions stalled until the busy timeout (503s).
    Depending on the caller orders the API-key check before this session.
    """
    session = Session(writer(engine), expire_on_commit=False)
    try:
        yield session
        if session.in_transaction():  # a route that left its unit of work open
            session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
WriteSessionDep = Annotated[Session, Depends(get_write_session, scope="function")]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
OrchestratorDep = Annotated[Orchestrator, Depends(get_orchestrator)]
ArtifactsDep = Annotated[ArtifactStore, Depends(get_artifacts)]
ResolverDep = Annotated[Resolver, Depends(get_resolver)]
