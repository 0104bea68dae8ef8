"""The reconciler settles runs whose flow died without reporting (a hard kill fires no hook)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Cancelled, Crashed, Running

from flows.status import reconcile_once
from storage.db import init_db, session_scope
from storage.models import EventKind, JobType, RunStatus, Tenant
from storage.repo import create_event, create_run, create_tenant, get_run_by_id, transition_run


@flow(name="reconciler-probe")
def _probe() -> None:
    """Only its flow runs are used: created through the API, never executed."""


def _processing_run(flow_run_id: str) -> str:
    with session_scope() as session:
        if session.get(Tenant, "acme") is None:
            create_tenant(session, tenant_id="acme", name="Acme")
        event = create_event(
            session,
            tenant_id="acme",
            kind=EventKind.game,
            sport="soccer",
            title="t",
            sources=[{"angle": "main", "uri": "/x.mp4"}],
        )
        run, _ = create_run(session, tenant_id="acme", event_id=event.id, job_type=JobType.breakdown)
        transition_run(session, run_id=run.id, status=RunStatus.processing, flow_run_id=flow_run_id)
        return run.id


async def _flow_run(state: object) -> str:
    async with get_client() as client:
        created = await client.create_flow_run(_probe, state=Running())
        await client.set_flow_run_state(created.id, state, force=True)  # type: ignore[arg-type]
        return str(created.id)


async def _reconcile(stale_after: timedelta) -> dict[str, str]:
    async with get_client() as client:
        return await reconcile_once(client, stale_after)


@pytest.mark.parametrize(
    ("state", "code"),
    [(Crashed(), "technical_issues"), (Cancelled(), "cancelled")],
    ids=["crashed", "cancelled"],
)
def test_a_run_whose_flow_ended_without_reporting_is_settled_with_a_code(
    settings_env: Path, prefect_server: str, state: object, code: str
) -> None:
    init_db()
    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        run_id = _processing_run(asyncio.run(_flow_run(state)))
        outcome = asyncio.run(_reconcile(timedelta(minutes=10)))
    assert outcome[run_id] in ("failed", "cancelled")
    with session_scope() as session:
        run = get_run_by_id(session, run_id=run_id)
    assert run is not None and run.status == RunStatus.failed
    assert run.errors[-1]["code"] == code


def test_a_running_flow_that_stopped_beating_is_settled_and_a_live_one_is_left_alone(
    settings_env: Path, prefect_server: str
) -> None:
    init_db()
    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        run_id = _processing_run(asyncio.run(_flow_run(Running())))
        assert asyncio.run(_reconcile(timedelta(minutes=10)))[run_id] == "ok"
        assert asyncio.run(_reconcile(timedelta(seconds=0)))[run_id] == "stale"
    with session_scope() as session:
        run = get_run_by_id(session, run_id=run_id)
    assert run is not None and run.status == RunStatus.failed
    assert run.errors[-1]["code"] == "technical_issues"
