"""The reconciler settles runs whose flow died without reporting (a hard kill fires no hook)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import pytest
import sqlalchemy as sa
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Cancelled, Crashed, Pending, Running, Scheduled
from sqlmodel import Session, col

from flows.status import reconcile_once
from storage.db import init_db, session_scope
from storage.models import Event, EventKind, JobType, Run, RunMode, RunStatus, Tenant, utc_now
from storage.repo import create_event, create_run, create_tenant, get_run_by_id, transition_run


@flow(name="reconciler-probe")
def _probe() -> None:
    """Only its flow runs are used: created through the API, never executed."""


def _event(session: Session, title: str) -> Event:
    """An event of tenant ``acme`` (created on first use)."""
    if session.get(Tenant, "acme") is None:
        create_tenant(session, tenant_id="acme", name="Acme")
    return create_event(
        session,
        tenant_id="acme",
        kind=EventKind.game,
        sport="soccer",
        title=title,
        sources=[{"angle": "main", "uri": "/x.mp4"}],
    )


def _processing_run(flow_run_id: str) -> str:
    with session_scope() as session:
        event = _event(session, "t")
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


def test_a_queued_run_prefect_refused_is_handed_over_again_once(
    settings_env: Path, prefect_server: str
) -> None:
    from flows.run import run_flow
    from flows.status import hand_over_stranded
    from flows.submit import submit_run

    init_db()
    with session_scope() as session:
        event = _event(session, "stranded")
        stranded = create_run(session, tenant_id="acme", event_id=event.id).run.id
        manual = create_run(session, tenant_id="acme", event_id=event.id, mode=RunMode.manual).run.id
    calls: list[str] = []

    def refusing(*args: object, **kwargs: object) -> str:
        calls.append("refused")
        raise ConnectionError("Prefect answered 503")

    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        run_flow.to_deployment(name="stranded-test").apply()  # type: ignore[union-attr]
        deployment = "filmroom-run/stranded-test"
        assert hand_over_stranded(deployment, timedelta(minutes=5)) == {}  # too young to be stranded
        assert hand_over_stranded(deployment, timedelta(0), submit=refusing) == {stranded: "still_queued"}
        assert hand_over_stranded(deployment, timedelta(0)) == {stranded: "handed_over"}
        assert hand_over_stranded(deployment, timedelta(0)) == {}  # it has its flow run now
        with session_scope() as session:
            run = get_run_by_id(session, run_id=stranded)
            assert run is not None and run.flow_run_id and run.status == RunStatus.queued
            manual_run = get_run_by_id(session, run_id=manual)
            assert manual_run is not None and manual_run.flow_run_id is None  # waits for its upload
            event_row = session.get(Event, event.id)
        # the run's id is Prefect's idempotency key: a late hand-over by the API finds the same flow run
        assert event_row is not None
        assert submit_run(run, event_row, deployment=deployment) == run.flow_run_id

        async def read() -> object:
            async with get_client() as client:
                return await client.read_flow_run(UUID(run.flow_run_id))

        flow_run = asyncio.run(read())
    assert flow_run.parameters == {"run_id": stranded}  # type: ignore[attr-defined]
    assert calls == ["refused"]


def test_a_run_waiting_in_a_long_backlog_is_left_queued(settings_env: Path, prefect_server: str) -> None:
    # A burst queues more runs than the workers take at once; their flow runs stay Scheduled for
    # longer than stale_after. The reconciler once failed them all with technical_issues.
    init_db()
    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):

        async def scheduled() -> str:
            async with get_client() as client:
                return str((await client.create_flow_run(_probe, state=Scheduled())).id)

        with session_scope() as session:
            event = _event(session, "backlog")
            run_id = create_run(session, tenant_id="acme", event_id=event.id).run.id
        from flows.status import attach_flow_run

        flow_run_id = asyncio.run(scheduled())
        attach_flow_run(run_id, flow_run_id)
        assert asyncio.run(_reconcile(timedelta(seconds=0)))[run_id] == "waiting"

        # an hour in the queue, then a worker takes the flow run (PENDING): alive, not stale
        with session_scope() as session:
            session.exec(
                sa.update(Run).where(col(Run.id) == run_id).values(updated_at=utc_now() - timedelta(hours=1))
            )

        async def take() -> None:
            async with get_client() as client:
                await client.set_flow_run_state(UUID(flow_run_id), Pending(), force=True)

        asyncio.run(take())
        assert asyncio.run(_reconcile(timedelta(minutes=10)))[run_id] == "ok"
    with session_scope() as session:
        run = get_run_by_id(session, run_id=run_id)
    assert run is not None and run.status == RunStatus.queued and run.errors == []
