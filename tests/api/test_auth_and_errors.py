"""Authentication, the error envelope, rate limits and OpenAPI, against a real uvicorn server."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import Engine

from api.deps import get_artifacts, get_orchestrator, write_scope
from api.ratelimit import limits_storage
from infra.settings import Settings
from storage import repo
from storage.models import ApiKey
from tests.fixtures.api import ApiServer, ApiServerFactory, sqlite_only, tweak_settings

JOB_ID = "550e8400-e29b-41d4-a716-446655440000"
BODY = {"job": {"type": "breakdown", "videos": [{"url": "https://cdn.example.com/a.mp4"}], "sport": "soccer"}}


def v1_routes(server: ApiServer) -> list[tuple[str, str]]:
    """Every (method, concrete path) of the /v1 API, read from the OpenAPI document."""
    spec = httpx.get(f"{server.url}/openapi.json").json()
    routes = []
    for path, operations in spec["paths"].items():
        if path.startswith("/v1"):
            concrete = path.replace("{job_id}", JOB_ID).replace("{delivery_id}", "0" * 24)
            concrete = concrete.replace("{name}", "breakdown.json")
            routes += [(method.upper(), concrete) for method in operations]
    assert len(routes) >= 15, routes  # jobs (7), events and breakdown runs (7), files (1), webhooks
    return routes


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "details"}, body
    assert body["error"]["code"] == code
    return body


pytestmark = sqlite_only


# --- authentication --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer frk_00000000_" + "A" * 43, "Basic dXNlcjpwYXNz", "Bearer not-a-key", "frk_x"],
)
def test_every_v1_route_answers_401_in_the_envelope_without_a_valid_key(
    api_server: ApiServer, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    with api_server.client(headers=headers) as client:
        for method, path in v1_routes(api_server):
            response = client.request(method, path, json=BODY if method == "POST" else None)
            assert_envelope(response, 401, "unauthorized")
            assert response.headers["WWW-Authenticate"] == "Bearer"


def test_a_revoked_key_is_refused_everywhere(api_server: ApiServer, api_key: str, engine: Engine) -> None:
    with api_server.client(api_key) as client:
        assert client.get("/v1/jobs").status_code == 200
        with write_scope(engine) as session:
            key = session.exec(repo.select(ApiKey).where(ApiKey.tenant_id == "acme")).one()
            repo.revoke_api_key(session, tenant_id="acme", key_id=key.id)
        for method, path in v1_routes(api_server):
            assert_envelope(client.request(method, path, json=BODY), 401, "unauthorized")


def test_health_and_docs_need_no_key(api_server: ApiServer) -> None:
    with api_server.client() as client:
        assert client.get("/healthz").json() == {"status": "ok", "database": "ok"}
        assert client.get("/openapi.json").status_code == 200
        assert client.get("/docs").status_code == 200


# --- the envelope ----------------------------------------------------------------------------------


def test_unknown_routes_and_methods_answer_in_the_envelope(api_client: httpx.Client) -> None:
    assert_envelope(api_client.get("/v2/jobs"), 404, "not_found")
    assert_envelope(api_client.get("/"), 404, "not_found")
    refused = api_client.delete("/v1/jobs")
    assert "DELETE" in assert_envelope(refused, 405, "bad_request")["error"]["details"]
    assert refused.headers["Allow"] == "GET, POST"  # both routes on the path, not just the first


def _boom() -> Any:
    raise RuntimeError("password=hunter2 at /srv/filmroom/secret.py line 7")


@pytest.mark.parametrize(
    ("dependency", "method", "path"),
    [(get_orchestrator, "POST", "/v1/jobs"), (get_artifacts, "GET", "/v1/jobs/{job_id}")],
)
def test_an_internal_error_is_a_500_envelope_without_a_traceback(
    api_server_factory: ApiServerFactory,
    api_key: str,
    footage_file: Path,
    caplog: pytest.LogCaptureFixture,
    dependency: Any,
    method: str,
    path: str,
) -> None:
    healthy = api_server_factory()
    with healthy.client(api_key) as client:
        job_id = client.post("/v1/jobs", json=BODY).json()["job_id"]

    def configure(app: FastAPI) -> None:
        app.dependency_overrides[dependency] = _boom

    broken = api_server_factory(configure=configure)
    with broken.client(api_key) as client:
        response = client.request(method, path.format(job_id=job_id), json=BODY)
    body = assert_envelope(response, 500, "internal_server_error")
    assert (
        "hunter2" not in response.text
        and "Traceback" not in response.text
        and "secret.py" not in response.text
    )
    assert body["error"]["details"] == "An internal error occurred."
    assert response.headers["X-RateLimit-Limit"] and response.headers["X-RateLimit-Remaining"]
    assert "hunter2" in caplog.text  # logged for operators, with its traceback


# --- rate limits -----------------------------------------------------------------------------------


def test_every_response_carries_rate_limit_headers_and_a_429_says_when_to_retry(
    api_server_factory: ApiServerFactory, api_settings: Settings, api_key: str, other_api_key: str
) -> None:
    server = api_server_factory(tweak_settings(api_settings, api={"rate_limit": "4/minute"}))
    with server.client(api_key) as client:
        answers = [
            client.get("/v1/jobs"),
            client.get("/nope"),
            client.get(f"/v1/jobs/{JOB_ID}"),
            client.get("/healthz"),
        ]
        assert [r.status_code for r in answers] == [200, 404, 404, 200]
        assert [r.headers["X-RateLimit-Limit"] for r in answers] == ["4"] * 4
        assert [r.headers["X-RateLimit-Remaining"] for r in answers] == ["3", "2", "1", "0"]
        refused = client.get("/v1/jobs")
        assert_envelope(refused, 429, "rate_limited")
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert refused.headers["X-RateLimit-Remaining"] == "0"
    with server.client(other_api_key) as other:  # limits are per key
        assert other.get("/v1/jobs").headers["X-RateLimit-Remaining"] == "3"
    with server.client() as anonymous:  # no key: counted per client address
        assert_envelope(anonymous.get("/v1/jobs"), 401, "unauthorized")


def test_submissions_have_a_stricter_limit_than_reads(
    api_server_factory: ApiServerFactory, api_settings: Settings, api_key: str
) -> None:
    limits = {"rate_limit": "50/minute", "submit_rate_limit": "2/minute"}
    settings = tweak_settings(api_settings, api=limits)
    server = api_server_factory(settings)
    with server.client(api_key) as client:
        submits = [client.post("/v1/jobs", json=BODY) for _ in range(3)]
        assert [r.status_code for r in submits] == [200, 200, 429]
        assert [r.headers["X-RateLimit-Limit"] for r in submits] == ["2", "2", "2"]
        assert "Retry-After" in submits[2].headers
        # starting a breakdown run is a submission too, counted in the same window
        start = client.post(f"/v1/events/{'0' * 24}/breakdown-runs", json={"mode": "ai"})
        assert start.status_code == 429 and start.headers["X-RateLimit-Limit"] == "2"
        read = client.get("/v1/jobs")
        assert read.status_code == 200 and read.headers["X-RateLimit-Limit"] == "50"


# --- OpenAPI ---------------------------------------------------------------------------------------


def test_openapi_documents_every_route_with_models_errors_and_bearer_auth(api_server: ApiServer) -> None:
    spec = httpx.get(f"{api_server.url}/openapi.json").json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "500" in responses and "429" in responses, (method, path)
            if path.startswith("/v1"):
                # a signed file link (fileUrl) is its own credential
                expected: list[dict[str, list[str]]] = (
                    [] if path.startswith("/v1/files/") else [{"HTTPBearer": []}]
                )
                assert operation["security"] == expected, (method, path)
                assert {"401", "422"} <= set(responses), (method, path)
                assert responses["401"]["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/ErrorEnvelope"
                }
    assert "HTTPValidationError" not in spec["components"]["schemas"]  # FastAPI's own 422 shape is not used


def test_rate_limits_use_redis_when_configured_and_let_requests_through_if_it_is_down(
    api_server_factory: ApiServerFactory, api_settings: Settings, api_key: str
) -> None:
    with socket.socket() as probe:  # a loopback port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = tweak_settings(api_settings, api={"redis_url": f"redis://127.0.0.1:{port}/0"})
    assert type(limits_storage(settings.api.redis_url)).__name__ == "RedisStorage"
    server = api_server_factory(settings)
    with server.client(api_key) as client:
        response = client.get("/v1/jobs")
    assert response.status_code == 200
    assert response.headers["X-RateLimit-Limit"] == response.headers["X-RateLimit-Remaining"] == "100000"
