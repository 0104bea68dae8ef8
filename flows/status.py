"""How a run's status follows its flow: written by the flow at stage boundaries and by its state hooks,
and settled by the reconciler when a flow died without a word.

filmroom's database is the system of record (the API never asks Prefect); Prefect's flow-run *state
types* (not names, which change between releases) are only read to settle runs nobody reported on.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from prefect.client.schemas.objects import StateType
from prefect.states import Crashed
from sqlmodel import col, select

from infra import errors
from storage.db import session_scope, write_scope
from storage.models import Event, Run, RunMode, RunStatus, to_stored_utc, utc_now
from storage.repo import (
    get_run_by_id,
    list_active_runs,
    transition_run,
    update_run_progress,
)

S = RunStatus
logger = logging.getLogger("filmroom.flows.status")

FINISHED = {S.failed, S.file_ready, S.file_failed}


def code_for(exc: BaseException | None) -> tuple[str, str]:
    """The registry code and message a failure is recorded with."""
    if isinstance(exc, errors.FilmroomError):
        return exc.code, exc.details
    if exc is None:
        return errors.TechnicalIssues.code, errors.TechnicalIssues.message
    # Never store raw exception text for clients: it may hold paths or internals.
    return errors.InternalServerError.code, f"{errors.InternalServerError.message} ({type(exc).__name__})"


def mark(run_id: str, status: RunStatus, *, error: BaseException | None = None, **fields: Any) -> None:
    """Move the run to ``status`` (idempotent); failures record their registry code."""
    with write_scope() as session:
        run = get_run_by_id(session, run_id=run_id)
        if run is None or (RunStatus(run.status) in FINISHED and status != S.queued):
            return
        if status in (S.failed, S.file_failed):
            code, message = code_for(error)
            transition_run(
                session, run_id=run_id, status=status, error_code=code, error_message=message, **fields
            )
        else:
            transition_run(session, run_id=run_id, status=status, **fields)


def progress(run_id: str, stage: str, fraction: float, eta: datetime | None) -> None:
    with write_scope() as session:
        update_run_progress(session, run_id=run_id, stage=stage, fraction=fraction, eta=eta)


def settle(
    run_id: str, state_type: StateType | None, heartbeat_age: timedelta | None, stale_after: timedelta
) -> str:
    """Decide what a non-finished run becomes given its flow run's state; returns what was done."""
    if state_type in (StateType.FAILED, StateType.CRASHED):
        mark(run_id, S.failed, error=errors.TechnicalIssues("the flow run ended without reporting"))
        return "failed"
    if state_type is StateType.CANCELLED:
        mark(run_id, S.failed, error=errors.Cancelled())
        return "cancelled"
    if state_type is StateType.SCHEDULED:
        # waiting for a worker or a concurrency slot (Late and AwaitingConcurrencySlot are SCHEDULED
        # too): a backlog is not a death, however long it is
        return "waiting"
    if state_type is None or (heartbeat_age is not None and heartbeat_age > stale_after):
        mark(run_id, S.failed, error=errors.TechnicalIssues("the flow run stopped sending heartbeats"))
        return "stale"
    return "ok"


async def reconcile_once(client: Any, stale_after: timedelta) -> dict[str, str]:
    """Compare every unfinished run with its Prefect flow run and settle the dead ones."""
    outcome: dict[str, str] = {}
    with session_scope() as session:
        runs = [(r.id, r.flow_run_id, r.updated_at) for r in list_active_runs(session)]
    now = datetime.now(UTC)
    for run_id, flow_run_id, updated_at in runs:
        if not flow_run_id:
            continue
        last_sign = updated_at
        try:
            flow_run = await client.read_flow_run(flow_run_id)
            state_type = flow_run.state.type if flow_run.state else None
            if flow_run.state is not None and flow_run.state.timestamp is not None:
                # a run queued for long whose flow run a worker just took (PENDING) is alive
                last_sign = max(last_sign, flow_run.state.timestamp)
        except Exception:  # the flow run was deleted or Prefect pruned it
            state_type = None
        outcome[run_id] = settle(run_id, state_type, now - last_sign, stale_after)
        if outcome[run_id] == "stale" and state_type is not None:
            # Nobody else will end it: the Prefect UI should not show a dead flow as running forever.
            # The run is settled either way; Prefect may be briefly unreachable.
            with contextlib.suppress(Exception):
                await client.set_flow_run_state(
                    flow_run_id, Crashed(message="filmroom's reconciler: no sign of life"), force=True
                )
    return outcome


def attach_flow_run(run_id: str, flow_run_id: str) -> None:
    """Remember the flow run a queued run was handed to (the first one wins, like the API's hand-over)."""
    with write_scope() as session:
        session.exec(
            sa.update(Run)
            .where(col(Run.id) == run_id, col(Run.flow_run_id).is_(None))
            .values(flow_run_id=flow_run_id)
            .execution_options(synchronize_session=False)
        )


def stranded_runs(older_than: timedelta, now: datetime | None = None) -> list[tuple[Run, Event]]:
    """Queued ``ai`` runs that nobody handed to Prefect ``older_than`` after their creation.

    The API hands a run over right after committing it; when Prefect refuses (a 503 from a server
    busy with a burst, a restart) the run stays queued without a flow run and would wait forever.
    Manual runs wait for an upload, never for a flow.
    """
    cutoff = to_stored_utc((now or utc_now()) - older_than)
    with session_scope() as session:
        rows = session.exec(
            select(Run, Event)
            .join(
                Event, sa.and_(col(Event.id) == col(Run.event_id), col(Event.tenant_id) == col(Run.tenant_id))
            )
            .where(
                col(Run.status) == S.queued,
                col(Run.mode) == RunMode.ai,
                col(Run.flow_run_id).is_(None),
                col(Run.created_at) <= cutoff,
            )
            .order_by(col(Run.created_at))
        ).all()
    return [(run, event) for run, event in rows]


def hand_over_stranded(
    deployment: str, older_than: timedelta, *, submit: Callable[..., str] | None = None
) -> dict[str, str]:
    """Submit every :func:`stranded_runs` run to ``deployment`` (idempotent per run: the run's id is
    Prefect's idempotency key, so a hand-over the API did after all is found, not doubled)."""
    from flows.submit import submit_run

    submit = submit or submit_run
    outcome: dict[str, str] = {}
    for run, event in stranded_runs(older_than):
        try:
            attach_flow_run(run.id, submit(run, event, deployment=deployment))
        except Exception:
            logger.warning("run %s is still not handed over", run.id, exc_info=True)
            outcome[run.id] = "still_queued"
        else:
            outcome[run.id] = "handed_over"
    return outcome
