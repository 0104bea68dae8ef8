"""Per-tenant webhook endpoints (``/v1/webhooks``) and breakdown-runs-api.md's webhook payload, through a
real uvicorn server, the outbox and a real receiver on loopback. Runs are moved on with
``storage.repo.transition_run``, the boundary the flow writes through."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx
import pytest
import standardwebhooks
from sqlalchemy.engine import Engine
from sqlmodel import select

from api.webhooks.dispatcher import Dispatcher
from api.webhooks.signing import standard_webhooks_secret
from infra.settings import Settings
from storage import repo
from storage.artifacts import ArtifactStore, RunRef
from storage.db import session_scope
from storage.models import DeliveryStatus, EventKind, Run, RunStatus, WebhookDelivery
from tests.fixtures.api import (
    ApiServer,
    FakeResolver,
    ReceivedWebhook,
    WebhookReceiver,
    sqlite_only,
    tweak_settings,
)

S = RunStatus
SECRET = "It's a Secret to Everybody"
ALL = ["queued", "processing", "completed", "failed", "file_ready", "file_failed"]
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
# breakdown-runs-api.md, "Webhook Payload", in the document's order; "?" fields are optional
PAYLOAD_FIELDS = ["eventId", "breakdownRunId", "fileUrl", "status", "timestamp", "errorCode", "errorMessage"]
REQUIRED = {"eventId", "breakdownRunId", "status", "timestamp"}


# --- helpers ---------------------------------------------------------------------------------------


def register(client: httpx.Client, url: str, **fields: Any) -> dict[str, Any]:
    response = client.post("/v1/webhooks", json={"url": url, **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def start_run(client: httpx.Client, engine: Engine) -> Run:
    """A run of the tenant, started through the Jobs API (the same runs the breakdown-runs API shows)."""
    job = {"type": "breakdown", "videos": [{"url": "https://cdn.example.com/a.mp4"}], "sport": "soccer"}
    response = client.post("/v1/jobs", json={"job": job})
    assert response.status_code == 200, response.text
    with session_scope(engine) as session:
        return session.exec(select(Run).where(Run.job_id == response.json()["job_id"])).one()


def move(engine: Engine, run: Run, *path: RunStatus, **last: Any) -> None:
    for index, status in enumerate(path):
        with session_scope(engine) as session:
            extra = last if index == len(path) - 1 else {}
            repo.transition_run(session, run_id=run.id, status=status, **extra)


def write_breakdown(settings: Settings, run: Run, content: bytes = b'{"identities": []}') -> str:
    store = ArtifactStore.from_settings(settings)
    return store.write_bytes(RunRef(run.tenant_id, run.event_id, run.id), "breakdown", content)


def in_order(hooks: list[ReceivedWebhook]) -> list[ReceivedWebhook]:
    """Deliveries in the order of their status changes: the dispatcher sends due deliveries
    concurrently, so receivers order them by ``timestamp`` (ties: in the order statuses follow)."""
    return sorted(hooks, key=lambda hook: (hook.json()["timestamp"], ALL.index(hook.json()["status"])))


def settled(
    client: httpx.Client, log_path: str, params: dict[str, Any] | None = None, timeout_s: float = 10.0
) -> list[dict[str, Any]]:
    """The delivery log once every attempt is recorded (a receiver has a request a moment before
    the dispatcher writes down its answer)."""
    deadline = time.monotonic() + timeout_s
    while True:
        log: list[dict[str, Any]] = client.get(log_path, params=params).json()
        done = all(d["deliveryStatus"] in ("delivered", "dead") for d in log)
        if done or time.monotonic() > deadline:
            return log
        time.sleep(0.05)


def verify_both_ways(hook: ReceivedWebhook, secret: str = SECRET) -> None:
    expected = "sha256=" + hmac.new(secret.encode(), hook.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(hook.headers["X-Hub-Signature-256"], expected)
    standardwebhooks.Webhook(standard_webhooks_secret(secret)).verify(hook.body, hook.headers)


def epoch_ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def errors_of(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "details"}, body
    return response.status_code, body["error"]["code"]


# --- registration ----------------------------------------------------------------------------------


@sqlite_only
def test_an_endpoint_is_registered_with_all_statuses_and_a_generated_secret_shown_once(
    api_client: httpx.Client, webhook_receiver: WebhookReceiver
) -> None:
    response = api_client.post("/v1/webhooks", json={"url": f"{webhook_receiver.url}/hooks"})
    assert response.status_code == 201, response.text
    assert response.headers["Cache-Control"] == "no-store"
    created = response.json()
    assert response.headers["Location"] == f"/v1/webhooks/{created['_id']}"
    assert set(created) == {"_id", "url", "statuses", "tenant", "create$date", "secret"}
    assert re.fullmatch(r"[0-9a-f]{24}", created["_id"])
    assert created["url"] == f"{webhook_receiver.url}/hooks"
    assert created["statuses"] == ALL and created["tenant"] == "acme"
    assert ISO_MS.match(created["create$date"])
    assert len(created["secret"]) >= 32

    shown = {k: v for k, v in created.items() if k != "secret"}
    assert api_client.get("/v1/webhooks").json() == [shown]
    assert api_client.get(f"/v1/webhooks/{created['_id']}").json() == shown

    own = register(api_client, webhook_receiver.url, secret=SECRET, statuses=["file_ready", "failed"])
    assert own["secret"] == SECRET
    assert own["statuses"] == ["failed", "file_ready"]  # in the document's order, once each
    assert [e["_id"] for e in api_client.get("/v1/webhooks").json()] == [created["_id"], own["_id"]]


@sqlite_only
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"url": "http://intranet.example.com/h"}, (400, "callback_invalid_url")),
        ({"url": "http://169.254.169.254/latest"}, (400, "callback_invalid_url")),
        ({"url": "ftp://hooks.example.com/h"}, (400, "callback_invalid_url")),
        ({"url": "https://nowhere.invalid/h"}, (400, "callback_invalid_url")),
        ({"url": "https://hooks.example.com/h", "statuses": ["done"]}, (422, "validation_error")),
        ({"url": "https://hooks.example.com/h", "statuses": []}, (422, "validation_error")),
        ({"url": "https://hooks.example.com/h", "statuses": ["job.success"]}, (422, "validation_error")),
        ({"url": "https://hooks.example.com/h", "secret": "short"}, (422, "validation_error")),
        ({"url": "https://hooks.example.com/h", "events": ["queued"]}, (422, "validation_error")),
        ({"url": ""}, (422, "validation_error")),
        ({"statuses": ["queued"]}, (422, "validation_error")),
    ],
)
def test_a_registration_is_refused_with_the_documented_envelope(
    api_client: httpx.Client, body: dict[str, Any], expected: tuple[int, str]
) -> None:
    assert errors_of(api_client.post("/v1/webhooks", json=body)) == expected
    assert api_client.get("/v1/webhooks").json() == []


@sqlite_only
def test_endpoints_need_a_caller_and_belong_to_one_tenant(
    api_server: ApiServer, api_key: str, other_api_key: str
) -> None:
    with api_server.client() as anonymous:
        assert errors_of(anonymous.get("/v1/webhooks")) == (401, "unauthorized")
        assert errors_of(anonymous.post("/v1/webhooks", json={"url": "https://hooks.example.com"})) == (
            401,
            "unauthorized",
        )
    with api_server.client(api_key) as mine, api_server.client(other_api_key) as theirs:
        created = register(mine, "https://hooks.example.com/h")
        assert theirs.get("/v1/webhooks").json() == []
        for call in (theirs.get, theirs.delete):
            assert errors_of(call(f"/v1/webhooks/{created['_id']}")) == (404, "not_found")
        assert errors_of(theirs.get(f"/v1/webhooks/{created['_id']}/deliveries")) == (404, "not_found")
        assert [e["_id"] for e in mine.get("/v1/webhooks").json()] == [created["_id"]]


@sqlite_only
def test_a_malformed_id_is_a_400_and_an_unknown_one_a_404(api_client: httpx.Client) -> None:
    for path in ("/v1/webhooks/xyz", "/v1/webhooks/507f1f77bcf86cd79943901", "/v1/webhooks/xyz/deliveries"):
        assert errors_of(api_client.get(path)) == (400, "bad_request"), path
    assert errors_of(api_client.delete("/v1/webhooks/xyz")) == (400, "bad_request")
    unknown = "507f1f77bcf86cd799439011"
    assert errors_of(api_client.get(f"/v1/webhooks/{unknown}")) == (404, "not_found")
    assert errors_of(api_client.delete(f"/v1/webhooks/{unknown}")) == (404, "not_found")


@sqlite_only
def test_a_removed_endpoint_is_gone_and_gets_nothing_more(
    api_client: httpx.Client, engine: Engine, webhook_receiver: WebhookReceiver
) -> None:
    created = register(api_client, webhook_receiver.url, secret=SECRET)
    response = api_client.delete(f"/v1/webhooks/{created['_id']}")
    assert response.status_code == 204 and response.content == b""
    assert api_client.get("/v1/webhooks").json() == []
    assert errors_of(api_client.get(f"/v1/webhooks/{created['_id']}")) == (404, "not_found")
    assert errors_of(api_client.delete(f"/v1/webhooks/{created['_id']}")) == (404, "not_found")
    run = start_run(api_client, engine)
    move(engine, run, S.processing, S.failed, error_code="missing_videos")
    with pytest.raises(AssertionError):
        webhook_receiver.wait_for(1, timeout=1.0)


# --- the payload -----------------------------------------------------------------------------------


def test_every_status_change_sends_one_signed_delivery_with_the_documented_payload(
    api_client: httpx.Client, api_settings: Settings, engine: Engine, webhook_receiver: WebhookReceiver
) -> None:
    register(api_client, f"{webhook_receiver.url}/hooks", secret=SECRET)
    run = start_run(api_client, engine)  # creating the run is its first status: queued
    move(engine, run, S.processing, S.completed)
    move(engine, run, S.completed)  # a repeated write changes nothing, so sends nothing
    file_uri = write_breakdown(api_settings, run, b'{"breakdown": true}')
    move(engine, run, S.file_ready, file_uri=file_uri)

    hooks = in_order(webhook_receiver.wait_for(4))
    with pytest.raises(AssertionError):
        webhook_receiver.wait_for(5, timeout=1.0)
    bodies = [hook.json() for hook in hooks]
    assert [b["status"] for b in bodies] == ["queued", "processing", "completed", "file_ready"]
    assert len({hook.headers["webhook-id"] for hook in hooks}) == 4
    with session_scope(engine) as session:
        final = session.get(Run, run.id)
        assert final is not None
    for hook, body in zip(hooks, bodies, strict=True):
        verify_both_ways(hook)
        assert hook.path == "/hooks" and hook.headers["Content-Type"] == "application/json"
        assert hook.headers["X-Filmroom-Event"] == body["status"]
        assert list(body) == [f for f in PAYLOAD_FIELDS if f in body], "the document's field order"
        expected_keys = REQUIRED | ({"fileUrl"} if body["status"] == "file_ready" else set())
        assert set(body) == expected_keys, body
        assert (body["eventId"], body["breakdownRunId"]) == (run.event_id, run.id)
        assert isinstance(body["timestamp"], int)
    # timestamp: milliseconds of each status change, oldest first, the last one the run's final change
    stamps = [b["timestamp"] for b in bodies]
    assert stamps == sorted(stamps) and stamps[0] == epoch_ms(repo.iso_utc(run.created_at))
    assert stamps[-1] == epoch_ms(repo.iso_utc(final.updated_at))

    # fileUrl works without credentials and serves the run's file
    download = httpx.get(bodies[-1]["fileUrl"], timeout=10.0)
    assert download.status_code == 200, download.text
    assert download.content == b'{"breakdown": true}'


def test_a_failure_names_its_error_code_and_message_and_later_statuses_do_not(
    api_client: httpx.Client, engine: Engine, webhook_receiver: WebhookReceiver
) -> None:
    register(api_client, webhook_receiver.url, secret=SECRET, statuses=["failed", "processing"])
    run = start_run(api_client, engine)
    move(
        engine,
        run,
        S.processing,
        S.failed,
        error_code="not_synchronized_camera_angles",
        error_message="angle 'reverse' is offset by +1.50 s",
    )
    move(engine, run, S.queued, S.processing)  # a retry of the same run
    hooks = in_order(webhook_receiver.wait_for(3))
    processing, failed, again = (hook.json() for hook in hooks)
    for hook in hooks:
        verify_both_ways(hook)
    assert failed == {
        "eventId": run.event_id,
        "breakdownRunId": run.id,
        "status": "failed",
        "timestamp": failed["timestamp"],
        "errorCode": "not_synchronized_camera_angles",
        "errorMessage": "angle 'reverse' is offset by +1.50 s",
    }
    assert list(failed) == [f for f in PAYLOAD_FIELDS if f in failed]
    assert processing["status"] == again["status"] == "processing"
    assert "errorCode" not in again and "errorMessage" not in again  # only on failures
    with pytest.raises(AssertionError):  # queued was not subscribed to
        webhook_receiver.wait_for(4, timeout=1.0)


def test_file_failed_carries_the_export_error_and_no_file_url(
    api_client: httpx.Client, engine: Engine, webhook_receiver: WebhookReceiver
) -> None:
    register(api_client, webhook_receiver.url, secret=SECRET, statuses=["file_failed"])
    run = start_run(api_client, engine)
    move(engine, run, S.processing, S.completed, S.file_failed, error_code="export_failed")
    [hook] = webhook_receiver.wait_for(1)
    body = hook.json()
    assert body["status"] == "file_failed" and "fileUrl" not in body
    # export_failed is not among the document's nine codes: it reads as the nearest one
    assert body["errorCode"] == "internal_server_error"
    assert body["errorMessage"].startswith("export_failed: ")


def test_file_ready_without_its_file_sends_no_file_url(
    api_client: httpx.Client, engine: Engine, webhook_receiver: WebhookReceiver
) -> None:
    register(api_client, webhook_receiver.url, secret=SECRET, statuses=["file_ready"])
    run = start_run(api_client, engine)
    move(engine, run, S.processing, S.completed, S.file_ready, file_uri="file:///gone/breakdown.json")
    [hook] = webhook_receiver.wait_for(1)
    body = hook.json()
    assert body["status"] == "file_ready" and set(body) == REQUIRED


def test_every_endpoint_of_the_tenant_gets_its_own_signed_copy_and_other_tenants_none(
    api_server: ApiServer, api_key: str, other_api_key: str, engine: Engine, webhook_receiver: WebhookReceiver
) -> None:
    with api_server.client(api_key) as mine, api_server.client(other_api_key) as theirs:
        first = register(mine, f"{webhook_receiver.url}/a", statuses=["processing"])
        register(mine, f"{webhook_receiver.url}/b", secret=SECRET, statuses=["processing"])
        register(theirs, f"{webhook_receiver.url}/other", secret=SECRET)
        run = start_run(mine, engine)
        move(engine, run, S.processing)
        hooks = sorted(webhook_receiver.wait_for(2), key=lambda h: h.path)
        with pytest.raises(AssertionError):
            webhook_receiver.wait_for(3, timeout=1.0)
    assert [h.path for h in hooks] == ["/a", "/b"]
    verify_both_ways(hooks[0], first["secret"])
    verify_both_ways(hooks[1], SECRET)
    assert hooks[0].body == hooks[1].body


# --- the delivery log ------------------------------------------------------------------------------


def test_the_delivery_log_shows_every_attempt_newest_delivery_first(
    api_client: httpx.Client, engine: Engine, webhook_receiver: WebhookReceiver
) -> None:
    created = register(api_client, webhook_receiver.url, secret=SECRET, statuses=["processing", "failed"])
    webhook_receiver.answer(500, times=2)
    run = start_run(api_client, engine)
    move(engine, run, S.processing)
    webhook_receiver.wait_for(3)
    move(engine, run, S.failed, error_code="incomplete_video")
    webhook_receiver.wait_for(4)
    other = start_run(api_client, engine)
    move(engine, other, S.processing)
    webhook_receiver.wait_for(5)

    base = f"/v1/webhooks/{created['_id']}/deliveries"
    log = settled(api_client, base, {"breakdownRunId": run.id})
    assert [(d["status"], d["deliveryStatus"], d["attempts"]) for d in log] == [
        ("failed", "delivered", 1),
        ("processing", "delivered", 3),
    ]
    processing = log[1]
    assert set(processing) == {
        "_id", "eventId", "breakdownRunId", "status", "deliveryStatus", "attempts",
        "create$date", "nextAttempt$date", "delivered$date", "log",
    }  # fmt: skip
    assert (processing["eventId"], processing["breakdownRunId"]) == (run.event_id, run.id)
    assert [(a["attempt"], a["statusCode"]) for a in processing["log"]] == [(1, 500), (2, 500), (3, 200)]
    assert processing["log"][0]["error"] == "HTTP 500" and processing["log"][2]["error"] is None
    assert all(ISO_MS.match(a["at$date"]) and a["durationMs"] >= 0 for a in processing["log"])
    assert processing["nextAttempt$date"] is None and ISO_MS.match(processing["delivered$date"])
    received_ids = {h.headers["webhook-id"] for h in webhook_receiver.received}
    assert {d["_id"] for d in log} <= received_ids

    everything = api_client.get(base).json()
    assert [d["breakdownRunId"] for d in everything] == [other.id, run.id, run.id]
    page = api_client.get(base, params={"limit": 1, "skip": 1}).json()
    assert [d["_id"] for d in page] == [everything[1]["_id"]]
    assert errors_of(api_client.get(base, params={"limit": 0})) == (422, "validation_error")
    assert errors_of(api_client.get(base, params={"skip": -1})) == (422, "validation_error")
    assert errors_of(api_client.get(base, params={"breakdownRunId": "nope"})) == (400, "bad_request")


def test_a_delivery_can_be_sent_again_on_request(
    api_client: httpx.Client, engine: Engine, webhook_receiver: WebhookReceiver
) -> None:
    created = register(api_client, webhook_receiver.url, secret=SECRET, statuses=["processing"])
    run = start_run(api_client, engine)
    move(engine, run, S.processing)
    [first] = webhook_receiver.wait_for(1)
    base = f"/v1/webhooks/{created['_id']}/deliveries"
    [delivery] = settled(api_client, base)
    again = api_client.post(f"{base}/{delivery['_id']}/redeliver")
    assert again.status_code == 202 and again.json()["deliveryStatus"] == "pending"
    second = webhook_receiver.wait_for(2)[1]
    verify_both_ways(second)
    assert second.headers["webhook-id"] == first.headers["webhook-id"] == delivery["_id"]
    assert second.json() == first.json()  # the same status change, the same timestamp
    assert errors_of(api_client.post(f"{base}/{'0' * 24}/redeliver")) == (404, "not_found")
    assert errors_of(api_client.post(f"{base}/nope/redeliver")) == (400, "bad_request")


@sqlite_only
def test_removing_an_endpoint_drops_the_retries_it_still_had(
    api_client: httpx.Client, engine: Engine, webhook_receiver: WebhookReceiver
) -> None:
    created = register(api_client, webhook_receiver.url, secret=SECRET, statuses=["processing"])
    webhook_receiver.answer(503, headers={"Retry-After": "2"})  # the retry is due 2 s later
    run = start_run(api_client, engine)
    move(engine, run, S.processing)
    webhook_receiver.wait_for(1)
    assert api_client.delete(f"/v1/webhooks/{created['_id']}").status_code == 204
    deadline = time.monotonic() + 15
    while True:  # the retry comes due, finds the endpoint removed and gives up without calling it
        with session_scope(engine) as session:
            [delivery] = session.exec(select(WebhookDelivery).where(WebhookDelivery.run_id == run.id)).all()
        if delivery.status == DeliveryStatus.dead or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert delivery.status == DeliveryStatus.dead and delivery.attempts == 2
    assert delivery.last_error == "the subscription was removed or deactivated"
    assert len(webhook_receiver.received) == 1


@sqlite_only
def test_a_tenant_has_at_most_twenty_endpoints(api_client: httpx.Client) -> None:
    ids = [register(api_client, f"https://hooks.example.com/{n}")["_id"] for n in range(20)]
    assert errors_of(api_client.post("/v1/webhooks", json={"url": "https://hooks.example.com/x"})) == (
        409,
        "conflict",
    )
    assert api_client.delete(f"/v1/webhooks/{ids[0]}").status_code == 204  # room for one more
    register(api_client, "https://hooks.example.com/x")


# --- the dispatcher on its own (httpx.MockTransport) -----------------------------------------------


@sqlite_only
def test_file_url_is_made_again_for_every_attempt(api_settings: Settings, engine: Engine) -> None:
    """A retried file_ready delivery never carries the first attempt's (maybe expired) link."""
    sent: list[dict[str, Any]] = []
    links = iter(["https://files.example.com/1", "https://files.example.com/2"])
    asked: list[str] = []

    def receiver(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(500 if len(sent) == 1 else 204)

    def file_link(snapshot: Mapping[str, Any]) -> str:
        asked.append(snapshot["run_id"])
        return next(links)

    with session_scope(engine) as session:
        repo.create_tenant(session, tenant_id="acme", name="Acme")
        event = repo.create_event(
            session, tenant_id="acme", kind=EventKind.game, sport="soccer", title="t",
            sources=[{"angle": "main", "uri": "https://cdn.example.com/a.mp4"}],
        )  # fmt: skip
        run = repo.create_run(session, tenant_id="acme", event_id=event.id).run
        repo.create_webhook_subscription(
            session, tenant_id="acme", url="https://hooks.example.com/h", events=["file_ready"], secret=SECRET
        )
        for status in (S.processing, S.completed, S.file_ready):
            repo.transition_run(session, run_id=run.id, status=status)
    dispatcher = Dispatcher(
        tweak_settings(api_settings, webhooks={"time_scale": 0.00001}),
        engine=engine,
        client=httpx.Client(transport=httpx.MockTransport(receiver)),
        resolve=FakeResolver(),
        file_link=file_link,
    )
    try:
        deadline = time.monotonic() + 10
        while len(sent) < 2 and time.monotonic() < deadline:
            dispatcher.run_once()
    finally:
        dispatcher.stop()
    assert [body["fileUrl"] for body in sent] == [
        "https://files.example.com/1",
        "https://files.example.com/2",
    ]
    assert asked == [run.id, run.id]
    assert sent[0]["timestamp"] == sent[1]["timestamp"]  # the status change's time, not the attempt's


@sqlite_only
def test_changes_sent_together_reach_an_endpoint_in_order(api_settings: Settings, engine: Engine) -> None:
    """A run that moves faster than the dispatcher polls: its deliveries are claimed in one batch and
    still arrive in the order of the changes (batches are sent concurrently across endpoints only)."""
    arrived: list[tuple[str, str]] = []

    def receiver(request: httpx.Request) -> httpx.Response:
        status = json.loads(request.content)["status"]
        time.sleep(0.2 if status == "queued" else 0.0)  # a slow first answer: concurrent sends overtake it
        arrived.append((request.url.path, status))
        return httpx.Response(200)

    with session_scope(engine) as session:
        repo.create_tenant(session, tenant_id="acme", name="Acme")
        for path in ("/a", "/b"):
            repo.create_webhook_subscription(
                session, tenant_id="acme", url=f"https://hooks.example.com{path}", events=ALL, secret=SECRET
            )
        event = repo.create_event(
            session, tenant_id="acme", kind=EventKind.game, sport="soccer", title="t",
            sources=[{"angle": "main", "uri": "https://cdn.example.com/a.mp4"}],
        )  # fmt: skip
        run = repo.create_run(session, tenant_id="acme", event_id=event.id).run
        for status in (S.processing, S.completed, S.file_ready):
            repo.transition_run(session, run_id=run.id, status=status)
    dispatcher = Dispatcher(
        api_settings,
        engine=engine,
        client=httpx.Client(transport=httpx.MockTransport(receiver)),
        resolve=FakeResolver(),
        file_link=lambda _snapshot: None,
    )
    try:
        assert dispatcher.run_once() == 8  # one batch
    finally:
        dispatcher.stop()
    order = ["queued", "processing", "completed", "file_ready"]
    for path in ("/a", "/b"):
        assert [status for p, status in arrived if p == path] == order
