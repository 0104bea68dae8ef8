"""Per-tenant webhook endpoints (breakdown-runs-api.md, "Webhook Payload"): register, list, remove, and
read each endpoint's delivery log. Authenticated like every ``/v1`` route; another tenant's endpoint is
a 404, a malformed id a 400.

What an endpoint receives, for every run of its tenant (whichever API started it):

* **one delivery per status change** the endpoint subscribed to (``statuses``, default all six). A run's
  first status counts as a change: creating a run sends ``queued``; a retried run sends ``queued`` again.
* the body is the document's payload, field for field: ``eventId``, ``breakdownRunId``, ``fileUrl``
  (only with ``file_ready``: a short-lived signed link made when the attempt is sent, so it is fresh on
  every retry), ``status``, ``timestamp`` (**milliseconds** since the Unix epoch of the status change,
  the same on every retry, so receivers can order deliveries that arrive out of order) and, only with
  ``failed`` / ``file_failed``, ``errorCode`` and ``errorMessage`` (the run's latest error). Optional
  fields are left out, never null.
* in order per endpoint and run when sent together (a run moving faster than the dispatcher polls);
  a delivery that had to be retried can arrive after a later one: order by ``timestamp``.
* signed with the endpoint's secret: ``X-Hub-Signature-256`` (GitHub's algorithm) and the Standard
  Webhooks headers (``webhook-id`` = the delivery id, the same on every retry); retried from the outbox
  1, 5, 25, 125 and 625 minutes after a failed attempt, honouring ``Retry-After`` (``api.webhooks``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from api.deps import PrincipalDep, ResolverDep, SessionDep, SettingsDep, WriteSessionDep
from api.errors import error_responses
from api.webhooks import service
from api.webhooks.schemas import (
    BreakdownRunWebhook,
    WebhookDeliveryLog,
    WebhookEndpoint,
    WebhookEndpointCreate,
    WebhookEndpointCreated,
)

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

EndpointId = Annotated[
    str, Path(description="Webhook endpoint id **Format:** ObjectId (`^[0-9a-fA-F]{24}$`)", max_length=64)
]


@router.post(
    "",
    response_model=WebhookEndpointCreated,
    status_code=status.HTTP_201_CREATED,
    summary="Register a webhook endpoint",
    operation_id="createWebhook",
    responses=error_responses(400, 409),
)
def create_webhook(
    body: WebhookEndpointCreate,
    principal: PrincipalDep,
    session: WriteSessionDep,
    settings: SettingsDep,
    resolver: ResolverDep,
    response: Response,
) -> WebhookEndpointCreated:
    """Send the tenant's breakdown-run status changes to ``url``. The response holds the signing
    secret (yours, or a generated one): it is shown only here."""
    created = service.create_endpoint(
        session, tenant_id=principal.tenant_id, body=body, settings=settings, resolve=resolver
    )
    response.headers["Cache-Control"] = "no-store"  # it carries the secret
    response.headers["Location"] = f"/v1/webhooks/{created.id}"
    return created


@router.get(
    "",
    response_model=list[WebhookEndpoint],
    summary="List webhook endpoints",
    operation_id="getWebhooks",
    responses=error_responses(),
)
def list_webhooks(principal: PrincipalDep, session: SessionDep) -> list[WebhookEndpoint]:
    """The tenant's endpoints, oldest first."""
    return service.list_endpoints(session, tenant_id=principal.tenant_id)


@router.get(
    "/{id}",
    response_model=WebhookEndpoint,
    summary="Get a webhook endpoint",
    operation_id="getWebhookById",
    responses=error_responses(400, 404),
)
def get_webhook(id: EndpointId, principal: PrincipalDep, session: SessionDep) -> WebhookEndpoint:
    """One endpoint (without its secret)."""
    return service.endpoint(session, tenant_id=principal.tenant_id, endpoint_id=id)


@router.delete(
    "/{id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Remove a webhook endpoint",
    operation_id="deleteWebhook",
    responses=error_responses(400, 404),
)
def delete_webhook(id: EndpointId, principal: PrincipalDep, session: WriteSessionDep) -> Response:
    """Stop sending to the endpoint; deliveries still pending for it are dropped."""
    service.delete_endpoint(session, tenant_id=principal.tenant_id, endpoint_id=id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{id}/deliveries",
    response_model=list[WebhookDeliveryLog],
    summary="An endpoint's delivery log",
    operation_id="getWebhookDeliveries",
    responses=error_responses(400, 404),
)
def list_webhook_deliveries(
    id: EndpointId,
    principal: PrincipalDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="Maximum number of records to return.")] = 10,
    skip: Annotated[int, Query(ge=0, le=1_000_000_000, description="Number of records to skip.")] = 0,
    breakdown_run_id: Annotated[
        str | None,
        Query(
            alias="breakdownRunId",
            max_length=64,
            description="Only the deliveries of this breakdown run **Format:** ObjectId.",
        ),
    ] = None,
) -> list[WebhookDeliveryLog]:
    """The endpoint's deliveries, newest first, each with every attempt (status code, error, duration)."""
    return service.list_deliveries(
        session,
        tenant_id=principal.tenant_id,
        endpoint_id=id,
        run_id=breakdown_run_id,
        limit=limit,
        skip=skip,
    )


@router.post(
    "/{id}/deliveries/{deliveryId}/redeliver",
    response_model=WebhookDeliveryLog,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Send a delivery again",
    operation_id="redeliverWebhook",
    responses=error_responses(400, 404),
)
def redeliver_webhook(
    id: EndpointId,
    delivery_id: Annotated[
        str, Path(alias="deliveryId", description="The delivery's id **Format:** ObjectId.", max_length=64)
    ],
    principal: PrincipalDep,
    session: WriteSessionDep,
) -> WebhookDeliveryLog:
    """Queue one more attempt of a delivery, due now (also for a delivered or dead one)."""
    return service.redeliver(session, tenant_id=principal.tenant_id, endpoint_id=id, delivery_id=delivery_id)


# --- what the endpoints receive, for the OpenAPI document's "webhooks" section ---------------------

webhooks = APIRouter()


@webhooks.post(
    "breakdownRunStatus",
    summary="A breakdown run changed status",
    operation_id="breakdownRunStatusWebhook",
    responses={
        200: {"description": "Any 2xx acknowledges the delivery; anything else is retried."},
        # named so FastAPI does not document its own request-validation error for a payload we send
        422: {"description": "Like any other non-2xx answer: the delivery is retried."},
    },
)
def breakdown_run_status(body: BreakdownRunWebhook) -> None:
    """POSTed to every endpoint subscribed to the new status (see ``POST /v1/webhooks``). Verify the
    ``X-Hub-Signature-256`` header (HMAC-SHA256 of the raw body with the endpoint's secret) or the
    Standard Webhooks headers before trusting it."""
