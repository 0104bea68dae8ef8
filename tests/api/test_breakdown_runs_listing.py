"""The three documented reads of breakdown-runs-api.md: every parameter, its bounds and errors, tenant
isolation, sort orders, fileUrl, and pagination that stays correct while runs change.

Runs are put in place through ``storage.repo`` with fixed times (the flow's real boundary), so orders
and date windows are exact; requests go through the real app (TestClient) with a JWT.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from api.main import create_app
from infra.settings import Settings
from storage import repo
from storage.artifacts import ArtifactStore, RunRef
from storage.db import session_scope
from storage.models import EventKind, RunMode, RunStatus
from tests.fixtures.api import RecordingOrchestrator, ensure_tenant, mint_jwt, sqlite_only

S = RunStatus
T0 = datetime(2024, 1, 1, tzinfo=UTC)
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
RUN_FIELDS = {
    "_id",
    "eventId",
    "status",
    "fileUrl",
    "mode",
    "modified$date",
    "create$date",
    "tenant",
    "errors",
}
GROUP_FIELDS = {"latest", "runs", "eventId", "create$date", "modified$date", "modes"}
MISSING_ID = "0123456789abcdef01234567"

pytestmark = sqlite_only


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def iso(value: datetime) -> str:
    return repo.iso_utc(value)


@dataclass
class World:
    """acme: E1 (r1 ai file_ready, r2 manual queued), E2 (r3 ai failed), E3 (r4 ai queued), E4 (no run);
    globex: G1 (g1). Modified order E1 > E3 > E2, creation order E1 < E2 < E3."""

    ids: dict[str, str]
    store: ArtifactStore


def add_event(engine: Engine, tenant: str, created: datetime, title: str) -> str:
    with session_scope(engine) as session:
        event = repo.create_event(
            session,
            tenant_id=tenant,
            kind=EventKind.game,
            sport="soccer",
            title=title,
            sources=[{"angle": "main", "uri": "/footage/a.mp4"}],
        )
        event.created_at = event.modified_at = created
        return event.id


def add_run(engine: Engine, tenant: str, event_id: str, created: datetime, mode: RunMode = RunMode.ai) -> str:
    with session_scope(engine) as session:
        return repo.create_run(session, tenant_id=tenant, event_id=event_id, mode=mode, now=created).run.id


def move(engine: Engine, run_id: str, status: RunStatus, when: datetime, **kwargs: Any) -> None:
    with session_scope(engine) as session:
        repo.transition_run(session, run_id=run_id, status=status, now=when, **kwargs)


@pytest.fixture
def world(engine: Engine, api_settings: Settings) -> World:
    for tenant in ("acme", "globex"):
        ensure_tenant(engine, tenant)
    store = ArtifactStore.from_settings(api_settings)
    ids: dict[str, str] = {}
    ids["E1"] = add_event(engine, "acme", at(0), "One")
    ids["r1"] = add_run(engine, "acme", ids["E1"], at(1))
    move(engine, ids["r1"], S.processing, at(2))
    move(engine, ids["r1"], S.completed, at(8))
    ref = RunRef("acme", ids["E1"], ids["r1"])
    uri = store.write_json(ref, "breakdown", {"schema_version": 1})
    move(engine, ids["r1"], S.file_ready, at(10), file_uri=uri)
    ids["E2"] = add_event(engine, "acme", at(60), "Two")
    ids["r3"] = add_run(engine, "acme", ids["E2"], at(61))
    move(engine, ids["r3"], S.processing, at(62))
    move(
        engine, ids["r3"], S.failed, at(65), error_code="not_synchronized_camera_angles", error_message="off"
    )
    ids["E3"] = add_event(engine, "acme", at(120), "Three")
    ids["r4"] = add_run(engine, "acme", ids["E3"], at(121))
    ids["E4"] = add_event(engine, "acme", at(150), "Four (no run)")
    ids["r2"] = add_run(engine, "acme", ids["E1"], at(180), RunMode.manual)
    ids["G1"] = add_event(engine, "globex", at(30), "Globex")
    ids["g1"] = add_run(engine, "globex", ids["G1"], at(31))
    return World(ids, store)


@pytest.fixture
def client(engine: Engine, api_settings: Settings) -> Iterator[TestClient]:
    app = create_app(api_settings, orchestrator=RecordingOrchestrator())
    token = mint_jwt(api_settings, "acme")
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as test_client:
        yield test_client


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "details"}
    assert body["error"]["code"] == code, body
    return str(body["error"]["details"])


def names(world: World, items: list[dict[str, Any]], key: str = "eventId") -> list[str]:
    by_id = {value: name for name, value in world.ids.items()}
    return [by_id[item[key]] for item in items]


# --- GET /v1/events/breakdown-runs -----------------------------------------------------------------


def test_the_aggregated_listing_groups_runs_by_event_in_the_documented_shape(
    client: TestClient, world: World
) -> None:
    items = ok(client.get("/v1/events/breakdown-runs"))
    assert names(world, items) == ["E1", "E3", "E2"]  # default -modified$date; E4 has no run
    first = items[0]
    assert set(first) == GROUP_FIELDS
    assert first["create$date"] == iso(at(0)) and first["modified$date"] == iso(at(180))
    assert first["modes"] == ["ai", "manual"]
    assert names(world, first["runs"], "_id") == ["r2", "r1"]
    assert first["latest"] == first["runs"][0]  # r2: the most recently created
    for run in first["runs"]:
        assert set(run) == RUN_FIELDS
        assert ISO_MS.match(run["modified$date"]) and ISO_MS.match(run["create$date"])
        assert run["tenant"] == "acme" and run["eventId"] == world.ids["E1"]
    r1 = first["runs"][1]
    assert (r1["status"], r1["mode"], r1["errors"]) == ("file_ready", "ai", [])
    assert (
        r1["create$date"] == "2024-01-01T00:01:00.000Z" and r1["modified$date"] == "2024-01-01T00:10:00.000Z"
    )
    assert r1["fileUrl"].startswith(f"{client.app.state.settings.api.public_url}/v1/files/")  # type: ignore[attr-defined]
    failed = items[2]["latest"]
    assert failed["status"] == "failed" and failed["fileUrl"] is None
    assert failed["errors"] == [{"message": "off", "code": "not_synchronized_camera_angles"}]


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("-modified$date", ["E1", "E3", "E2"]),
        ("modified$date", ["E2", "E3", "E1"]),
        ("-create$date", ["E3", "E2", "E1"]),
        ("create$date", ["E1", "E2", "E3"]),
    ],
)
def test_every_allowed_sort_orders_the_events(
    client: TestClient, world: World, sort: str, expected: list[str]
) -> None:
    items = ok(client.get("/v1/events/breakdown-runs", params={"sort": sort}))
    assert names(world, items) == expected
    e1 = next(item for item in items if item["eventId"] == world.ids["E1"])
    runs = names(world, e1["runs"], "_id")
    assert runs == (["r1", "r2"] if not sort.startswith("-") else ["r2", "r1"])


@pytest.mark.parametrize("sort", ["modified", "date", "-modified_date", "+create$date", "", "MODIFIED$DATE"])
def test_a_sort_outside_the_four_values_is_refused(client: TestClient, world: World, sort: str) -> None:
    error(client.get("/v1/events/breakdown-runs", params={"sort": sort}), 422, "validation_error")


def test_limit_and_skip_page_through_the_events(client: TestClient, world: World) -> None:
    url = "/v1/events/breakdown-runs"
    assert names(world, ok(client.get(url, params={"limit": 1}))) == ["E1"]
    assert names(world, ok(client.get(url, params={"limit": 1, "skip": 1}))) == ["E3"]
    assert names(world, ok(client.get(url, params={"limit": 2, "skip": 1}))) == ["E3", "E2"]
    assert ok(client.get(url, params={"skip": 3})) == []
    assert ok(client.get(url, params={"skip": 0, "limit": 1000})) != []


def test_limit_defaults_to_ten(client: TestClient, engine: Engine, world: World) -> None:
    for index in range(12):
        event_id = add_event(engine, "acme", at(300 + index), f"Extra {index}")
        add_run(engine, "acme", event_id, at(300 + index))
    assert len(ok(client.get("/v1/events/breakdown-runs"))) == 10
    assert len(ok(client.get("/v1/events/breakdown-runs", params={"limit": 11}))) == 11


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": -1},
        {"limit": 1001},
        {"limit": "ten"},
        {"skip": -1},
        {"skip": "x"},
        {"limit": 1.5},
    ],
)
def test_limit_and_skip_out_of_bounds_are_refused(
    client: TestClient, world: World, params: dict[str, Any]
) -> None:
    error(client.get("/v1/events/breakdown-runs", params=params), 422, "validation_error")


def test_mode_filters_runs_and_modes_stay_those_of_the_event(client: TestClient, world: World) -> None:
    manual = ok(client.get("/v1/events/breakdown-runs", params={"mode": "manual"}))
    assert names(world, manual) == ["E1"]
    assert names(world, manual[0]["runs"], "_id") == ["r2"] and manual[0]["modes"] == ["ai", "manual"]
    ai = ok(client.get("/v1/events/breakdown-runs", params={"mode": "ai"}))
    assert names(world, ai) == ["E1", "E3", "E2"]
    assert names(world, ai[0]["runs"], "_id") == ["r1"] and ai[0]["latest"]["_id"] == world.ids["r1"]
    error(client.get("/v1/events/breakdown-runs", params={"mode": "auto"}), 422, "validation_error")


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("queued", ["E1", "E3"]),
        ("processing", []),
        ("completed", []),
        ("failed", ["E2"]),
        ("file_ready", ["E1"]),
        ("file_failed", []),
    ],
)
def test_status_filters_by_each_of_the_six_statuses(
    client: TestClient, world: World, status: str, expected: list[str]
) -> None:
    items = ok(client.get("/v1/events/breakdown-runs", params={"status": status}))
    assert names(world, items) == expected
    assert all(run["status"] == status for item in items for run in item["runs"])


def test_an_unknown_status_is_refused(client: TestClient, world: World) -> None:
    error(client.get("/v1/events/breakdown-runs", params={"status": "done"}), 422, "validation_error")


def test_event_id_filters_to_one_event_and_must_be_an_object_id(client: TestClient, world: World) -> None:
    url = "/v1/events/breakdown-runs"
    assert names(world, ok(client.get(url, params={"eventId": world.ids["E2"]}))) == ["E2"]
    assert names(world, ok(client.get(url, params={"eventId": world.ids["E2"].upper()}))) == ["E2"]
    assert ok(client.get(url, params={"eventId": MISSING_ID})) == []
    assert ok(client.get(url, params={"eventId": world.ids["G1"]})) == []  # another tenant's
    assert ok(client.get(url, params={"eventId": world.ids["E4"]})) == []  # no run
    for bad in ("123", "zz3456789abcdef012345678", world.ids["E2"] + "0"):
        assert "ObjectId" in error(client.get(url, params={"eventId": bad}), 400, "bad_request")


def test_start_and_end_date_bound_modified_date_inclusively(client: TestClient, world: World) -> None:
    url = "/v1/events/breakdown-runs"
    window = {"startDate": iso(at(65)), "endDate": iso(at(121))}  # E2 modified at 65, E3 at 121
    assert names(world, ok(client.get(url, params=window))) == ["E3", "E2"]
    assert names(world, ok(client.get(url, params={"startDate": iso(at(66)), "endDate": iso(at(200))}))) == [
        "E1",
        "E3",
    ]
    naive = {"startDate": "2024-01-01T01:05:00", "endDate": "2024-01-01T01:05:00"}  # no offset: UTC
    assert names(world, ok(client.get(url, params=naive))) == ["E2"]
    offset = {"startDate": "2024-01-01T03:05:00+02:00", "endDate": "2024-01-01T03:05:00.000+02:00"}
    assert names(world, ok(client.get(url, params=offset))) == ["E2"]
    assert ok(client.get(url, params={"startDate": iso(at(1000)), "endDate": iso(at(2000))})) == []


@pytest.mark.parametrize(
    "params",
    [
        {"startDate": "2024-01-01T00:00:00.000Z"},
        {"endDate": "2024-01-01T00:00:00.000Z"},
        {"startDate": "2024-01-02T00:00:00.000Z", "endDate": "2024-01-01T00:00:00.000Z"},
    ],
)
def test_one_date_without_the_other_or_a_reversed_range_is_a_400(
    client: TestClient, world: World, params: dict[str, str]
) -> None:
    error(client.get("/v1/events/breakdown-runs", params=params), 400, "bad_request")


def test_a_malformed_date_is_refused(client: TestClient, world: World) -> None:
    params = {"startDate": "yesterday", "endDate": "2024-01-01T00:00:00.000Z"}
    error(client.get("/v1/events/breakdown-runs", params=params), 422, "validation_error")


def test_filters_combine(client: TestClient, world: World) -> None:
    params = {"mode": "ai", "status": "queued", "sort": "create$date", "limit": 5, "skip": 0}
    assert names(world, ok(client.get("/v1/events/breakdown-runs", params=params))) == ["E3"]


# --- GET /v1/events/{id}/breakdown-runs ------------------------------------------------------------


def test_an_events_runs_with_every_parameter(client: TestClient, world: World) -> None:
    url = f"/v1/events/{world.ids['E1']}/breakdown-runs"
    runs = ok(client.get(url))
    assert names(world, runs, "_id") == ["r2", "r1"] and all(set(run) == RUN_FIELDS for run in runs)
    assert names(world, ok(client.get(url, params={"sort": "create$date"})), "_id") == ["r1", "r2"]
    assert names(world, ok(client.get(url, params={"sort": "modified$date"})), "_id") == ["r1", "r2"]
    assert names(world, ok(client.get(url, params={"sort": "-create$date"})), "_id") == ["r2", "r1"]
    assert names(world, ok(client.get(url, params={"mode": "ai"})), "_id") == ["r1"]
    assert names(world, ok(client.get(url, params={"mode": "manual"})), "_id") == ["r2"]
    assert names(world, ok(client.get(url, params={"status": "file_ready"})), "_id") == ["r1"]
    assert ok(client.get(url, params={"status": "failed"})) == []
    assert names(world, ok(client.get(url, params={"limit": 1, "skip": 1})), "_id") == ["r1"]
    assert ok(client.get(url, params={"skip": 2})) == []
    for params in ({"limit": 0}, {"skip": -1}, {"sort": "id"}, {"mode": "x"}, {"status": "done"}):
        error(client.get(url, params=params), 422, "validation_error")
    assert ok(client.get(f"/v1/events/{world.ids['E4']}/breakdown-runs")) == []


def test_an_unknown_event_is_404_and_a_malformed_one_400(client: TestClient, world: World) -> None:
    error(client.get(f"/v1/events/{MISSING_ID}/breakdown-runs"), 404, "not_found")
    error(client.get(f"/v1/events/{world.ids['G1']}/breakdown-runs"), 404, "not_found")  # globex's
    error(client.get("/v1/events/not-an-id/breakdown-runs"), 400, "bad_request")


# --- GET /v1/events/{eventId}/breakdown-runs/{id} --------------------------------------------------


def test_one_run_is_returned_exactly_as_documented(client: TestClient, world: World) -> None:
    body = ok(client.get(f"/v1/events/{world.ids['E2']}/breakdown-runs/{world.ids['r3']}"))
    assert body == {
        "_id": world.ids["r3"],
        "eventId": world.ids["E2"],
        "status": "failed",
        "fileUrl": None,
        "mode": "ai",
        "modified$date": "2024-01-01T01:05:00.000Z",
        "create$date": "2024-01-01T01:01:00.000Z",
        "tenant": "acme",
        "errors": [{"message": "off", "code": "not_synchronized_camera_angles"}],
    }
    queued = ok(client.get(f"/v1/events/{world.ids['E3']}/breakdown-runs/{world.ids['r4']}"))
    assert queued["status"] == "queued" and queued["fileUrl"] is None and queued["errors"] == []


def test_codes_outside_the_documents_nine_read_as_the_nearest_one(
    client: TestClient, engine: Engine, world: World
) -> None:
    run = add_run(engine, "acme", world.ids["E3"], at(200))
    move(engine, run, S.failed, at(201), error_code="video_too_long", error_message="3 h > 2 h")
    body = ok(client.get(f"/v1/events/{world.ids['E3']}/breakdown-runs/{run}"))
    assert body["errors"] == [{"code": "wrong_video", "message": "video_too_long: 3 h > 2 h"}]


def test_a_run_is_found_only_under_its_own_event_and_tenant(client: TestClient, world: World) -> None:
    ids = world.ids
    error(client.get(f"/v1/events/{ids['E1']}/breakdown-runs/{ids['r3']}"), 404, "not_found")
    error(client.get(f"/v1/events/{ids['E1']}/breakdown-runs/{MISSING_ID}"), 404, "not_found")
    error(client.get(f"/v1/events/{ids['G1']}/breakdown-runs/{ids['g1']}"), 404, "not_found")
    error(client.get(f"/v1/events/{ids['E1']}/breakdown-runs/xyz"), 400, "bad_request")
    error(client.get(f"/v1/events/E1/breakdown-runs/{ids['r1']}"), 400, "bad_request")


def test_tenant_b_sees_only_its_own_runs(client: TestClient, world: World, api_settings: Settings) -> None:
    other = {"Authorization": f"Bearer {mint_jwt(api_settings, 'globex')}"}
    items = ok(client.get("/v1/events/breakdown-runs", headers=other))
    assert names(world, items) == ["G1"] and items[0]["latest"]["tenant"] == "globex"
    error(client.get(f"/v1/events/{world.ids['E1']}/breakdown-runs", headers=other), 404, "not_found")
    error(
        client.get(f"/v1/events/{world.ids['E1']}/breakdown-runs/{world.ids['r1']}", headers=other),
        404,
        "not_found",
    )


def test_file_url_goes_null_when_the_file_is_gone(client: TestClient, world: World) -> None:
    url = f"/v1/events/{world.ids['E1']}/breakdown-runs/{world.ids['r1']}"
    assert ok(client.get(url))["fileUrl"] is not None
    world.store.delete_run(RunRef("acme", world.ids["E1"], world.ids["r1"]))
    assert ok(client.get(url))["fileUrl"] is None


# --- pagination while runs change ------------------------------------------------------------------


def many_runs(engine: Engine, count: int, *, same_time: bool = False) -> tuple[str, list[str]]:
    ensure_tenant(engine, "acme")
    event_id = add_event(engine, "acme", at(0), "Many")
    return event_id, [add_run(engine, "acme", event_id, at(0 if same_time else 1 + i)) for i in range(count)]


def pages(client: TestClient, url: str, params: dict[str, Any], between: Any = None) -> list[list[str]]:
    """Follow ``X-Next-Cursor`` to the end, calling ``between(page_number)`` after each page."""
    seen, cursor = [], None
    while True:
        response = client.get(url, params={**params, **({"cursor": cursor} if cursor else {})})
        ids = [item.get("_id", item.get("eventId")) for item in ok(response)]
        seen.append(ids)
        cursor = response.headers.get("X-Next-Cursor")
        if cursor is None:
            return seen
        assert response.headers["Link"].endswith('rel="next"') and "cursor=" in response.headers["Link"]
        if between is not None:
            between(len(seen))


def test_skip_pages_are_disjoint_and_complete_when_runs_share_a_timestamp(
    client: TestClient, engine: Engine
) -> None:
    event_id, runs = many_runs(engine, 23, same_time=True)
    url = f"/v1/events/{event_id}/breakdown-runs"
    for sort in ("-modified$date", "create$date"):
        seen = [
            r["_id"]
            for skip in range(0, 30, 5)
            for r in ok(client.get(url, params={"sort": sort, "limit": 5, "skip": skip}))
        ]
        assert sorted(seen) == sorted(runs) and len(seen) == len(set(seen))
        assert seen == sorted(runs, reverse=sort.startswith("-"))  # ties broken by _id


def test_cursor_pages_return_every_unchanged_run_once_while_runs_change(
    client: TestClient, engine: Engine
) -> None:
    event_id, runs = many_runs(engine, 25)
    url = f"/v1/events/{event_id}/breakdown-runs"
    newest_first = list(reversed(runs))  # -modified$date: run 24 first
    moved: list[str] = []

    def change(page: int) -> None:
        if page == 1:  # one run already seen and one not yet seen change status: both move to the front
            for run_id in (newest_first[3], newest_first[17]):
                move(engine, run_id, S.processing, at(500 + len(moved)))
                moved.append(run_id)

    got = pages(client, url, {"limit": 10}, change)
    flat = [run_id for page in got for run_id in page]
    assert len(flat) == len(set(flat))  # nothing repeated
    unchanged = [run_id for run_id in runs if run_id not in moved]
    assert set(unchanged) <= set(flat)  # nothing unchanged missed
    assert newest_first[17] not in flat  # moved ahead of the cursor: seen on the next poll
    # what plain skip paging would have done after the same change: repeat page 1's last run
    skipped = ok(client.get(url, params={"limit": 10, "skip": 10}))
    assert skipped[0]["_id"] in got[0]


def test_cursor_pages_over_creation_are_exact_while_runs_are_added(
    client: TestClient, engine: Engine
) -> None:
    event_id, runs = many_runs(engine, 12)
    url = f"/v1/events/{event_id}/breakdown-runs"
    added: list[str] = []

    def add(page: int) -> None:
        added.append(add_run(engine, "acme", event_id, at(900 + page)))

    got = pages(client, url, {"limit": 5, "sort": "-create$date"}, add)
    flat = [run_id for page in got for run_id in page]
    assert flat == list(reversed(runs))  # the runs added meanwhile are newer than the cursor


def test_the_aggregated_listing_pages_by_cursor_too(client: TestClient, engine: Engine, world: World) -> None:
    got = pages(client, "/v1/events/breakdown-runs", {"limit": 2})
    assert [names(world, [{"eventId": e} for e in page]) for page in got] == [["E1", "E3"], ["E2"]]


def test_a_foreign_or_mangled_cursor_is_a_400(client: TestClient, world: World) -> None:
    response = client.get("/v1/events/breakdown-runs", params={"limit": 1})
    cursor = response.headers["X-Next-Cursor"]
    error(
        client.get("/v1/events/breakdown-runs", params={"cursor": cursor, "sort": "create$date"}),
        400,
        "bad_request",
    )
    for bad in ("nope", cursor[:-3], "e30"):
        error(client.get("/v1/events/breakdown-runs", params={"cursor": bad}), 400, "bad_request")
