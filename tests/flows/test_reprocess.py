"""The nightly reprocessing flow, run against a real Prefect server with real run rows.

The re-runs are handed to a deployment of the real run flow that nobody serves (so they stay
scheduled); the test reads them back from Prefect and deletes them at the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.reprocess import Versions, current_versions, reprocess_flow, reprocess_reason
from flows.status import hand_over_stranded
from infra.settings import get_settings
from storage.db import init_db, session_scope
from storage.models import EventKind, JobType, Run, RunMode, RunStatus, Tenant
from storage.repo import create_event, create_run, create_tenant, get_run_by_id, list_runs, transition_run

S = RunStatus
DEPLOYMENT = "filmroom-run/reprocess-test"  # the real run flow; no process serves this deployment
PATHS = {
    S.file_ready: [S.processing, S.completed, S.file_ready],
    S.failed: [S.processing, S.failed],
    S.file_failed: [S.processing, S.completed, S.file_failed],
    S.processing: [S.processing],
}


@pytest.fixture
def reprocess_env(
    settings_env: Path, monkeypatch: pytest.MonkeyPatch, prefect_server: str
) -> Iterator[Versions]:
    monkeypatch.setenv("FILMROOM_PREFECT__RUN_DEPLOYMENT", DEPLOYMENT)
    get_settings.cache_clear()
    init_db()
    from flows.run import run_flow

    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        run_flow.to_deployment(name=DEPLOYMENT.split("/")[1]).apply()  # type: ignore[union-attr]
        yield current_versions()
        asyncio.run(_delete_flow_runs())


async def _delete_flow_runs() -> None:
    async with get_client() as client:
        for flow_run in await _flow_runs_of_deployment(client):
            await client.delete_flow_run(flow_run.id)


async def _flow_runs_of_deployment(client: Any) -> list[FlowRun]:
    deployment = await client.read_deployment_by_name(DEPLOYMENT)
    runs: list[FlowRun] = await client.read_flow_runs()
    return [r for r in runs if r.deployment_id == deployment.id]


def _event_with_runs(*runs: tuple[RunStatus, dict[str, Any]], mode: RunMode = RunMode.ai) -> str:
    """An event whose runs (oldest first, of ``mode``) reached each status with the given fields; its id."""
    with session_scope() as session:
        if session.get(Tenant, "acme") is None:
            create_tenant(session, tenant_id="acme", name="Acme")
        event = create_event(
            session,
            tenant_id="acme",
            kind=EventKind.game,
            sport="soccer",
            title="Derby",
            sources=[{"angle": "main", "uri": "/footage/derby.mp4"}],
        )
        for status, fields in runs:
            run, _ = create_run(
                session,
                tenant_id="acme",
                event_id=event.id,
                mode=mode,
                job_type=JobType.breakdown,
                params={"chunk_seconds": 12},
            )
            versions = {k: fields[k] for k in ("model_version", "code_version") if k in fields}
            for step in PATHS[status]:
                extra = {"error_code": fields["code"]} if step == status and "code" in fields else {}
                transition_run(
                    session, run_id=run.id, status=step, **(versions if step == S.processing else {}), **extra
                )
        return event.id


def _current(v: Versions) -> dict[str, Any]:
    return {"model_version": v.model, "code_version": v.code}


def _runs_of(event_id: str) -> list[Run]:
    with session_scope() as session:
        return list_runs(session, tenant_id="acme", event_ids=[event_id], order_by="created_at")


def _artifact_markdown() -> str:
    async def read() -> str:
        async with get_client() as client:
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["filmroom-reprocess"])),
                limit=1,
                sort="CREATED_DESC",  # type: ignore[arg-type]
            )
        return str(artifacts[0].data)

    return asyncio.run(read())


def test_outdated_and_retryably_failed_events_are_rerun_through_the_run_deployment(
    reprocess_env: Versions,
) -> None:
    now = _current(reprocess_env)
    up_to_date = _event_with_runs((S.file_ready, now))
    old_code = _event_with_runs((S.file_ready, {**now, "code_version": "0.0.1"}))
    old_model = _event_with_runs((S.file_ready, {**now, "model_version": "yolo11n.pt@0123456789ab"}))
    unrecorded = _event_with_runs((S.file_ready, {}))
    flaky = _event_with_runs((S.file_ready, now), (S.failed, {**now, "code": "technical_issues"}))
    export_failed = _event_with_runs((S.file_failed, {**now, "code": "internal_server_error"}))
    broken_video = _event_with_runs((S.failed, {**now, "code": "incomplete_video"}))
    cancelled = _event_with_runs((S.failed, {**now, "code": "cancelled"}))
    hopeless = _event_with_runs(*[(S.failed, {**now, "code": "technical_issues"})] * 3)
    busy = _event_with_runs((S.failed, {**now, "code": "technical_issues"}), (S.processing, now))
    uploaded = _event_with_runs((S.file_ready, {}), mode=RunMode.manual)  # an analyst's file: no model

    result = reprocess_flow(batch_size=20)

    rerun_events = [r["candidate"]["event_id"] for r in result]
    assert rerun_events == [old_code, old_model, unrecorded, flaky, export_failed]  # oldest first
    for event_id in (up_to_date, broken_video, cancelled, hopeless, busy, uploaded):
        assert event_id not in rerun_events
        assert len(_runs_of(event_id)) in (1, 2, 3)  # nothing added
    assert len(_runs_of(hopeless)) == 3 and len(_runs_of(busy)) == 2 and len(_runs_of(up_to_date)) == 1

    async def flow_runs() -> dict[str, FlowRun]:
        async with get_client() as client:
            return {str(r.id): r for r in await _flow_runs_of_deployment(client)}

    prefect_runs = asyncio.run(flow_runs())
    assert len(prefect_runs) == len(result)
    for rerun in result:
        previous, new = _runs_of(rerun["candidate"]["event_id"])[-2:]
        assert previous.id == rerun["candidate"]["previous_run_id"]
        assert new.id == rerun["run_id"] and new.status == S.queued
        assert (new.mode, new.job_type, new.params) == (previous.mode, previous.job_type, previous.params)
        assert new.flow_run_id == rerun["flow_run_id"]
        flow_run = prefect_runs[str(UUID(new.flow_run_id or ""))]
        assert flow_run.parameters == {"run_id": new.id}
        assert flow_run.idempotency_key == new.id
        assert flow_run.name == f"derby-{new.id}"
        assert {"reprocess", "tenant:acme", "kind:game", "mode:ai"} <= set(flow_run.tags)
        assert flow_run.state is not None and flow_run.state.is_scheduled()
    reasons = {r["candidate"]["event_id"]: r["candidate"]["reason"] for r in result}
    assert reasons[old_code] == f"code 0.0.1 -> {reprocess_env.code}"
    assert reasons[old_model].startswith("model yolo11n.pt@0123456789ab -> ")
    assert reasons[flaky] == "failed with technical_issues (retryable)"

    markdown = _artifact_markdown()
    assert markdown.startswith("# Re-ran 5 runs")
    assert all(r["run_id"] in markdown and r["flow_run_id"] in markdown for r in result)
    assert "1 events were left alone" in markdown

    # the events' newest runs are now queued: a second pass finds nothing to do
    assert reprocess_flow(batch_size=20) == []
    assert len(asyncio.run(flow_runs())) == len(result)


def test_a_dry_run_lists_the_candidates_and_changes_nothing(reprocess_env: Versions) -> None:
    events = [
        _event_with_runs((S.failed, {**_current(reprocess_env), "code": "technical_issues"}))
        for _ in range(3)
    ]

    result = reprocess_flow(batch_size=2, dry_run=True)

    assert [r["candidate"]["event_id"] for r in result] == events[:2]  # bounded, oldest first
    assert all(r["run_id"] is None for r in result)
    assert all(len(_runs_of(e)) == 1 for e in events)
    markdown = _artifact_markdown()
    assert markdown.startswith("# Would re-run 2 runs")
    assert events[0] in markdown and events[2] not in markdown


def test_a_run_prefect_refuses_stays_queued_until_the_reconciler_hands_it_over(
    reprocess_env: Versions, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = [_event_with_runs((S.file_ready, {})) for _ in range(2)]
    monkeypatch.setenv("FILMROOM_PREFECT__RUN_DEPLOYMENT", "filmroom-run/no-such-deployment")
    get_settings.cache_clear()

    result = reprocess_flow(batch_size=5)

    assert [r["candidate"]["event_id"] for r in result] == events
    for rerun in result:
        assert rerun["flow_run_id"] is None and rerun["error"]
        with session_scope() as session:
            new = get_run_by_id(session, run_id=rerun["run_id"])
        assert new is not None and (new.status, new.flow_run_id) == (S.queued, None)
    assert "not yet submitted" in _artifact_markdown()
    # the event is busy now: the next pass leaves it to the reconciler, which hands the run over
    assert reprocess_flow(batch_size=5) == []
    outcome = hand_over_stranded(DEPLOYMENT, timedelta(0))
    assert outcome == {r["run_id"]: "handed_over" for r in result}
    for rerun in result:
        with session_scope() as session:
            new = get_run_by_id(session, run_id=rerun["run_id"])
        assert new is not None and new.flow_run_id is not None


@pytest.mark.parametrize(
    ("status", "fields", "why"),
    [
        (S.file_ready, {"code_version": "9", "model_version": "m"}, None),
        (S.file_ready, {"code_version": "8", "model_version": "m"}, "code 8 -> 9"),
        (S.file_ready, {"code_version": "9", "model_version": None}, "model unrecorded -> m"),
        (S.failed, {"errors": [{"code": "technical_issues"}]}, "failed with technical_issues (retryable)"),
        (S.failed, {"errors": [{"code": "wrong_video"}]}, None),
        (S.failed, {"errors": [{"code": "no-such-code"}]}, None),
        (S.failed, {"errors": []}, None),
        (S.completed, {"code_version": "8"}, None),
        (S.file_ready, {"code_version": "8", "mode": RunMode.manual}, None),
        (S.failed, {"errors": [{"code": "technical_issues"}], "mode": RunMode.manual}, None),
    ],
)
def test_reprocess_reason(status: RunStatus, fields: dict[str, Any], why: str | None) -> None:
    run = Run(tenant_id="t", event_id="e", status=status, **fields)
    assert reprocess_reason(run, Versions(code="9", model="m")) == why
