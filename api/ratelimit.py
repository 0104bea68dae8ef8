"""Per-API-key rate limits with the ``limits`` library (a moving window: N requests in any window).

Two limits, both per key:

* ``settings.api.rate_limit`` (default ``120/minute``) counts every request;
* ``settings.api.submit_rate_limit`` (default ``30/minute``) also counts ``POST /v1/jobs``: a submission
  creates rows and a flow run, so it is held tighter than a read.

Counters live in memory (one process) unless ``settings.api.redis_url`` is set, then in Redis (shared by
every API process). A request is counted under the sha256 of its bearer token, or under the client
address when it has none, so unauthenticated traffic is limited too. Every response carries
``X-RateLimit-Limit`` / ``X-RateLimit-Remaining`` for the tightest limit that applies; a refused request
gets 429 ``rate_limited`` with ``Retry-After`` (seconds). If the counter store fails the request is let
through (logged): an outage of Redis must not take the API down.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response
from infra.errors import RateLimited
from infra.settings import ApiSettings

logger = logging.getLogger("filmroom.api.ratelimit")

# Routes that start an analysis: they also count against the per-key submit limit.
SUBMIT_ROUTES = re.compile(r"^/v1/jobs$|^/v1/events/[^/]+/breakdown-runs$")


def limits_storage(redis_url: str | None) -> Storage:
    """Async ``limits`` storage: in memory, or Redis (through redis-py) when ``redis_url`` is set."""
    if not redis_url:
        storage = storage_from_string("async+memory://")
    else:
        storage = storage_from_string(f"async+{redis_url}", implementation="redispy")
    assert isinstance(storage, Storage)
    return storage


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    retry_after_s: int


class RateLimiter:
    """The API's limits; :meth:`check` counts one request of one client."""

    def __init__(self, settings: ApiSettings, storage: Storage | None = None) -> None:
        self.general: RateLimitItem = parse(settings.rate_limit)
        self.submit: RateLimitItem = parse(settings.submit_rate_limit)
        self.storage = storage or limits_storage(settings.redis_url)
        self.strategy = MovingWindowRateLimiter(self.storage)

    def items_for(self, method: str, path: str) -> list[RateLimitItem]:
        if method == "POST" and SUBMIT_ROUTES.match(path.rstrip("/")):
            return [self.general, self.submit]
        return [self.general]

    async def check(self, identity: str, method: str, path: str) -> Verdict:
        verdicts = []
        for item in self.items_for(method, path):
            allowed = await self.strategy.hit(item, identity)
            stats = await self.strategy.get_window_stats(item, identity)
            retry = max(1, math.ceil(stats.reset_time - time.time())) if not allowed else 0
            verdicts.append(Verdict(allowed, item.amount, max(0, stats.remaining), retry))
            if not allowed:
                return verdicts[-1]
        return min(verdicts, key=lambda v: v.remaining)


def client_identity(scope: Scope) -> str:
    """Whom a request is counted for: its bearer token (hashed), else the client address."""
    authorization = Headers(scope=scope).get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return "key:" + hashlib.sha256(token.strip().encode()).hexdigest()[:32]
    client = scope.get("client")
    return f"ip:{client[0] if client else 'unknown'}"


class RateLimitMiddleware:
    """Counts every HTTP request and stamps the rate-limit headers on every response."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            verdict = await self.limiter.check(client_identity(scope), scope["method"], scope["path"])
        except Exception:
            logger.exception("rate-limit store failed; letting the request through")
            limit = self.limiter.general.amount
            verdict = Verdict(True, limit, limit, 0)
        headers = {"X-RateLimit-Limit": str(verdict.limit), "X-RateLimit-Remaining": str(verdict.remaining)}
        if not verdict.allowed:
            response = error_response(
                RateLimited.http_status,
                RateLimited.code,
                f"rate limit of {verdict.limit} requests exceeded; retry in {verdict.retry_after_s} s",
                headers={**headers, "Retry-After": str(verdict.retry_after_s)},
            )
            await response(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                mutable = MutableHeaders(scope=message)
                for name, value in headers.items():
                    mutable[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
