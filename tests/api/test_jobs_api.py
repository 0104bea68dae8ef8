"""The Jobs API against a real uvicorn server: submit, poll, list, idempotency, cancel, results.

The analysis flow is another process; these tests play its part by moving runs on through
``storage.repo.transition_run`` (the real boundary) and check what the API shows.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine

from api.jobs.service import estimate_completion
from infra.settings import Settings
from storage import repo
from storage.artifacts import ArtifactStore, RunRef
from storage.db import session_scope
from storage.models import Event, Run, RunStatus
from tests.fixtures.api import (
    ApiServer,
    ApiServerFactory,
    RecordingOrchestrator,
    issue_api_key,
    sqlite_only,
    tweak_settings,
)

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
S = RunStatus


def breakdown_job(footage: Path | str, **extra: Any) -> dict[str, Any]:
    return {"job": {"type": "breakdown", "videos": [{"url": str(footage)}], "sport": "soccer", **extra}}


def run_of(engine: Engine, job_id: str) -> Run:
    with session_scope(engine) as session:
        run = session.exec(repo.select(Run).where(Run.job_id == job_id)).one()
    return run


def move(engine: Engine, job_id: str, *path: RunStatus, **kwargs: Any) -> Run:
    """Play the flow: walk the job's run through ``path`` (kwargs go with the last step)."""
    run = run_of(engine, job_id)
    for index, status in enumerate(path):
        with session_scope(engine) as session:
            extra = kwargs if index == len(path) - 1 else {}
            repo.transition_run(session, run_id=run.id, status=status, **extra)
    return run_of(engine, job_id)


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "details"}, body
    assert body["error"]["code"] == code, body
    return body


# --- submit, poll, list ----------------------------------------------------------------------------


def test_a_submitted_job_is_queued_handed_to_the_orchestrator_and_polled_to_completed(
    api_client: httpx.Client, engine: Engine, footage_file: Path, orchestrator: RecordingOrchestrator
) -> None:
    options = {"analysis_fps": 10, "tracker": "botsort", "min_confidence": 0.4, "screentime_preset": "strict"}
    created = api_client.post(
        "/v1/jobs", json=breakdown_job(footage_file, title="Derby day", options=options)
    )
    assert created.status_code == 200, created.text
    body = created.json()
    assert set(body) == {"job_id", "created_at", "estimated_completion"}
    assert ISO_Z.match(body["created_at"]) and ISO_Z.match(body["estimated_completion"])
    job_id = body["job_id"]

    run = run_of(engine, job_id)
    assert orchestrator.submitted == [(run.id, "Derby day")]
    assert run.flow_run_id == "flow-1" and run.status == S.queued
    # the flow reads its parameters under their own names (tasks.detect_track.DetectParams)
    assert run.params == {
        "analysis_fps": 10.0,
        "tracker": "botsort",
        "conf": 0.4,
        "screentime_preset": "strict",
    }

    seen = []
    for step in (S.processing, S.completed, S.file_ready):
        move(engine, job_id, step)
        status = api_client.get(f"/v1/jobs/{job_id}").json()
        seen.append(status["status"])
    assert seen == ["processing", "processing", "completed"]
    assert set(status) == {
        "job_id", "job_type", "status", "created_at", "updated_at", "estimated_completion",
        "errors", "results",
    }  # fmt: skip
    assert status["job_type"] == "breakdown" and status["errors"] is None
    assert all(ISO_Z.match(status[k]) for k in ("created_at", "updated_at", "estimated_completion"))
    assert status["results"] == {"breakdown_url": None, "artifacts": {}, "screentime": None}


def test_results_link_the_breakdown_file_and_artifacts_and_carry_the_screentime_summary(
    api_server: ApiServer, api_client: httpx.Client, engine: Engine, footage_file: Path
) -> None:
    job_id = api_client.post("/v1/jobs", json=breakdown_job(footage_file)).json()["job_id"]
    run = run_of(engine, job_id)
    store = ArtifactStore.from_settings(api_server.settings)
    ref = RunRef(run.tenant_id, run.event_id, run.id)
    identity = {
        "identity_id": 7, "kind": "player", "label": "#7", "team": "A", "track_ids": [3, 9],
        "confidence": 0.9, "corrected": False, "seconds_on_screen": 812.5, "share": 0.5,
        "first_seen_s": 1.0, "last_seen_s": 1600.0, "intervals": [{"start_s": 1.0, "end_s": 813.5}],
    }  # fmt: skip
    team = {"team": "A", "identities": [7], "seconds_on_screen": 900.0, "share": 0.55, "intervals": []}
    breakdown = {"schema_version": 1, "duration_s": 1625.0, "identities": [identity], "teams": [team]}
    store.write_json(ref, "breakdown", breakdown)
    store.update_manifest(ref, timings={"export": 1.0})
    move(engine, job_id, S.processing, S.completed, S.file_ready, file_uri=store.path(ref, "breakdown"))

    results = api_client.get(f"/v1/jobs/{job_id}").json()["results"]
    base = f"{api_server.url}/v1/jobs/{job_id}/artifacts"
    assert results["breakdown_url"] == f"{base}/breakdown.json"
    assert results["artifacts"] == {
        "breakdown.json": f"{base}/breakdown.json",
        "manifest.json": f"{base}/manifest.json",
    }
    assert results["screentime"] == {
        "duration_s": 1625.0,
        "identities": [
            {"identity_id": 7, "kind": "player", "label": "#7", "team": "A", "seconds_on_screen": 812.5,
             "share": 0.5, "first_seen_s": 1.0, "last_seen_s": 1600.0}
        ],
        "teams": [{"team": "A", "seconds_on_screen": 900.0, "share": 0.55}],
    }  # fmt: skip
    download = api_client.get(results["breakdown_url"])
    assert download.status_code == 200 and download.headers["content-type"].startswith("application/json")
    assert download.json() == breakdown
    assert_envelope(api_client.get(f"{base}/tracks.parquet"), 404, "not_found")
    assert_envelope(api_client.get(f"{base}/..%2F..%2Fetc%2Fpasswd"), 404, "not_found")


@sqlite_only
def test_a_screentime_job_takes_episode_videos_and_cast_hints(
    api_client: httpx.Client, engine: Engine, footage_file: Path
) -> None:
    spec = {
        "type": "screentime",
        "videos": [{"url": "https://cdn.example.com/ep1-part1.mp4"}, {"url": footage_file.as_uri()}],
        "title": "Episode 1",
        "episode_id": "s01e01",
        "cast": [{"name": "Ada", "character": "The Engineer"}],
        "options": {"analysis_fps": 2},
    }
    response = api_client.post("/v1/jobs", json={"job": spec})
    assert response.status_code == 200, response.text
    job_id = response.json()["job_id"]
    assert api_client.get(f"/v1/jobs/{job_id}").json()["job_type"] == "screentime"
    run = run_of(engine, job_id)
    assert run.params == {"episode_id": "s01e01", "cast": [{"name": "Ada", "character": "The Engineer"}],
                          "analysis_fps": 2.0}  # fmt: skip
    with session_scope(engine) as session:
        event = repo.get_event(session, tenant_id="acme", event_id=run.event_id)
    assert event is not None and event.kind.value == "episode"
    assert [s["angle"] for s in event.sources] == ["main", "angle_2"]
    assert event.sources[1]["uri"] == str(footage_file.resolve())


def test_the_list_shows_queued_and_processing_jobs_and_filters_by_status(
    api_client: httpx.Client, engine: Engine, footage_file: Path
) -> None:
    ids = [api_client.post("/v1/jobs", json=breakdown_job(footage_file)).json()["job_id"] for _ in range(4)]
    move(engine, ids[1], S.processing)
    move(engine, ids[2], S.processing, S.completed, S.file_ready)
    move(engine, ids[3], S.processing, S.failed, error_code="missing_videos")

    def listed(**params: str) -> list[tuple[str, str]]:
        response = api_client.get("/v1/jobs", params=params)
        assert response.status_code == 200, response.text
        return [(job["job_id"], job["status"]) for job in response.json()]

    assert listed() == [(ids[0], "queued"), (ids[1], "processing")]
    assert listed(status="queued") == [(ids[0], "queued")]
    assert listed(status="processing") == [(ids[1], "processing")]
    assert listed(status="completed") == [(ids[2], "completed")]
    assert listed(status="failed") == [(ids[3], "failed")]
    assert listed(limit="1", offset="1") == [(ids[1], "processing")]
    entry = api_client.get("/v1/jobs").json()[0]
    assert set(entry) == {"job_id", "job_type", "status", "created_at", "updated_at", "estimated_completion"}


def test_a_failed_job_reports_its_error_code(
    api_client: httpx.Client, engine: Engine, footage_file: Path
) -> None:
    job_id = api_client.post("/v1/jobs", json=breakdown_job(footage_file)).json()["job_id"]
    move(engine, job_id, S.processing, S.failed, error_code="not_synchronized_camera_angles")
    status = api_client.get(f"/v1/jobs/{job_id}").json()
    assert status["status"] == "failed" and status["results"] is None
    [error] = status["errors"]
    assert error["code"] == "not_synchronized_camera_angles" and ISO_Z.match(error["timestamp"])
    assert error["details"]


# --- idempotency -----------------------------------------------------------------------------------


def test_an_idempotency_key_replays_the_same_job_and_refuses_another_body(
    api_client: httpx.Client, engine: Engine, footage_file: Path, orchestrator: RecordingOrchestrator
) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = api_client.post("/v1/jobs", json=breakdown_job(footage_file), headers=headers)
    # the same meaning written differently (key order, explicit default) is the same request
    same = {
        "job": {"sport": "soccer", "options": {}, "videos": [{"url": str(footage_file)}], "type": "breakdown"}
    }
    again = api_client.post("/v1/jobs", json=same, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert len(orchestrator.submitted) == 1

    other = api_client.post("/v1/jobs", json=breakdown_job(footage_file, title="other"), headers=headers)
    assert_envelope(other, 422, "idempotency_conflict")
    with session_scope(engine) as session:
        assert len(repo.list_runs(session, tenant_id="acme")) == 1
        assert len(repo.list_events(session, tenant_id="acme")) == 1  # replays leave no stray events
    fresh = api_client.post(
        "/v1/jobs", json=breakdown_job(footage_file), headers={"Idempotency-Key": "order-43"}
    )
    assert fresh.json()["job_id"] != first.json()["job_id"]


def test_a_job_the_orchestrator_could_not_take_stays_queued_and_a_replay_hands_it_over(
    api_client: httpx.Client, engine: Engine, footage_file: Path, orchestrator: RecordingOrchestrator
) -> None:
    orchestrator.fail_submit = True
    headers = {"Idempotency-Key": "retry-me"}
    first = api_client.post("/v1/jobs", json=breakdown_job(footage_file), headers=headers)
    assert first.status_code == 200
    assert run_of(engine, first.json()["job_id"]).flow_run_id is None
    orchestrator.fail_submit = False
    api_client.post("/v1/jobs", json=breakdown_job(footage_file), headers=headers)
    assert run_of(engine, first.json()["job_id"]).flow_run_id == "flow-1"


class SlowOrchestrator(RecordingOrchestrator):
    """Takes as long as a real ``run_deployment`` round trip on a busy Prefect server."""

    def submit(self, run: Run, event: Event) -> str | None:
        time.sleep(0.05)
        return super().submit(run, event)


def test_a_burst_of_concurrent_submissions_is_all_answered_and_handed_over(
    api_server_factory: ApiServerFactory, api_settings: Settings, engine: Engine, footage_file: Path
) -> None:
    # More submissions in flight than the server has threads (anyio's 40): writers waiting for
    # SQLite's write lock must never hold up the one that has it (they once did until the busy
    # timeout, and the burst answered 503s).
    settings = tweak_settings(
        api_settings, api={"rate_limit": "100000/minute", "submit_rate_limit": "100000/minute"}
    )
    orchestrator = SlowOrchestrator()
    server = api_server_factory(settings, orchestrator=orchestrator)
    key = issue_api_key(engine, "burst")

    def submit(_: int) -> tuple[int, str]:
        with server.client(key) as client:
            response = client.post("/v1/jobs", json=breakdown_job(footage_file), timeout=60)
            return response.status_code, response.json().get("job_id", response.text)

    with ThreadPoolExecutor(max_workers=80) as pool:
        answers = list(pool.map(submit, range(160)))
    assert [code for code, _ in answers] == [200] * 160, answers
    job_ids = {job_id for _, job_id in answers}
    assert len(job_ids) == 160 and len(orchestrator.submitted) == 160
    with session_scope(engine) as session:
        runs = session.exec(repo.select(Run).where(Run.tenant_id == "burst")).all()
    assert {run.job_id for run in runs} == job_ids
    assert all(run.flow_run_id for run in runs)


# --- cancel ----------------------------------------------------------------------------------------


def test_cancelling_a_queued_job_fails_it_with_code_cancelled_at_once(
    api_client: httpx.Client, footage_file: Path, orchestrator: RecordingOrchestrator
) -> None:
    job_id = api_client.post("/v1/jobs", json=breakdown_job(footage_file)).json()["job_id"]
    response = api_client.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "failed"
    assert [e["code"] for e in response.json()["errors"]] == ["cancelled"]
    assert len(orchestrator.cancelled) == 1
    assert_envelope(api_client.post(f"/v1/jobs/{job_id}/cancel"), 409, "conflict")


def test_cancelling_a_running_job_waits_for_the_flow_to_confirm(
    api_client: httpx.Client, engine: Engine, footage_file: Path, orchestrator: RecordingOrchestrator
) -> None:
    orchestrator.confirm_cancel = False
    job_id = api_client.post("/v1/jobs", json=breakdown_job(footage_file)).json()["job_id"]
    move(engine, job_id, S.processing)
    response = api_client.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 202 and response.json()["status"] == "processing"
    move(engine, job_id, S.failed, error_code="cancelled")  # the flow stops and says so
    status = api_client.get(f"/v1/jobs/{job_id}").json()
    assert status["status"] == "failed" and status["errors"][0]["code"] == "cancelled"


def test_a_finished_job_cannot_be_cancelled(
    api_client: httpx.Client, engine: Engine, footage_file: Path
) -> None:
    job_id = api_client.post("/v1/jobs", json=breakdown_job(footage_file)).json()["job_id"]
    move(engine, job_id, S.processing, S.completed, S.file_ready)
    assert_envelope(api_client.post(f"/v1/jobs/{job_id}/cancel"), 409, "conflict")


# --- tenants ---------------------------------------------------------------------------------------


def test_another_tenants_job_is_not_found(
    api_server: ApiServer, api_client: httpx.Client, other_api_key: str, footage_file: Path
) -> None:
    job_id = api_client.post("/v1/jobs", json=breakdown_job(footage_file)).json()["job_id"]
    with api_server.client(other_api_key) as other:
        for method, path in [
            ("GET", f"/v1/jobs/{job_id}"),
            ("POST", f"/v1/jobs/{job_id}/cancel"),
            ("GET", f"/v1/jobs/{job_id}/deliveries"),
            ("GET", f"/v1/jobs/{job_id}/artifacts/breakdown.json"),
        ]:
            assert_envelope(other.request(method, path), 404, "not_found")
        assert other.get("/v1/jobs").json() == []
    assert_envelope(api_client.get("/v1/jobs/not-a-uuid"), 404, "not_found")


# --- validation ------------------------------------------------------------------------------------


@sqlite_only
@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({}, "body.job"),
        ({"job": {"type": "highlights", "videos": [{"url": "https://x.test/a.mp4"}]}}, "body.job"),
        ({"job": {"type": "breakdown", "sport": "soccer"}}, "videos"),
        ({"job": {"type": "breakdown", "sport": "soccer", "videos": []}}, "videos"),
        ({"job": {"type": "breakdown", "sport": "Soccer!", "videos": [{"url": "https://x.test/a.mp4"}]}},
         "sport"),
        (
            {"job": {"type": "breakdown", "sport": "soccer",
                     "videos": [{"url": "https://x.test/a.mp4", "angle": "main"},
                                {"url": "https://x.test/b.mp4", "angle": "main"}]}},
            "unique",
        ),
        (
            {"job": {"type": "breakdown", "sport": "soccer", "videos": [{"url": "https://x.test/a.mp4"}],
                     "options": {"analysis_fps": 0}}},
            "analysis_fps",
        ),
        (
            {"job": {"type": "breakdown", "sport": "soccer", "videos": [{"url": "https://x.test/a.mp4"}],
                     "options": {"screentime_preset": "tv"}}},
            "screentime_preset",
        ),
        (
            {"job": {"type": "breakdown", "sport": "soccer", "videos": [{"url": "https://x.test/a.mp4"}]},
             "webhooks": [{"url": "https://hooks.example.com/x", "secret": "s", "events": ["job.started"]}]},
            "events",
        ),
        (
            {"job": {"type": "breakdown", "sport": "soccer", "videos": [{"url": "https://x.test/a.mp4"}]},
             "webhooks": [{"url": "https://hooks.example.com/x", "secret": "", "events": ["job.fail"]}]},
            "secret",
        ),
        ({"job": {"type": "breakdown", "sport": "soccer", "videos": [{"url": "https://x.test/a.mp4"}]},
          "extra": 1}, "extra"),
    ],
)  # fmt: skip
def test_invalid_bodies_are_422_validation_errors_in_the_envelope(
    api_client: httpx.Client, body: dict[str, Any], where: str
) -> None:
    details = assert_envelope(api_client.post("/v1/jobs", json=body), 422, "validation_error")["error"][
        "details"
    ]
    assert where in details


@sqlite_only
@pytest.mark.parametrize(
    ("request_args", "where"),
    [
        ({"method": "POST", "url": "/v1/jobs", "content": b"{not json",
          "headers": {"Content-Type": "application/json"}}, "JSON"),
        ({"method": "GET", "url": "/v1/jobs", "params": {"status": "done"}}, "query.status"),
        ({"method": "GET", "url": "/v1/jobs", "params": {"limit": "0"}}, "query.limit"),
        ({"method": "POST", "url": "/v1/jobs", "json": {"job": {}},
          "headers": {"Idempotency-Key": "k" * 300}}, "header.idempotency-key"),
    ],
)  # fmt: skip
def test_invalid_queries_headers_and_json_are_422_validation_errors(
    api_client: httpx.Client, request_args: dict[str, Any], where: str
) -> None:
    details = assert_envelope(api_client.request(**request_args), 422, "validation_error")["error"]["details"]
    assert where in details


@sqlite_only
@pytest.mark.parametrize(
    ("url", "accepted"),
    [
        ("https://cdn.example.com/game.mp4", True),
        ("http://cdn.example.com:8080/game.mp4?sig=abc", True),
        ("{footage}", True),
        ("file://{footage}", True),
        ("ftp://cdn.example.com/game.mp4", False),
        ("s3://bucket/game.mp4", False),
        ("https:///game.mp4", False),
        ("https://cdn.example.com:99999/game.mp4", False),
        ("game.mp4", False),
        ("/etc/passwd", False),
        ("{root}/missing.mp4", False),
        ("{root}/../escape.mp4", False),
        ("file://fileserver/{footage}", False),
        ("https://cdn.example.com/a b.mp4", False),
    ],
)
def test_video_urls_are_checked_at_submit(
    api_client: httpx.Client, footage_file: Path, url: str, accepted: bool
) -> None:
    url = url.format(footage=footage_file, root=footage_file.parent).replace("file:////", "file:///")
    (footage_file.parent.parent / "escape.mp4").write_bytes(b"x")
    response = api_client.post("/v1/jobs", json=breakdown_job(url))
    if accepted:
        assert response.status_code == 200, response.text
    else:
        assert_envelope(response, 400, "video_invalid_url")


# --- estimated completion --------------------------------------------------------------------------


def test_estimated_completion_uses_measured_run_times_and_queue_length() -> None:
    now = datetime(2025, 8, 27, 14, 0, tzinfo=UTC)
    default = estimate_completion(now, ahead=0, recent_run_s=[], default_run_s=900, parallel=1)
    assert default == now + timedelta(seconds=900)
    measured = estimate_completion(now, ahead=3, recent_run_s=[100, 300], default_run_s=900, parallel=2)
    assert measured == now + timedelta(seconds=(3 / 2 + 1) * 200)


@sqlite_only
def test_estimated_completion_grows_with_the_queue(
    api_server_factory: ApiServerFactory, api_key: str, footage_file: Path
) -> None:
    server = api_server_factory()
    with server.client(api_key) as client:
        first, second = (
            datetime.fromisoformat(client.post("/v1/jobs", json=breakdown_job(footage_file)).json()[
                "estimated_completion"])
            for _ in range(2)
        )  # fmt: skip
    assert second - first >= timedelta(seconds=server.settings.api.eta_default_run_s - 2)
