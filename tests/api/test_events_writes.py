"""The writes of the breakdown-runs API against a real uvicorn server: registering events, starting ai
runs (handed to the orchestrator like Jobs API submissions), manual runs completed by an upload, the
fileUrl download link and its expiry, and the same run through ``GET /v1/jobs/{job_id}``.

The orchestrator is the recording one (the analysis flow is another process); ai runs are moved on
through ``storage.repo.transition_run``, the flow's real boundary.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from storage import repo
from storage.artifacts import ArtifactStore, RunRef
from storage.db import session_scope
from storage.models import Run, RunStatus, WebhookDelivery
from tests.fixtures.api import (
    ApiServer,
    ApiServerFactory,
    RecordingOrchestrator,
    WebhookReceiver,
    tweak_settings,
)

S = RunStatus
MISSING_ID = "0123456789abcdef01234567"
BREAKDOWN = {"schema_version": 1, "identities": [{"identity_id": 1, "label": "#9"}], "note": "é"}


@pytest.fixture
def two_angles(api_settings: Any) -> list[Path]:
    folder = Path(api_settings.ingest.allowed_roots[0])
    paths = [folder / "main.mp4", folder / "tactical.mp4"]
    for path in paths:
        path.write_bytes(b"\x00\x00\x00\x18ftypmp42 synthetic footage")
    return paths


@pytest.fixture
def client(api_server: ApiServer, jwt_token: str) -> Iterator[httpx.Client]:
    with api_server.client(jwt_token) as test_client:
        yield test_client


def event_body(paths: list[Path], **extra: Any) -> dict[str, Any]:
    videos = [
        {"angle": angle, "url": str(path)} for angle, path in zip(("main", "tactical"), paths, strict=False)
    ]
    return {"kind": "game", "sport": "soccer", "title": "Derby", "videos": videos, **extra}


def envelope(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    return str(body["error"]["details"])


def new_event(client: httpx.Client, paths: list[Path]) -> dict[str, Any]:
    response = client.post("/v1/events", json=event_body(paths))
    assert response.status_code == 201, response.text
    return dict(response.json())


def start(client: httpx.Client, event_id: str, **body: Any) -> httpx.Response:
    return client.post(f"/v1/events/{event_id}/breakdown-runs", json=body)


def run_row(engine: Engine, run_id: str) -> Run:
    with session_scope(engine) as session:
        run = repo.get_run_by_id(session, run_id=run_id)
    assert run is not None
    return run


# --- events ----------------------------------------------------------------------------------------


def test_an_event_is_registered_with_its_camera_angles(client: httpx.Client, two_angles: list[Path]) -> None:
    response = client.post("/v1/events", json=event_body(two_angles))
    assert response.status_code == 201, response.text
    event = response.json()
    assert set(event) == {"_id", "kind", "sport", "title", "videos", "tenant", "create$date", "modified$date"}
    assert event["videos"] == [
        {"angle": "main", "url": str(two_angles[0].resolve())},
        {"angle": "tactical", "url": str(two_angles[1].resolve())},
    ]
    assert (event["kind"], event["sport"], event["title"], event["tenant"]) == (
        "game",
        "soccer",
        "Derby",
        "acme",
    )
    assert response.headers["Location"] == f"/v1/events/{event['_id']}"
    assert client.get(f"/v1/events/{event['_id']}").json() == event
    assert (
        client.get("/v1/events/breakdown-runs", params={"eventId": event["_id"]}).json() == []
    )  # no run yet


def test_angles_default_and_http_videos_are_accepted(client: httpx.Client, two_angles: list[Path]) -> None:
    body = {
        "sport": "basketball",
        "videos": [{"url": str(two_angles[0])}, {"url": "https://cdn.example.com/b.mp4"}],
    }
    event = client.post("/v1/events", json=body).json()
    assert [v["angle"] for v in event["videos"]] == ["main", "angle_2"] and event["kind"] == "game"


@pytest.mark.parametrize(
    ("videos", "status", "code"),
    [
        ([{"url": "/etc/passwd"}], 400, "video_invalid_url"),
        ([{"url": "ftp://example.com/a.mp4"}], 400, "video_invalid_url"),
        ([{"url": "https:///no-host.mp4"}], 400, "video_invalid_url"),
        ([], 422, "validation_error"),
        (
            [
                {"url": "https://a.example.com/1.mp4", "angle": "x"},
                {"url": "https://a.example.com/2.mp4", "angle": "x"},
            ],
            422,
            "validation_error",
        ),
        ([{"url": "https://a.example.com/1.mp4", "angle": "bad angle!"}], 422, "validation_error"),
    ],
)
def test_bad_videos_are_refused_with_the_jobs_apis_codes(
    client: httpx.Client, videos: list[dict[str, str]], status: int, code: str
) -> None:
    envelope(client.post("/v1/events", json={"sport": "soccer", "videos": videos}), status, code)


def test_an_event_post_is_idempotent_with_a_key(client: httpx.Client, two_angles: list[Path]) -> None:
    headers = {"Idempotency-Key": "event-1"}
    first = client.post("/v1/events", json=event_body(two_angles), headers=headers)
    again = client.post("/v1/events", json=event_body(two_angles), headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    other = client.post("/v1/events", json=event_body(two_angles, title="Other"), headers=headers)
    envelope(other, 422, "idempotency_conflict")
    assert client.post("/v1/events", json=event_body(two_angles)).json()["_id"] != first.json()["_id"]


def test_events_of_another_tenant_are_not_found(
    client: httpx.Client, api_server: ApiServer, other_jwt_token: str, two_angles: list[Path]
) -> None:
    event = new_event(client, two_angles)
    with api_server.client(other_jwt_token) as other:
        envelope(other.get(f"/v1/events/{event['_id']}"), 404, "not_found")
        envelope(start(other, event["_id"]), 404, "not_found")
    envelope(client.get("/v1/events/nope"), 400, "bad_request")
    envelope(client.get(f"/v1/events/{MISSING_ID}"), 404, "not_found")


# --- ai runs ---------------------------------------------------------------------------------------


def test_an_ai_run_is_queued_handed_over_and_visible_through_the_jobs_api(
    client: httpx.Client, engine: Engine, orchestrator: RecordingOrchestrator, two_angles: list[Path]
) -> None:
    event = new_event(client, two_angles)
    response = start(client, event["_id"], mode="ai", options={"analysis_fps": 4, "min_confidence": 0.3})
    assert response.status_code == 201, response.text
    run = response.json()
    assert (
        run["status"] == "queued" and run["mode"] == "ai" and run["fileUrl"] is None and run["errors"] == []
    )
    assert run["eventId"] == event["_id"] and run["tenant"] == "acme"
    assert response.headers["Location"] == f"/v1/events/{event['_id']}/breakdown-runs/{run['_id']}"
    assert orchestrator.submitted == [(run["_id"], "Derby")]
    row = run_row(engine, run["_id"])
    assert row.flow_run_id == "flow-1" and row.params == {"analysis_fps": 4.0, "conf": 0.3}
    assert row.job_type.value == "breakdown" and row.estimated_completion is not None

    job = client.get(f"/v1/jobs/{run['jobId']}").json()
    assert job["job_id"] == run["jobId"] and job["status"] == "queued" and job["job_type"] == "breakdown"
    for status in (S.processing, S.failed):
        with session_scope(engine) as session:
            repo.transition_run(
                session,
                run_id=run["_id"],
                status=status,
                error_code="not_synchronized_camera_angles" if status == S.failed else None,
            )
    seen = client.get(f"/v1/events/{event['_id']}/breakdown-runs/{run['_id']}").json()
    assert seen["status"] == "failed" and seen["fileUrl"] is None
    assert seen["errors"] == [
        {
            "message": "The camera angles of the event do not line up in time.",
            "code": "not_synchronized_camera_angles",
        }
    ]
    job = client.get(f"/v1/jobs/{run['jobId']}").json()
    assert job["status"] == "failed" and job["errors"][0]["code"] == "not_synchronized_camera_angles"


def test_starting_a_run_is_idempotent_and_a_replay_retries_a_failed_hand_over(
    api_server_factory: ApiServerFactory, jwt_token: str, engine: Engine, two_angles: list[Path]
) -> None:
    orchestrator = RecordingOrchestrator(fail_submit=True)
    server = api_server_factory(orchestrator=orchestrator)
    with (
        server.client(jwt_token) as plain,
        server.client(jwt_token, headers={"Idempotency-Key": "run-1"}) as client,
    ):
        event, other = new_event(plain, two_angles), new_event(plain, two_angles)
        first = start(client, event["_id"])
        assert (
            first.status_code == 201 and first.json()["status"] == "queued"
        )  # durable though not handed over
        assert run_row(engine, first.json()["_id"]).flow_run_id is None
        orchestrator.fail_submit = False
        again = start(client, event["_id"])
        assert again.json()["_id"] == first.json()["_id"] and again.headers["Idempotent-Replayed"] == "true"
        assert orchestrator.submitted == [(first.json()["_id"], "Derby")]
        assert run_row(engine, first.json()["_id"]).flow_run_id == "flow-1"
        start(client, event["_id"])  # a third replay: already handed over, not submitted again
        assert len(orchestrator.submitted) == 1
        envelope(start(client, event["_id"], mode="manual"), 422, "idempotency_conflict")
        envelope(start(client, other["_id"]), 422, "idempotency_conflict")  # same key, another event


def test_starting_a_run_checks_the_event_and_the_body(client: httpx.Client, two_angles: list[Path]) -> None:
    envelope(start(client, MISSING_ID), 404, "not_found")
    envelope(start(client, "12345"), 400, "bad_request")
    event = new_event(client, two_angles)
    envelope(start(client, event["_id"], mode="semi"), 422, "validation_error")
    envelope(start(client, event["_id"], options={"analysis_fps": 0}), 422, "validation_error")
    envelope(start(client, event["_id"], extra=1), 422, "validation_error")


# --- manual runs and the file ----------------------------------------------------------------------


def upload(client: httpx.Client, run: dict[str, Any], content: bytes) -> httpx.Response:
    return client.put(
        f"/v1/events/{run['eventId']}/breakdown-runs/{run['_id']}/file",
        content=content,
        headers={"Content-Type": "application/json"},
    )


def outbox(engine: Engine, run_id: str) -> list[str]:
    with session_scope(engine) as session:
        rows = session.exec(
            select(WebhookDelivery)
            .where(WebhookDelivery.run_id == run_id)
            .order_by(col(WebhookDelivery.created_at), col(WebhookDelivery.id))
        ).all()
        return [row.payload["status"] for row in rows]


def test_a_manual_run_becomes_file_ready_when_the_analyst_uploads_the_file(
    client: httpx.Client,
    engine: Engine,
    orchestrator: RecordingOrchestrator,
    two_angles: list[Path],
    webhook_receiver: WebhookReceiver,
) -> None:
    with session_scope(engine) as session:  # a tenant-wide subscription sees every status change
        repo.create_webhook_subscription(
            session, tenant_id="acme", url=f"{webhook_receiver.url}/hook", events=[s.value for s in S]
        )
    event = new_event(client, two_angles)
    run = start(client, event["_id"], mode="manual").json()
    assert run["status"] == "queued" and run["mode"] == "manual" and orchestrator.submitted == []
    done = upload(client, run, json.dumps(BREAKDOWN).encode())
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["status"] == "file_ready" and body["fileUrl"].startswith(f"{client.base_url}/v1/files/")
    assert body["modified$date"] >= run["modified$date"]
    changes = ["queued", "processing", "completed", "file_ready"]
    assert outbox(engine, run["_id"]) == changes  # one delivery per status change
    assert sorted(w.json()["status"] for w in webhook_receiver.wait_for(4)) == sorted(changes)

    download = httpx.get(body["fileUrl"], timeout=10)  # no Authorization header
    assert download.status_code == 200 and download.headers["content-type"].startswith("application/json")
    assert download.json() == BREAKDOWN
    assert "breakdown.json" in download.headers["content-disposition"]

    listed = client.get("/v1/events/breakdown-runs", params={"mode": "manual"}).json()
    assert listed[0]["latest"]["status"] == "file_ready" and listed[0]["modes"] == ["manual"]
    job = client.get(f"/v1/jobs/{run['jobId']}").json()
    assert job["status"] == "completed" and job["results"]["breakdown_url"].endswith("/breakdown.json")
    envelope(upload(client, run, b"{}"), 409, "conflict")  # file_ready is final


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b"[1, 2]", 422, "validation_error"),
        (b'"text"', 422, "validation_error"),
        (b"{not json", 422, "validation_error"),
        (b"\xff\xfe{}", 422, "validation_error"),
        (b"", 422, "validation_error"),
        (b'{"pad": "' + b"x" * 2048 + b'"}', 400, "bad_request"),
    ],
)
def test_an_upload_must_be_a_json_object_within_the_size_limit(
    api_server_factory: ApiServerFactory, api_settings: Any, jwt_token: str, engine: Engine,
    two_angles: list[Path], content: bytes, status: int, code: str,
) -> None:  # fmt: skip
    server = api_server_factory(tweak_settings(api_settings, api={"breakdown_file_max_bytes": 1024}))
    with server.client(jwt_token) as client:
        run = start(client, new_event(client, two_angles)["_id"], mode="manual").json()
        envelope(upload(client, run, content), status, code)
        assert run_row(engine, run["_id"]).status == S.queued  # nothing changed
        store = ArtifactStore.from_settings(server.settings)
        assert not store.exists(RunRef("acme", run["eventId"], run["_id"]), "breakdown")


def test_only_manual_runs_of_the_caller_take_an_upload(
    client: httpx.Client, api_server: ApiServer, other_jwt_token: str, two_angles: list[Path]
) -> None:
    event = new_event(client, two_angles)
    ai = start(client, event["_id"]).json()
    envelope(upload(client, ai, b"{}"), 409, "conflict")
    manual = start(client, event["_id"], mode="manual").json()
    with api_server.client(other_jwt_token) as other:
        envelope(upload(other, manual, b"{}"), 404, "not_found")
    envelope(upload(client, {**manual, "eventId": MISSING_ID}, b"{}"), 404, "not_found")
    envelope(upload(client, {**manual, "_id": "bad"}, b"{}"), 400, "bad_request")


def test_a_file_link_expires_and_a_forged_one_is_refused(
    api_server_factory: ApiServerFactory, api_settings: Any, jwt_token: str, two_angles: list[Path]
) -> None:
    # long enough for a loaded CI machine to use a fresh link, short enough to wait out
    server = api_server_factory(tweak_settings(api_settings, api={"link_ttl_s": 5}))
    with server.client(jwt_token) as client:
        run = start(client, new_event(client, two_angles)["_id"], mode="manual").json()
        link = upload(client, run, b'{"a": 1}').json()["fileUrl"]
        assert httpx.get(link, timeout=10).json() == {"a": 1}
        token = link.rsplit("/", 1)[1]
        forged = f"{server.url}/v1/files/{token[:-4]}AAAA"
        envelope(httpx.get(forged, timeout=10), 401, "unauthorized")
        envelope(httpx.get(f"{server.url}/v1/files/garbage", timeout=10), 401, "unauthorized")
        time.sleep(6.1)
        assert "expired" in envelope(httpx.get(link, timeout=10), 401, "unauthorized")
        fresh = client.get(f"/v1/events/{run['eventId']}/breakdown-runs/{run['_id']}").json()["fileUrl"]
        assert fresh != link and httpx.get(fresh, timeout=10).json() == {"a": 1}
        ArtifactStore.from_settings(server.settings).delete_run(RunRef("acme", run["eventId"], run["_id"]))
        envelope(httpx.get(fresh, timeout=10), 404, "not_found")  # gone
        assert (
            client.get(f"/v1/events/{run['eventId']}/breakdown-runs/{run['_id']}").json()["fileUrl"] is None
        )


def test_an_episode_event_runs_as_a_screentime_job(
    client: httpx.Client, engine: Engine, two_angles: list[Path]
) -> None:
    event = client.post(
        "/v1/events", json={"kind": "episode", "sport": "broadcast", "videos": [{"url": str(two_angles[0])}]}
    ).json()
    run = start(client, event["_id"]).json()
    assert run_row(engine, run["_id"]).job_type.value == "screentime"
    assert client.get(f"/v1/jobs/{run['jobId']}").json()["job_type"] == "screentime"
