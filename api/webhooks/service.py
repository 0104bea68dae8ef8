"""Per-tenant webhook endpoints: tenant-wide ``webhook_subscriptions`` rows (``run_id`` NULL) whose
``events`` are breakdown-run statuses, and their delivery log.

An endpoint is removed by deactivating it: the dispatcher then marks its pending deliveries ``dead``
without calling it, and the row stays for the record (the API no longer shows it).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from sqlmodel import Session, col, func, select
from sqlmodel.sql.expression import SelectOfScalar

from api.webhooks.schemas import (
    WebhookDeliveryAttempt,
    WebhookDeliveryLog,
    WebhookEndpoint,
    WebhookEndpointCreate,
    WebhookEndpointCreated,
)
from api.webhooks.urls import Resolver, check_callback_url
from infra.errors import BadRequest, Conflict, NotFound
from infra.ids import is_object_id
from infra.settings import Settings
from storage import repo
from storage.models import (
    DeliveryStatus,
    RunStatus,
    WebhookDelivery,
    WebhookSubscription,
)
from storage.models import (
    WebhookDeliveryAttempt as AttemptRow,
)

STATUS_VALUES = frozenset(status.value for status in RunStatus)
MAX_ENDPOINTS_PER_TENANT = 20
GENERATED_SECRET_BYTES = 32


def generate_secret() -> str:
    """A random signing secret (``whsec_``-free: see ``api.webhooks.signing`` for the Standard form)."""
    return secrets.token_urlsafe(GENERATED_SECRET_BYTES)


def _public(subscription: WebhookSubscription) -> WebhookEndpoint:
    return WebhookEndpoint(
        id=subscription.id,
        url=subscription.url,
        statuses=[s for s in subscription.events if s in STATUS_VALUES],
        tenant=subscription.tenant_id,
        create_date=subscription.created_at,
    )


def _active_endpoints(tenant_id: str) -> SelectOfScalar[WebhookSubscription]:
    return select(WebhookSubscription).where(
        WebhookSubscription.tenant_id == tenant_id,
        col(WebhookSubscription.run_id).is_(None),
        col(WebhookSubscription.active).is_(True),
    )


def create_endpoint(
    session: Session, *, tenant_id: str, body: WebhookEndpointCreate, settings: Settings, resolve: Resolver
) -> WebhookEndpointCreated:
    """Register an endpoint; ``CallbackInvalidUrl`` (400) for a URL filmroom must not call."""
    check_callback_url(body.url, allow_hosts=settings.webhooks.allow_hosts, resolve=resolve)
    count = session.exec(select(func.count()).select_from(_active_endpoints(tenant_id).subquery())).one()
    if count >= MAX_ENDPOINTS_PER_TENANT:
        raise Conflict(f"a tenant may register at most {MAX_ENDPOINTS_PER_TENANT} webhook endpoints")
    secret = body.secret or generate_secret()
    ordered = [status.value for status in RunStatus if status.value in set(body.statuses)]
    subscription = repo.create_webhook_subscription(
        session, tenant_id=tenant_id, url=body.url, events=ordered, secret=secret
    )
    session.commit()
    return WebhookEndpointCreated(**_public(subscription).model_dump(), secret=secret)


def list_endpoints(session: Session, *, tenant_id: str) -> list[WebhookEndpoint]:
    """The tenant's endpoints, oldest first."""
    query = _active_endpoints(tenant_id).order_by(
        col(WebhookSubscription.created_at), col(WebhookSubscription.id)
    )
    return [_public(subscription) for subscription in session.exec(query).all()]


def get_endpoint(session: Session, *, tenant_id: str, endpoint_id: str) -> WebhookSubscription:
    """The endpoint; 400 for a malformed id, 404 for an unknown one (or another tenant's)."""
    if not is_object_id(endpoint_id):
        raise BadRequest(f"webhook id {endpoint_id!r} is not an ObjectId (24 hexadecimal characters)")
    found = session.exec(
        _active_endpoints(tenant_id).where(WebhookSubscription.id == endpoint_id.lower())
    ).first()
    if found is None:
        raise NotFound(f"webhook {endpoint_id} not found")
    return found


def endpoint(session: Session, *, tenant_id: str, endpoint_id: str) -> WebhookEndpoint:
    return _public(get_endpoint(session, tenant_id=tenant_id, endpoint_id=endpoint_id))


def delete_endpoint(session: Session, *, tenant_id: str, endpoint_id: str) -> None:
    """Deactivate the endpoint: nothing more is sent to it, its pending deliveries die."""
    subscription = get_endpoint(session, tenant_id=tenant_id, endpoint_id=endpoint_id)
    subscription.active = False
    session.add(subscription)
    session.commit()


def list_deliveries(
    session: Session,
    *,
    tenant_id: str,
    endpoint_id: str,
    run_id: str | None,
    limit: int,
    skip: int,
) -> list[WebhookDeliveryLog]:
    """The endpoint's deliveries, newest first, each with its attempts."""
    subscription = get_endpoint(session, tenant_id=tenant_id, endpoint_id=endpoint_id)
    query = select(WebhookDelivery).where(WebhookDelivery.subscription_id == subscription.id)
    if run_id is not None:
        if not is_object_id(run_id):
            raise BadRequest(f"breakdownRunId {run_id!r} is not an ObjectId (24 hexadecimal characters)")
        query = query.where(WebhookDelivery.run_id == run_id.lower())
    rows = session.exec(
        query.order_by(col(WebhookDelivery.created_at).desc(), col(WebhookDelivery.id).desc())
        .offset(skip)
        .limit(limit)
    ).all()
    attempts = repo.delivery_attempts(session, [row.id for row in rows])
    return [_log(row, attempts[row.id]) for row in rows]


def redeliver(session: Session, *, tenant_id: str, endpoint_id: str, delivery_id: str) -> WebhookDeliveryLog:
    """One more attempt of a delivery, due now (a delivered or dead one is sent once more, with the
    same ``webhook-id``, so a receiver that dedupes on it sees a duplicate)."""
    subscription = get_endpoint(session, tenant_id=tenant_id, endpoint_id=endpoint_id)
    if not is_object_id(delivery_id):
        raise BadRequest(f"delivery id {delivery_id!r} is not an ObjectId (24 hexadecimal characters)")
    delivery = session.exec(
        select(WebhookDelivery).where(
            WebhookDelivery.id == delivery_id.lower(), WebhookDelivery.subscription_id == subscription.id
        )
    ).first()
    if delivery is None:
        raise NotFound(f"delivery {delivery_id} not found")
    repo.requeue_delivery(session, delivery)
    session.commit()
    return _log(delivery, repo.delivery_attempts(session, [delivery.id])[delivery.id])


def _log(delivery: WebhookDelivery, attempts: Sequence[AttemptRow]) -> WebhookDeliveryLog:
    payload = delivery.payload
    return WebhookDeliveryLog(
        id=delivery.id,
        eventId=str(payload.get("event_id", "")),
        breakdownRunId=delivery.run_id,
        status=payload.get("status", delivery.event_type),
        deliveryStatus=DeliveryStatus(delivery.status).value,
        attempts=delivery.attempts,
        create_date=delivery.created_at,
        next_attempt_date=delivery.next_attempt_at,
        delivered_date=delivery.delivered_at,
        log=[
            WebhookDeliveryAttempt(
                attempt=a.attempt,
                at_date=a.at,
                statusCode=a.status_code,
                error=a.error,
                durationMs=a.duration_ms,
            )
            for a in attempts
        ],
    )
