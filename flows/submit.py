"""Starting a run's flow through its Prefect deployment: one helper for the API and the reprocessing flow.

A flow run of the run deployment is created with ``run_deployment(..., timeout=0)`` (returns at once),
the run's id as Prefect's idempotency key (a retried submit never starts two flows), a readable name
and tags the Prefect UI filters on. Prefect is imported lazily: the API imports this module and must
start, and answer reads, without it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from storage.models import Event, Run


def flow_run_name(run: Run, event: Event) -> str:
    """``<event title or id, slugged>-<run id>``: what the Prefect UI shows."""
    label = re.sub(r"[^A-Za-z0-9]+", "-", event.title or "").strip("-").lower()[:60]
    return f"{label or event.id}-{run.id}"


def flow_run_tags(run: Run, event: Event) -> list[str]:
    return [f"tenant:{run.tenant_id}", f"kind:{event.kind.value}", f"mode:{run.mode.value}"]


def submit_run(
    run: Run,
    event: Event,
    *,
    deployment: str,
    run_deployment: Callable[..., Any] | None = None,
    tags: list[str] | None = None,
) -> str:
    """Create (without waiting for it) the flow run of ``deployment`` that analyses ``run``; its id.

    Uses the Prefect API of the caller's context (``PREFECT_API_URL``); ``run_deployment`` defaults to
    Prefect's own (tests pass fakes). ``tags`` are added to the run's own.
    """
    if run_deployment is None:
        from prefect.deployments import run_deployment as prefect_run_deployment

        run_deployment = prefect_run_deployment
    flow_run: Any = run_deployment(
        name=deployment,
        parameters={"run_id": run.id},
        timeout=0,
        idempotency_key=run.id,
        flow_run_name=flow_run_name(run, event),
        tags=flow_run_tags(run, event) + list(tags or []),
        as_subflow=False,
    )
    return str(flow_run.id)
