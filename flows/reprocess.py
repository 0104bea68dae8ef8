"""The scheduled reprocessing flow: re-run events whose newest run is outdated or failed for a reason a
retry can fix.

An event is a candidate when its newest run is an ``ai`` run (a manual run is an analyst's upload) that

* is ``file_ready`` but was produced by another filmroom code version or other detector weights than
  the configured ones (a run from before versions were recorded counts as outdated), or
* ended ``failed``/``file_failed`` with a retryable registry code (``technical_issues``, ...), and the
  event has not already failed that way ``max_attempts`` times in a row.

Each re-run is a *new* run row of the same event (same mode, job type and params), handed to the run
deployment exactly like the API hands a submitted job (``flows.submit``). Both ends are idempotent:
the new run's idempotency key is ``reprocess:<previous run id>`` and its flow run's key is the new run's
id, so a retried task or an overlapping schedule never starts an event twice; a run Prefect refuses
stays queued and the reconciler hands it over later, as for the API's jobs. An event with an
unfinished run is never a candidate (its newest run is not finished). A markdown artifact lists what
was (or, with ``dry_run``, would be) re-run.
"""

from __future__ import annotations

from typing import Annotated, Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field

from flows import status
from flows.submit import submit_run
from infra import errors
from infra.settings import get_settings
from infra.version import code_version, weights_version
from storage.db import session_scope
from storage.models import Run, RunMode, RunStatus
from storage.repo import create_run, get_event, get_run_by_id, list_latest_runs, list_runs
from tasks.detector import resolve_weights

S = RunStatus
SCANNED = (S.file_ready, S.failed, S.file_failed)
PAGE = 500


class Versions(BaseModel):
    code: str
    model: str


class Candidate(BaseModel):
    """An event to re-run, and why."""

    tenant_id: str
    event_id: str
    previous_run_id: str
    previous_status: str
    reason: str


class Rerun(BaseModel):
    candidate: Candidate
    run_id: str | None = None
    flow_run_id: str | None = None
    error: str | None = None


def current_versions() -> Versions:
    """The versions a run made today would record."""
    return Versions(
        code=code_version(), model=weights_version(resolve_weights(get_settings().detect.weights))
    )


def reprocess_reason(run: Run, current: Versions) -> str | None:
    """Why the newest run of an event should be re-run, or None (never for a manual run: an analyst's
    upload, no model)."""
    if run.mode != RunMode.ai:
        return None
    if run.status == S.file_ready:
        if run.code_version != current.code:
            return f"code {run.code_version or 'unrecorded'} -> {current.code}"
        if run.model_version != current.model:
            return f"model {run.model_version or 'unrecorded'} -> {current.model}"
        return None
    if run.status in (S.failed, S.file_failed) and run.errors:
        code = str(run.errors[-1]["code"])
        if errors.is_retryable(errors.error_for(code)):
            return f"{run.status} with {code} (retryable)"
    return None


def _gave_up(run: Run, max_attempts: int) -> bool:
    """Whether the event's last ``max_attempts`` runs all failed (retrying forever helps nobody)."""
    with session_scope() as session:
        recent = list_runs(
            session,
            tenant_id=run.tenant_id,
            event_ids=[run.event_id],
            order_by="-created_at",
            limit=max_attempts,
        )
    return len(recent) >= max_attempts and all(r.status in (S.failed, S.file_failed) for r in recent)


@task
def find_candidates(batch_size: int, max_attempts: int) -> tuple[list[Candidate], int]:
    """At most ``batch_size`` events to re-run, oldest first, and how many were given up on."""
    current = current_versions()
    found: list[Candidate] = []
    gave_up = 0
    offset = 0
    while len(found) < batch_size:
        with session_scope() as session:
            page = list_latest_runs(session, status=SCANNED, limit=PAGE, offset=offset)
        for run in page:
            reason = reprocess_reason(run, current)
            if reason is None:
                continue
            if run.status != S.file_ready and _gave_up(run, max_attempts):
                gave_up += 1
                continue
            found.append(
                Candidate(
                    tenant_id=run.tenant_id,
                    event_id=run.event_id,
                    previous_run_id=run.id,
                    previous_status=str(run.status),
                    reason=reason,
                )
            )
            if len(found) == batch_size:
                break
        if len(page) < PAGE:
            break
        offset += PAGE
    return found, gave_up


@task
def rerun(candidate: Candidate, deployment: str) -> Rerun:
    """A new queued run of the candidate's event, handed to the run deployment."""
    with session_scope() as session:
        previous = get_run_by_id(session, run_id=candidate.previous_run_id)
        assert previous is not None  # runs are never deleted
        run, _ = create_run(
            session,
            tenant_id=previous.tenant_id,
            event_id=previous.event_id,
            mode=previous.mode,
            job_type=previous.job_type,
            params=previous.params,
            idempotency_key=f"reprocess:{previous.id}",
        )
        event = get_event(session, tenant_id=run.tenant_id, event_id=run.event_id)
        assert event is not None  # a foreign key guarantees it
    if run.flow_run_id is not None:  # an earlier attempt of this task got that far
        return Rerun(candidate=candidate, run_id=run.id, flow_run_id=run.flow_run_id)
    try:
        flow_run_id = submit_run(run, event, deployment=deployment, tags=["reprocess"])
    except Exception as exc:
        # Like a job the API could not hand over: the run stays queued and the reconciler
        # (`filmroom reconcile`) hands it over once Prefect takes it.
        get_run_logger().warning("run %s stays queued: %s", run.id, type(exc).__name__)
        return Rerun(candidate=candidate, run_id=run.id, error=type(exc).__name__)
    status.attach_flow_run(run.id, flow_run_id)
    return Rerun(candidate=candidate, run_id=run.id, flow_run_id=flow_run_id)


@flow(name="filmroom-reprocess", log_prints=True)
def reprocess_flow(
    batch_size: Annotated[int, Field(ge=1, le=1000, description="Most events re-run in one pass.")] = 20,
    dry_run: Annotated[bool, Field(description="Only list what would be re-run.")] = False,
    max_attempts: Annotated[
        int, Field(ge=1, description="Leave an event alone once this many runs in a row failed.")
    ] = 3,
) -> list[dict[str, Any]]:
    """Re-run (at most ``batch_size``) events whose newest run is outdated or failed with a retryable code;
    with ``dry_run``, only list them."""
    logger = get_run_logger()
    candidates, gave_up = find_candidates(batch_size, max_attempts)
    deployment = get_settings().prefect.run_deployment
    reruns = (
        [Rerun(candidate=c) for c in candidates] if dry_run else [rerun(c, deployment) for c in candidates]
    )
    create_markdown_artifact(
        key="filmroom-reprocess",
        markdown=_report(reruns, gave_up, dry_run, max_attempts),
        description="what the reprocessing flow re-ran" + (" (dry run)" if dry_run else ""),
    )
    logger.info(
        "%s %d runs; gave up on %d events", "would re-run" if dry_run else "re-ran", len(reruns), gave_up
    )
    return [r.model_dump() for r in reruns]


def _report(reruns: list[Rerun], gave_up: int, dry_run: bool, max_attempts: int) -> str:
    verb = "Would re-run" if dry_run else "Re-ran"
    lines = [f"# {verb} {len(reruns)} runs", ""]
    if reruns:
        lines += [
            "| tenant | event | previous run | why | new run | flow run |",
            "|---|---|---|---|---|---|",
        ]
        for r in reruns:
            c = r.candidate
            new = r.run_id or ("(dry run)" if dry_run else "")
            flow_run = r.flow_run_id or (f"not yet submitted ({r.error}): queued" if r.error else "")
            lines.append(
                f"| {c.tenant_id} | {c.event_id} | {c.previous_run_id} ({c.previous_status}) | {c.reason} "
                f"| {new} | {flow_run} |"
            )
    if gave_up:
        lines += ["", f"{gave_up} events were left alone: their last {max_attempts} runs all failed."]
    return "\n".join(lines)
