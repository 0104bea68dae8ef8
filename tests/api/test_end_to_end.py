"""A Jobs API client against the whole stack: uvicorn → a real Prefect deployment served by
`filmroom serve-flows` → the run flow on Dask → statuses in the database → a signed webhook."""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import standardwebhooks

from api.orchestrator import PrefectOrchestrator
from api.webhooks.signing import standard_webhooks_secret
from infra.settings import Settings
from infra.synth import DamageKind, SynthClip
from tests.fixtures.api import ApiServerFactory, WebhookReceiver, sqlite_only, tweak_settings

pytestmark = [sqlite_only, pytest.mark.slow]


def _deployment_ready(api_url: str, name: str) -> bool:
    try:
        response = httpx.get(f"{api_url}/deployments/name/{name}", timeout=2.0)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


@pytest.fixture
def flow_server(api_settings: Settings, prefect_server: str) -> Iterator[subprocess.Popen[bytes]]:
    """`filmroom serve-flows` in its own process, sharing this test's database and artifact root."""
    env = dict(os.environ)
    env.update(
        {
            "PREFECT_API_URL": prefect_server,
            "FILMROOM_INGEST__ALLOWED_ROOTS": f'["{api_settings.ingest.allowed_roots[0]}"]',
            "FILMROOM_DETECT__CHUNK_SECONDS": "2",
            "FILMROOM_DETECT__OVERLAP_SECONDS": "1",
            "FILMROOM_DASK__N_WORKERS": "1",
        }
    )
    filmroom = str(Path(sys.executable).parent / "filmroom")
    process = subprocess.Popen([filmroom, "serve-flows"], env=env, start_new_session=True)
    deadline = time.monotonic() + 90
    while not _deployment_ready(prefect_server, api_settings.prefect.run_deployment):
        assert process.poll() is None, "serve-flows exited"
        assert time.monotonic() < deadline, "the deployment never appeared"
        time.sleep(0.5)
    yield process
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()


def _submit_and_wait(client: httpx.Client, video: Path, hook_url: str) -> dict[str, object]:
    submitted = client.post(
        "/v1/jobs",
        json={
            "job": {"type": "breakdown", "videos": [{"url": str(video)}], "sport": "soccer"},
            "webhooks": [{"url": hook_url, "secret": "s3cret", "events": ["job.success", "job.fail"]}],
        },
    )
    assert submitted.status_code == 200, submitted.text
    job_id = submitted.json()["job_id"]
    deadline = time.monotonic() + 240
    while True:
        job: dict[str, object] = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("completed", "failed") or time.monotonic() > deadline:
            return job
        time.sleep(1.0)


def test_a_job_on_damaged_footage_fails_with_the_ingest_code_and_sends_job_fail(
    api_settings: Settings,
    api_server_factory: ApiServerFactory,
    api_key: str,
    prefect_server: str,
    flow_server: subprocess.Popen[bytes],
    webhook_receiver: WebhookReceiver,
    damaged_clips: dict[DamageKind, Path],
) -> None:
    video = Path(api_settings.ingest.allowed_roots[0]) / "broken.mp4"
    shutil.copyfile(damaged_clips[DamageKind.truncated], video)
    settings = tweak_settings(api_settings, prefect={"api_url": prefect_server})
    server = api_server_factory(settings, orchestrator=PrefectOrchestrator(settings))
    with server.client(api_key) as client:
        job = _submit_and_wait(client, video, webhook_receiver.url)
    assert job["status"] == "failed", job
    assert [e["code"] for e in job["errors"]] == ["incomplete_video"]  # type: ignore[attr-defined]
    [delivery] = webhook_receiver.wait_for(1, timeout=30)
    assert delivery.json()["status"] == "failed"
    assert delivery.json()["errors"][0]["code"] == "incomplete_video"


def test_a_submitted_job_runs_through_prefect_and_sends_one_signed_success(
    api_settings: Settings,
    api_server_factory: ApiServerFactory,
    api_key: str,
    prefect_server: str,
    flow_server: subprocess.Popen[bytes],
    webhook_receiver: WebhookReceiver,
    game_clip: SynthClip,
) -> None:
    video = Path(api_settings.ingest.allowed_roots[0]) / "match.mp4"
    shutil.copyfile(game_clip.video_path, video)
    settings = tweak_settings(api_settings, prefect={"api_url": prefect_server})
    server = api_server_factory(settings, orchestrator=PrefectOrchestrator(settings))
    with server.client(api_key) as client:
        job = _submit_and_wait(client, video, webhook_receiver.url)
    assert job["status"] == "completed", job
    assert job["results"] is not None
    [delivery] = webhook_receiver.wait_for(1, timeout=30)
    expected = "sha256=" + hmac.new(b"s3cret", delivery.body, hashlib.sha256).hexdigest()
    headers = {k.lower(): v for k, v in delivery.headers.items()}
    assert headers["x-hub-signature-256"] == expected
    standardwebhooks.Webhook(standard_webhooks_secret("s3cret")).verify(delivery.body, delivery.headers)
    body = delivery.json()
    assert (body["job_id"], body["status"]) == (job["job_id"], "completed")
    time.sleep(1.0)
    assert len(webhook_receiver.wait_for(1, timeout=1)) == 1, "exactly one job.success"
