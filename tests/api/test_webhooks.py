"""Signed webhooks from the outbox: signatures, the dispatcher's retries, restarts and the delivery log."""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import itertools
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import standardwebhooks
from sqlalchemy.engine import Engine

from api.webhooks.dispatcher import Dispatcher, breakdown_run_body, parse_retry_after
from api.webhooks.signing import (
    github_signature,
    signature_headers,
    standard_webhooks_secret,
)
from infra.settings import Settings
from storage import repo
from storage.db import session_scope
from storage.models import DeliveryStatus, EventKind, Run, RunStatus, WebhookDelivery
from tests.fixtures.api import (
    ApiServerFactory,
    FakeResolver,
    WebhookReceiver,
    tweak_settings,
)

S = RunStatus
SECRET = "It's a Secret to Everybody"


def recorded_deliveries(client: httpx.Client, job_id: str, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """The job's delivery log once the dispatcher has written down every answer: a receiver has a
    request a moment before the dispatcher records how it went."""
    deadline = time.monotonic() + timeout_s
    while True:
        log: list[dict[str, Any]] = client.get(f"/v1/jobs/{job_id}/deliveries").json()
        if all(d["status"] in ("delivered", "dead") for d in log) or time.monotonic() > deadline:
            return log
        time.sleep(0.05)


def submit(client: httpx.Client, receiver: WebhookReceiver, events: list[str] | None = None) -> str:
    body = {
        "job": {"type": "breakdown", "videos": [{"url": "https://cdn.example.com/a.mp4"}], "sport": "soccer"},
        "webhooks": [
            {
                "url": f"{receiver.url}/hooks",
                "secret": SECRET,
                "events": events or ["job.success", "job.fail"],
            }
        ],
    }
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["job_id"])


def move(engine: Engine, job_id: str, *path: RunStatus, **last: Any) -> None:
    with session_scope(engine) as session:
        run = session.exec(repo.select(Run).where(Run.job_id == job_id)).one()
    for index, status in enumerate(path):
        with session_scope(engine) as session:
            repo.transition_run(
                session, run_id=run.id, status=status, **(last if index == len(path) - 1 else {})
            )


def verify_both_ways(hook: Any) -> None:
    expected = "sha256=" + hmac.new(SECRET.encode(), hook.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(hook.headers["X-Hub-Signature-256"], expected)
    standardwebhooks.Webhook(standard_webhooks_secret(SECRET)).verify(hook.body, hook.headers)


# --- signatures ------------------------------------------------------------------------------------


def test_the_github_signature_matches_githubs_documented_example() -> None:
    # https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
    assert github_signature(SECRET, b"Hello, World!") == (
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    )


def test_standard_webhooks_headers_verify_with_the_library_and_reject_tampering() -> None:
    body = b'{"job_id":"x"}'
    now = int(datetime.now(UTC).timestamp())
    headers = signature_headers(SECRET, msg_id="msg_1", timestamp=now, body=body)
    webhook = standardwebhooks.Webhook(standard_webhooks_secret(SECRET))
    assert webhook.verify(body, headers) == {"job_id": "x"}
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        webhook.verify(b'{"job_id":"y"}', headers)
    stale = signature_headers(SECRET, msg_id="msg_1", timestamp=now - 3600, body=body)
    with pytest.raises(standardwebhooks.WebhookVerificationError):  # replays are refused
        webhook.verify(body, stale)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("0", 0.0),
        (email.utils.format_datetime(datetime(2030, 1, 1, 0, 2, tzinfo=UTC), usegmt=True), 120.0),
        (email.utils.format_datetime(datetime(2029, 1, 1, tzinfo=UTC), usegmt=True), 0.0),
        ("soon", None),
        ("-5", None),
        (None, None),
    ],
)
def test_retry_after_is_read_as_seconds_or_an_http_date(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, datetime(2030, 1, 1, tzinfo=UTC)) == expected


def test_retries_follow_1_5_25_125_625_minutes_scaled_with_jitter_and_retry_after(
    api_settings: Settings,
) -> None:
    exact = Dispatcher(tweak_settings(api_settings, webhooks={"time_scale": 1.0, "jitter": 0.0}))
    try:
        assert [exact.retry_delay(n) for n in range(1, 7)] == [60, 300, 1500, 7500, 37500, None]
        assert exact.retry_delay(1, retry_after=600) == 600  # never before the receiver asks
        assert exact.retry_delay(3, retry_after=10) == 1500
        assert exact.retry_delay(1, retry_after=10**9) == api_settings.webhooks.retry_after_cap_s
    finally:
        exact.stop()
    jittered = Dispatcher(tweak_settings(api_settings, webhooks={"time_scale": 0.5, "jitter": 0.1}))
    try:
        delays = [jittered.retry_delay(2) or 0 for _ in range(50)]
        assert all(135 <= d <= 165 for d in delays) and len(set(delays)) > 1
    finally:
        jittered.stop()


def test_breakdown_run_status_events_get_the_breakdown_runs_payload() -> None:
    snapshot = {"event_id": "e" * 24, "run_id": "r" * 24, "status": "failed",
                "errors": [{"code": "wrong_sport", "message": "basketball", "timestamp": "x"}]}  # fmt: skip
    body = breakdown_run_body(snapshot, datetime(2030, 1, 1, tzinfo=UTC))
    assert body == {
        "eventId": "e" * 24, "breakdownRunId": "r" * 24, "status": "failed", "timestamp": 1893456000000,
        "errorCode": "wrong_sport", "errorMessage": "basketball",
    }  # fmt: skip


# --- end to end, through a real receiver -----------------------------------------------------------


def test_a_completed_job_sends_exactly_one_signed_job_success(
    api_client: httpx.Client, engine: Engine, webhook_receiver: WebhookReceiver
) -> None:
    job_id = submit(api_client, webhook_receiver)
    move(engine, job_id, S.processing, S.completed, S.file_ready)
    [hook] = webhook_receiver.wait_for(1)
    verify_both_ways(hook)
    assert hook.path == "/hooks" and hook.headers["Content-Type"] == "application/json"
    assert hook.headers["X-Filmroom-Event"] == "job.success"
    body = hook.json()
    assert next(iter(body)) == "webhook_timestamp"
    status = api_client.get(f"/v1/jobs/{job_id}").json()
    assert {k: v for k, v in body.items() if k != "webhook_timestamp"} == status
    assert body["status"] == "completed"
    deliveries = recorded_deliveries(api_client, job_id)
    assert [(d["event"], d["status"], d["attempts"]) for d in deliveries] == [("job.success", "delivered", 1)]
    assert hook.headers["webhook-id"] == deliveries[0]["delivery_id"]
    with pytest.raises(AssertionError):  # and nothing else arrives
        webhook_receiver.wait_for(2, timeout=0.5)


def test_a_failed_job_sends_job_fail_with_the_error_code(
    api_client: httpx.Client, engine: Engine, webhook_receiver: WebhookReceiver
) -> None:
    job_id = submit(api_client, webhook_receiver, events=["job.fail"])
    move(
        engine, job_id, S.processing, S.failed, error_code="missing_videos", error_message="main.mp4 is gone"
    )
    [hook] = webhook_receiver.wait_for(1)
    verify_both_ways(hook)
    body = hook.json()
    assert body["status"] == "failed" and body["results"] is None
    assert [(e["code"], e["details"]) for e in body["errors"]] == [("missing_videos", "main.mp4 is gone")]
    assert hook.headers["X-Filmroom-Event"] == "job.fail"


def test_a_receiver_failing_three_times_gets_the_fourth_try_even_across_an_api_restart(
    api_server_factory: ApiServerFactory,
    api_settings: Settings,
    api_key: str,
    engine: Engine,
    webhook_receiver: WebhookReceiver,
) -> None:
    settings = tweak_settings(api_settings, webhooks={"time_scale": 0.002})  # 0.12 s, 0.6 s, 3 s
    first = api_server_factory(settings)
    webhook_receiver.answer(500, times=3)
    with first.client(api_key) as client:
        job_id = submit(client, webhook_receiver)
    move(engine, job_id, S.processing, S.completed, S.file_ready)
    webhook_receiver.wait_for(3)
    first.stop()  # between the third and the fourth try
    assert len(webhook_receiver.received) == 3

    second = api_server_factory(settings)  # a new process would find the same rows
    hooks = webhook_receiver.wait_for(4, timeout=15)
    assert [h.answered for h in hooks] == [500, 500, 500, 200]
    assert len({h.headers["webhook-id"] for h in hooks}) == 1  # one delivery, retried
    for hook in hooks:
        verify_both_ways(hook)
    gaps = [b.at - a.at for a, b in itertools.pairwise(hooks)]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.5 and gaps[2] >= 2.5
    with second.client(api_key) as client:
        [delivery] = recorded_deliveries(client, job_id)
    assert delivery["status"] == "delivered" and delivery["attempts"] == 4
    assert [a["status_code"] for a in delivery["log"]] == [500, 500, 500, 200]
    assert [a["attempt"] for a in delivery["log"]] == [1, 2, 3, 4]


def test_retry_after_from_the_receiver_is_honoured(
    api_client: httpx.Client, engine: Engine, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.answer(503, headers={"Retry-After": "1"})  # the schedule alone would wait 0.06 s
    job_id = submit(api_client, webhook_receiver)
    move(engine, job_id, S.processing, S.completed, S.file_ready)
    first, second = webhook_receiver.wait_for(2)
    assert second.at - first.at >= 0.95


def test_a_delivery_can_be_sent_again_on_request(
    api_client: httpx.Client, engine: Engine, webhook_receiver: WebhookReceiver
) -> None:
    job_id = submit(api_client, webhook_receiver)
    move(engine, job_id, S.processing, S.completed, S.file_ready)
    webhook_receiver.wait_for(1)
    [delivery] = recorded_deliveries(api_client, job_id)
    response = api_client.post(f"/v1/jobs/{job_id}/deliveries/{delivery['delivery_id']}/redeliver")
    assert response.status_code == 202 and response.json()["status"] == "pending"
    again = webhook_receiver.wait_for(2)[1]
    verify_both_ways(again)
    assert again.headers["webhook-id"] == delivery["delivery_id"]
    missing = api_client.post(f"/v1/jobs/{job_id}/deliveries/{'0' * 24}/redeliver")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


# --- the dispatcher on its own (httpx.MockTransport) -----------------------------------------------


def _delivery_due(engine: Engine, url: str) -> str:
    with session_scope(engine) as session:
        repo.create_tenant(session, tenant_id="acme", name="Acme")
        event = repo.create_event(
            session, tenant_id="acme", kind=EventKind.game, sport="soccer", title="t",
            sources=[{"angle": "main", "uri": "https://cdn.example.com/a.mp4"}],
        )  # fmt: skip
        run = repo.create_run(session, tenant_id="acme", event_id=event.id).run
        repo.create_webhook_subscription(
            session, tenant_id="acme", run_id=run.id, url=url, events=["job.fail"], secret="s"
        )
        [delivery] = repo.transition_run(
            session, run_id=run.id, status=S.failed, error_code="wrong_video"
        ).deliveries
        return delivery.id


def _drain(
    dispatcher: Dispatcher, engine: Engine, delivery_id: str, until: set[DeliveryStatus]
) -> WebhookDelivery:
    deadline = datetime.now(UTC) + timedelta(seconds=10)
    while datetime.now(UTC) < deadline:
        dispatcher.run_once()
        with session_scope(engine) as session:
            delivery = session.get(WebhookDelivery, delivery_id)
            assert delivery is not None
            if delivery.status in until:
                return delivery
    raise AssertionError("the delivery did not settle")


def test_a_delivery_is_dead_after_five_retries(api_settings: Settings, engine: Engine) -> None:
    calls: list[httpx.Request] = []

    def always_failing(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(500)

    delivery_id = _delivery_due(engine, "https://hooks.example.com/x")
    dispatcher = Dispatcher(
        tweak_settings(api_settings, webhooks={"time_scale": 0.00001}),
        engine=engine,
        client=httpx.Client(transport=httpx.MockTransport(always_failing)),
        resolve=FakeResolver(),
    )
    try:
        delivery = _drain(dispatcher, engine, delivery_id, {DeliveryStatus.dead})
    finally:
        dispatcher.stop()
    assert delivery.attempts == 6 and len(calls) == 6  # the first try and 5 retries
    assert json.loads(calls[0].content)["errors"][0]["code"] == "wrong_video"


def test_a_callback_host_that_now_resolves_to_a_private_address_is_not_called(
    api_settings: Settings, engine: Engine
) -> None:
    calls: list[httpx.Request] = []
    resolver = FakeResolver()
    delivery_id = _delivery_due(engine, "https://hooks.example.com/x")
    resolver.names["hooks.example.com"] = ["10.0.0.7"]  # DNS rebinding after the submit-time check

    def record(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200)

    dispatcher = Dispatcher(
        api_settings,
        engine=engine,
        client=httpx.Client(transport=httpx.MockTransport(record)),
        resolve=resolver,
    )
    try:
        delivery = _drain(dispatcher, engine, delivery_id, {DeliveryStatus.failed, DeliveryStatus.dead})
    finally:
        dispatcher.stop()
    assert calls == [] and delivery.last_error is not None
    assert delivery.last_error.startswith("callback_invalid_url")
