"""A breakdown-runs API client against the whole stack: a JWT minted with PyJWT → uvicorn → a real Prefect
deployment served by `filmroom serve-flows` → the run flow on Dask over two camera angles of synthetic
footage → statuses in the database → signed webhooks to a tenant endpoint on loopback → the breakdown
file through ``fileUrl``, and the same run through the Jobs API."""

from __future__ import annotations

import hashlib
import hmac
import shutil
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import standardwebhooks
from sqlalchemy.engine import Engine

from api.orchestrator import PrefectOrchestrator
from api.webhooks.signing import standard_webhooks_secret
from infra.settings import Settings
from infra.synth import SynthClip
from tests.api.test_end_to_end import flow_server  # noqa: F401  (the `filmroom serve-flows` process)
from tests.fixtures.api import (
    ApiServer,
    ApiServerFactory,
    ReceivedWebhook,
    WebhookReceiver,
    ensure_tenant,
    sqlite_only,
    tweak_settings,
)

pytestmark = [sqlite_only, pytest.mark.slow]

FINISHED = ("failed", "file_ready", "file_failed")
STATUS_ORDER = ["queued", "processing", "completed", "failed", "file_ready", "file_failed"]


def client_token(settings: Settings, tenant: str) -> str:
    """What a client's identity provider issues: HS256, the API's issuer, the tenant claim, 5 minutes."""
    now = int(time.time())
    claims = {"iss": settings.api.jwt_issuer, "sub": "e2e-client", "iat": now, "exp": now + 300}
    return jwt.encode({**claims, settings.api.jwt_tenant_claim: tenant}, settings.api.jwt_secret, "HS256")


def stack(
    api_settings: Settings, api_server_factory: ApiServerFactory, prefect_server: str, engine: Engine
) -> tuple[ApiServer, str]:
    """The API on the real Prefect deployment, and a JWT of tenant acme."""
    settings = tweak_settings(api_settings, prefect={"api_url": prefect_server})
    server = api_server_factory(settings, orchestrator=PrefectOrchestrator(settings))
    ensure_tenant(engine, "acme")  # tenants are registered explicitly; the token names one
    return server, client_token(server.settings, "acme")


def footage(api_settings: Settings, clips: list[SynthClip], folder: str) -> list[dict[str, str]]:
    """The clips copied into the allowed footage folder, as the event's videos (one per angle)."""
    target = Path(api_settings.ingest.allowed_roots[0]) / folder
    target.mkdir(parents=True, exist_ok=True)
    videos = []
    for angle, clip in zip(("main", "reverse"), clips, strict=True):
        path = target / f"{angle}.mp4"
        shutil.copyfile(clip.video_path, path)
        videos.append({"angle": angle, "url": str(path)})
    return videos


def register_event(client: httpx.Client, videos: list[dict[str, str]], title: str) -> str:
    event = client.post("/v1/events", json={"sport": "soccer", "title": title, "videos": videos})
    assert event.status_code == 201, event.text
    return str(event.json()["_id"])


def start_run(client: httpx.Client, event_id: str) -> dict[str, Any]:
    run = client.post(f"/v1/events/{event_id}/breakdown-runs", json={"mode": "ai"})
    assert run.status_code == 201, run.text
    created: dict[str, Any] = run.json()
    assert created["status"] == "queued" and created["fileUrl"] is None
    return created


def wait_until_finished(client: httpx.Client, run: dict[str, Any], timeout_s: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    path = f"/v1/events/{run['eventId']}/breakdown-runs/{run['_id']}"
    while True:
        current: dict[str, Any] = client.get(path).json()
        if current["status"] in FINISHED:
            return current
        assert time.monotonic() < deadline, f"the run did not finish in {timeout_s} s: {current}"
        time.sleep(0.5)


def verified(hook: ReceivedWebhook, secret: str) -> dict[str, Any]:
    """The body, after checking both signatures the way a receiver would."""
    expected = "sha256=" + hmac.new(secret.encode(), hook.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(hook.headers["X-Hub-Signature-256"], expected)
    body: dict[str, Any] = standardwebhooks.Webhook(standard_webhooks_secret(secret)).verify(
        hook.body, hook.headers
    )
    return body


def epoch_ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def in_order(bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(bodies, key=lambda b: (b["timestamp"], STATUS_ORDER.index(b["status"])))


def test_a_jwt_client_follows_a_two_angle_breakdown_by_webhook_to_its_file(
    api_settings: Settings,
    api_server_factory: ApiServerFactory,
    engine: Engine,
    prefect_server: str,
    flow_server: subprocess.Popen[bytes],  # noqa: F811
    webhook_receiver: WebhookReceiver,
    two_angle_game: list[SynthClip],
) -> None:
    server, token = stack(api_settings, api_server_factory, prefect_server, engine)
    videos = footage(api_settings, two_angle_game, "derby")
    with server.client(token) as client:
        endpoint = client.post("/v1/webhooks", json={"url": f"{webhook_receiver.url}/filmroom"})
        assert endpoint.status_code == 201, endpoint.text
        secret = endpoint.json()["secret"]
        run = start_run(client, register_event(client, videos, "Derby"))
        final = wait_until_finished(client, run)
        assert final["status"] == "file_ready", final
        assert final["errors"] == [] and final["fileUrl"] is not None
        assert (final["_id"], final["eventId"], final["mode"], final["tenant"]) == (
            run["_id"], run["eventId"], "ai", "acme",
        )  # fmt: skip

        hooks = webhook_receiver.wait_for(4, timeout=30)
        bodies = in_order([verified(hook, secret) for hook in hooks])
        assert [b["status"] for b in bodies] == ["queued", "processing", "completed", "file_ready"]
        for body in bodies:
            assert (body["eventId"], body["breakdownRunId"]) == (run["eventId"], run["_id"])
            assert "errorCode" not in body and "errorMessage" not in body
        assert all("fileUrl" not in body for body in bodies[:3])
        assert {h.path for h in hooks} == {"/filmroom"}

        # the breakdown file, through the webhook's link (no Authorization header)
        download = httpx.get(bodies[-1]["fileUrl"], timeout=30)
        assert download.status_code == 200, download.text
        breakdown = download.json()
        assert breakdown["event"]["id"] == run["eventId"] and breakdown["run"]["id"] == run["_id"]
        assert sorted(v["angle"] for v in breakdown["videos"]) == ["main", "reverse"]
        assert breakdown["identities"], "the synthetic players were found"
        assert httpx.get(final["fileUrl"], timeout=30).content == download.content

        # the same run through the Jobs API, with the same token
        job = client.get(f"/v1/jobs/{run['jobId']}")
        assert job.status_code == 200, job.text
        assert job.json()["job_id"] == run["jobId"] and job.json()["status"] == "completed"
        assert job.json()["results"]["breakdown_url"].endswith("/breakdown.json")

        log = client.get(
            f"/v1/webhooks/{endpoint.json()['_id']}/deliveries", params={"breakdownRunId": run["_id"]}
        ).json()
        assert sorted((d["status"], d["deliveryStatus"]) for d in log) == sorted(
            (s, "delivered") for s in ("queued", "processing", "completed", "file_ready")
        )
    with pytest.raises(AssertionError):  # one delivery per status change, nothing more
        webhook_receiver.wait_for(5, timeout=1.0)


def test_bad_footage_fails_with_the_documents_error_codes_on_the_run_and_in_the_webhook(
    api_settings: Settings,
    api_server_factory: ApiServerFactory,
    engine: Engine,
    prefect_server: str,
    flow_server: subprocess.Popen[bytes],  # noqa: F811
    webhook_receiver: WebhookReceiver,
    offset_angle_game: list[SynthClip],
    two_angle_game: list[SynthClip],
) -> None:
    server, token = stack(api_settings, api_server_factory, prefect_server, engine)
    with server.client(token) as client:
        endpoint = client.post(
            "/v1/webhooks", json={"url": webhook_receiver.url, "statuses": ["failed", "file_ready"]}
        )
        assert endpoint.status_code == 201, endpoint.text
        # two angles out of sync: the second starts 1.5 s later in match time
        out_of_sync = register_event(client, footage(api_settings, offset_angle_game, "offset"), "Offset")
        # an angle whose file disappears between the event's registration and its processing
        videos = footage(api_settings, two_angle_game, "vanishing")
        vanishing = register_event(client, videos, "Vanishing")
        Path(videos[1]["url"]).unlink()
        cases = [
            (start_run(client, out_of_sync), "not_synchronized_camera_angles"),
            (start_run(client, vanishing), "missing_videos"),
        ]
        hooks = {hook.json()["breakdownRunId"]: hook for hook in webhook_receiver.wait_for(2, timeout=240)}
        for run, code in cases:
            final = wait_until_finished(client, run)
            assert final["status"] == "failed" and final["fileUrl"] is None, final
            [error] = final["errors"]
            assert error["code"] == code and "reverse" in error["message"], error
            body = verified(hooks[run["_id"]], endpoint.json()["secret"])
            assert body == {
                "eventId": run["eventId"],
                "breakdownRunId": run["_id"],
                "status": "failed",
                "timestamp": epoch_ms(final["modified$date"]),  # the failure was the run's last change
                "errorCode": code,
                "errorMessage": error["message"],
            }
            job = client.get(f"/v1/jobs/{run['jobId']}").json()
            assert job["status"] == "failed" and [e["code"] for e in job["errors"]] == [code]
