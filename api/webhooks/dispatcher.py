"""The webhook dispatcher: drains the outbox (``webhook_deliveries``) that status changes fill.

A status change (``storage.repo.transition_run``, in the flow's process) writes one delivery row per
interested subscription in the same transaction. The dispatcher, a background thread of the API
(``settings.webhooks.dispatch_in_api``) or the standalone ``filmroom dispatcher``, loops:

1. **claim** due rows for a lease (``claim_due_deliveries``; committed at once, so another dispatcher
   skips them, and a dispatcher that dies mid-send has them retried when the lease ends);
2. **render** the body at send time: for ``job.success``/``job.fail`` the ``GET /v1/jobs/{job_id}``
   document of the run as it was at the change, plus ``webhook_timestamp`` (results are read from the
   artifacts now); for breakdown-run statuses the breakdown-runs webhook payload, with a freshly
   signed ``fileUrl`` on ``file_ready`` (:meth:`Dispatcher.breakdown_body`);
3. **check** the callback URL again (DNS rebinding), **sign** (``api.webhooks.signing``) and POST it
   through an injectable ``httpx.Client`` (no redirects followed);
4. **record** the attempt: any 2xx is delivered; otherwise the next attempt is due after
   ``retry_delays_s[n] × time_scale`` ± ``jitter`` — 1, 5, 25, 125, 625 minutes by default, 5 retries —
   but never before the receiver's ``Retry-After`` (seconds or an HTTP date, capped at
   ``retry_after_cap_s``); after the last retry the delivery is ``dead``.

Everything a delivery needs is in the database, so deliveries survive restarts of either process.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from api.deps import write_scope
from api.files import file_url_for
from api.jobs import service
from api.jobs.schemas import JobWebhookBody, dump
from api.webhooks.schemas import BreakdownRunWebhook
from api.webhooks.signing import signature_headers
from api.webhooks.urls import Resolver, check_callback_url, system_resolver
from infra.errors import CallbackInvalidUrl, InternalServerError, breakdown_run_error
from infra.settings import Settings
from infra.version import code_version
from storage import repo
from storage.artifacts import ArtifactStore
from storage.db import get_engine, session_scope
from storage.models import (
    DeliveryStatus,
    RunStatus,
    WebhookDelivery,
    WebhookSubscription,
    utc_now,
)

logger = logging.getLogger("filmroom.webhooks")

BodyRenderer = Callable[[Mapping[str, Any], datetime], dict[str, Any]]
"""``(delivery payload = run snapshot, send time) -> JSON body``."""
FileLink = Callable[[Mapping[str, Any]], str | None]
"""``run snapshot -> fileUrl``: a download link of the run's breakdown file, None when there is none."""

JOB_EVENTS = ("job.success", "job.fail")
FAILURES = frozenset({RunStatus.failed, RunStatus.file_failed})
MAX_ERROR_CHARS = 500


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait that a ``Retry-After`` header asks for (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def _epoch_ms(value: Any, fallback: datetime) -> int:
    """Milliseconds since the Unix epoch of an ISO 8601 time (``fallback`` when there is none)."""
    when = datetime.fromisoformat(str(value)) if value else fallback
    return int(when.timestamp() * 1000)


def breakdown_run_body(
    payload: Mapping[str, Any], now: datetime, *, file_url: str | None = None
) -> dict[str, Any]:
    """breakdown-runs-api.md's webhook payload, for tenant-wide subscriptions to run statuses.

    ``timestamp`` is the status change's time (``occurred_at``) in milliseconds, identical on every
    retry; ``fileUrl`` is given only when the file can be downloaded (``file_url``, made per attempt by
    :meth:`Dispatcher.breakdown_body`); ``errorCode``/``errorMessage`` only on a failure. Optional
    fields are left out, never null.
    """
    status = RunStatus(payload["status"])
    error_code = error_message = None
    if status in FAILURES:
        errors = payload.get("errors") or []
        last: Mapping[str, Any] = (
            errors[-1]
            if errors
            else {"code": InternalServerError.code, "message": InternalServerError.message}
        )
        error_code, error_message = breakdown_run_error(last.get("code"), last.get("message"))
    body = BreakdownRunWebhook(
        eventId=payload["event_id"],
        breakdownRunId=payload["run_id"],
        fileUrl=file_url if status == RunStatus.file_ready else None,
        status=status.value,
        timestamp=_epoch_ms(payload.get("occurred_at"), now),
        errorCode=error_code,
        errorMessage=error_message,
    )
    return body.model_dump(exclude_none=True)


@dataclass(frozen=True)
class _Claimed:
    id: str
    subscription_id: str
    run_id: str
    attempts: int
    event_type: str
    payload: dict[str, Any]
    url: str | None
    secret: str | None
    active: bool


STATUS_RANK = {status.value: rank for rank, status in enumerate(RunStatus)}


def in_sequence(claimed: list[_Claimed]) -> list[list[_Claimed]]:
    """Claimed deliveries grouped per (subscription, run), each group in the order of its run's status
    changes: groups are sent concurrently, a group's deliveries one after the other. So one endpoint
    gets a run's changes in order when they are sent together (a run moving faster than the poll
    interval); a retried delivery can still arrive after a later one, which receivers see from
    ``timestamp`` (or ``updated_at``)."""
    groups: dict[tuple[str, str], list[_Claimed]] = {}
    for item in claimed:
        groups.setdefault((item.subscription_id, item.run_id), []).append(item)

    def changed_at(item: _Claimed) -> tuple[str, int, str]:
        # ISO times of one format compare as strings; same millisecond: the statuses' natural order
        status = str(item.payload.get("status", ""))
        return str(item.payload.get("occurred_at", "")), STATUS_RANK.get(status, 0), item.id

    return [sorted(group, key=changed_at) for group in groups.values()]


@dataclass(frozen=True)
class AttemptOutcome:
    delivered: bool
    status_code: int | None
    error: str | None
    retry_at: datetime | None


class Dispatcher:
    """Sends due webhook deliveries; :meth:`run_once` for one pass, :meth:`start` for a thread."""

    def __init__(
        self,
        settings: Settings,
        *,
        engine: Engine | None = None,
        client: httpx.Client | None = None,
        resolve: Resolver = system_resolver,
        store: ArtifactStore | None = None,
        renderers: Mapping[str, BodyRenderer] | None = None,
        file_link: FileLink | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.config = settings.webhooks
        self.engine = engine or get_engine(settings.database.url)
        self._own_client = client is None
        self.client = client or httpx.Client(
            timeout=self.config.timeout_s,
            follow_redirects=False,
            headers={"User-Agent": f"filmroom-webhooks/{code_version()}"},
        )
        self.resolve = resolve
        self.store = store or ArtifactStore.from_settings(settings)
        self.file_link: FileLink = file_link or self._signed_file_link
        self.renderers: dict[str, BodyRenderer] = {event: self.job_body for event in JOB_EVENTS}
        self.renderers.update({status.value: self.breakdown_body for status in RunStatus})
        self.renderers.update(renderers or {})
        self.rng = rng or random.Random()
        self.lease = timedelta(seconds=2 * self.config.timeout_s + 30)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(self.config.concurrency, thread_name_prefix="filmroom-webhook")

    # --- bodies ---

    def job_body(self, payload: Mapping[str, Any], now: datetime) -> dict[str, Any]:
        """jobs-api.md's webhook: the job status document as of the change, plus ``webhook_timestamp``."""
        view = service.RunView.of_snapshot(payload)
        document = service.job_document(view, self.settings, self.store)
        body = JobWebhookBody(webhook_timestamp=now, **document.model_dump())
        ordered = dump(body)
        return {"webhook_timestamp": ordered.pop("webhook_timestamp"), **ordered}

    def breakdown_body(self, payload: Mapping[str, Any], now: datetime) -> dict[str, Any]:
        """breakdown-runs-api.md's payload; a ``file_ready`` one gets a ``fileUrl`` made now (when the
        run and its file still exist), so a retried delivery never carries an expired link."""
        link = self.file_link(payload) if payload.get("status") == RunStatus.file_ready.value else None
        return breakdown_run_body(payload, now, file_url=link)

    def _signed_file_link(self, payload: Mapping[str, Any]) -> str | None:
        # file_ready is final, so the snapshot's status is the run's status now; the store is asked
        # whether the file is still there
        return file_url_for(
            self.settings,
            self.store,
            tenant_id=str(payload["tenant_id"]),
            event_id=str(payload["event_id"]),
            run_id=str(payload["run_id"]),
            status=str(payload["status"]),
        )

    def render(self, event_type: str, payload: Mapping[str, Any], now: datetime) -> bytes:
        renderer = self.renderers.get(event_type, breakdown_run_body)
        return json.dumps(renderer(payload, now), separators=(",", ":"), ensure_ascii=False).encode()

    # --- one pass ---

    def _anything_due(self) -> bool:
        """A read-only look first, so an idle dispatcher never takes SQLite's write lock."""
        with session_scope(self.engine) as session:
            due = session.exec(
                select(WebhookDelivery.id)
                .where(
                    col(WebhookDelivery.status).in_([DeliveryStatus.pending, DeliveryStatus.failed]),
                    col(WebhookDelivery.next_attempt_at) <= utc_now(),
                )
                .limit(1)
            ).first()
        return due is not None

    def _claim(self, limit: int) -> list[_Claimed]:
        if not self._anything_due():
            return []
        with write_scope(self.engine) as session:
            deliveries = repo.claim_due_deliveries(session, lease=self.lease, limit=limit)
            claimed = []
            for delivery in deliveries:
                subscription = session.get(WebhookSubscription, delivery.subscription_id)
                claimed.append(
                    _Claimed(
                        id=delivery.id,
                        subscription_id=delivery.subscription_id,
                        run_id=delivery.run_id,
                        attempts=delivery.attempts,
                        event_type=delivery.event_type,
                        payload=dict(delivery.payload),
                        url=subscription.url if subscription else None,
                        secret=subscription.secret if subscription else None,
                        active=bool(subscription and subscription.active),
                    )
                )
            return claimed

    def run_once(self) -> int:
        """Send every delivery due now (up to a batch); how many attempts were made."""
        claimed = self._claim(limit=4 * self.config.concurrency)
        sequences = in_sequence(claimed)
        if len(sequences) <= 1:
            for sequence in sequences:
                self._deliver_all(sequence)
        else:
            list(self._pool.map(self._deliver_all, sequences))
        return len(claimed)

    def _deliver_all(self, sequence: list[_Claimed]) -> None:
        for item in sequence:
            self._deliver(item)

    def _deliver(self, item: _Claimed) -> None:
        started = time.monotonic()
        try:
            outcome = self._attempt(item)
        except Exception:  # a bug must not kill the loop, nor leave the row claimed until the lease ends
            logger.exception("delivery %s failed unexpectedly", item.id)
            outcome = self._failed(item, None, "internal error while preparing the delivery", None)
        duration_ms = int((time.monotonic() - started) * 1000)
        with write_scope(self.engine) as session:
            repo.record_delivery_attempt(
                session,
                delivery_id=item.id,
                delivered=outcome.delivered,
                status_code=outcome.status_code,
                error=outcome.error,
                duration_ms=duration_ms,
                retry_at=outcome.retry_at,
            )
        log = logger.info if outcome.delivered else logger.warning
        log(
            "delivery %s (%s) attempt %d: %s",
            item.id,
            item.event_type,
            item.attempts + 1,
            "delivered" if outcome.delivered else outcome.error,
        )

    def _attempt(self, item: _Claimed) -> AttemptOutcome:
        if item.url is None or not item.active:
            return AttemptOutcome(False, None, "the subscription was removed or deactivated", None)
        now = utc_now()
        try:
            check_callback_url(item.url, allow_hosts=self.config.allow_hosts, resolve=self.resolve)
        except CallbackInvalidUrl as exc:
            return self._failed(item, None, f"callback_invalid_url: {exc.details}", None)
        body = self.render(item.event_type, item.payload, now)
        secret = item.secret or self.config.signing_secret
        headers = {
            "Content-Type": "application/json",
            "X-Filmroom-Event": item.event_type,
            **signature_headers(secret, msg_id=item.id, timestamp=int(now.timestamp()), body=body),
        }
        try:
            response = self.client.post(item.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return self._failed(item, None, f"{type(exc).__name__}: {exc}", None)
        if 200 <= response.status_code < 300:
            return AttemptOutcome(True, response.status_code, None, None)
        retry_after = parse_retry_after(response.headers.get("Retry-After"), utc_now())
        return self._failed(item, response.status_code, f"HTTP {response.status_code}", retry_after)

    def _failed(
        self, item: _Claimed, status_code: int | None, error: str, retry_after: float | None
    ) -> AttemptOutcome:
        delay = self.retry_delay(item.attempts + 1, retry_after)
        retry_at = utc_now() + timedelta(seconds=delay) if delay is not None else None
        return AttemptOutcome(False, status_code, error[:MAX_ERROR_CHARS], retry_at)

    def retry_delay(self, attempts_made: int, retry_after: float | None = None) -> float | None:
        """Seconds until the next attempt after ``attempts_made`` failed ones; None when exhausted."""
        delays = self.config.retry_delays_s
        if attempts_made > len(delays):
            return None
        base = delays[attempts_made - 1] * self.config.time_scale
        delay = base * (1 + self.rng.uniform(-self.config.jitter, self.config.jitter))
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.config.retry_after_cap_s))
        return delay

    # --- the loop ---

    def run_forever(self, stop: threading.Event | None = None) -> None:
        """Loop until ``stop`` (default: :meth:`stop`'s event) is set."""
        stop = stop or self._stop
        logger.info("webhook dispatcher started")
        while not stop.is_set():
            try:
                sent = self.run_once()
            except Exception:
                logger.exception("webhook dispatcher pass failed; trying again")
                sent = 0
            if sent == 0:
                stop.wait(self.config.poll_interval_s)
        logger.info("webhook dispatcher stopped")

    def start(self) -> None:
        """Run the loop in a daemon thread."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self.run_forever, name="filmroom-dispatcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish the attempts in flight, stop the thread and release the HTTP client."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.config.timeout_s * 2 + 5)
            self._thread = None
        self._pool.shutdown(wait=True)
        if self._own_client:
            self.client.close()


__all__ = ["Dispatcher", "breakdown_run_body", "parse_retry_after"]
