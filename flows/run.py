"""The run flow: one Prefect flow run per filmroom run, wiring the DAG's stage tasks on Dask.

The flow only wires: every stage is a task in ``tasks/``; tasks exchange the run's reference, the
chunk plan and artifact references, never frames or big tables. Statuses go to filmroom's database
(``flows.status``), which is the system of record; the state hooks cover failure, crash and cancel.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.futures import wait
from prefect.runtime import flow_run as current_flow_run

from flows import status
from flows.dag import Stage, progress_after
from infra.cluster import make_task_runner
from infra.settings import get_settings
from infra.version import code_version
from storage.artifacts import RunRef
from storage.db import session_scope
from storage.models import RunStatus
from storage.repo import get_event, get_run_by_id
from tasks.common import store
from tasks.detect_track import DetectParams, detect_track_task
from tasks.ingest import Source, ingest_task
from tasks.stitch import stitch_task


def stage_key(stage: Stage, inputs: Any, params: Any) -> str:
    """Cache key of a stage: its inputs, its parameters and the code version."""
    blob = json.dumps(
        {"stage": stage.value, "in": inputs, "params": params, "code": code_version()}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _load(run_id: str) -> tuple[RunRef, list[Source], dict[str, Any]]:
    with session_scope() as session:
        run = get_run_by_id(session, run_id=run_id)
        if run is None:
            raise ValueError(f"run {run_id} does not exist")
        event = get_event(session, tenant_id=run.tenant_id, event_id=run.event_id)
        assert event is not None  # a foreign key guarantees it
        sources = [Source(angle=s["angle"], uri=s["uri"]) for s in event.sources]
        return RunRef(run.tenant_id, run.event_id, run.id), sources, dict(run.params)


def _detect_params(params: dict[str, Any]) -> DetectParams:
    detect = get_settings().detect
    base = DetectParams(
        weights=detect.weights,
        imgsz=detect.imgsz,
        conf=detect.conf,
        iou=detect.iou,
        analysis_fps=detect.analysis_fps,
        batch=detect.batch,
        tracker=detect.tracker,
    )
    overrides = {k: v for k, v in params.items() if k in DetectParams.model_fields}
    return base.model_copy(update=overrides)


class _Progress:
    """Stage and fraction on the run row, an ETA from measured throughput, and the UI's progress artifact."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.started = time.monotonic()
        self.artifact_id: Any = create_progress_artifact(progress=0.0, key=None, description=f"run {run_id}")

    def __call__(self, stage: Stage, fraction_of_stage: float = 1.0) -> None:
        done = progress_after(stage, fraction_of_stage)
        elapsed = time.monotonic() - self.started
        eta = None
        if done > 0.05:
            eta = datetime.now(UTC) + timedelta(seconds=elapsed * (1 - done) / done)
        status.progress(self.run_id, stage.value, round(done, 4), eta)
        if self.artifact_id is not None:
            update_progress_artifact(self.artifact_id, progress=round(done * 100, 1))


def _on_failure(flow: Any, flow_run: Any, state: Any) -> None:
    run_id = flow_run.parameters.get("run_id")
    try:
        state.result()
    except BaseException as exc:
        status.mark(run_id, RunStatus.failed, error=exc)
        return
    status.mark(run_id, RunStatus.failed, error=None)


def _on_crashed(flow: Any, flow_run: Any, state: Any) -> None:
    from infra.errors import TechnicalIssues

    status.mark(
        flow_run.parameters.get("run_id"), RunStatus.failed, error=TechnicalIssues("the flow run crashed")
    )


def _on_cancellation(flow: Any, flow_run: Any, state: Any) -> None:
    from infra.errors import Cancelled

    status.mark(flow_run.parameters.get("run_id"), RunStatus.failed, error=Cancelled())


def _flow_run_name() -> str:
    params = current_flow_run.parameters
    return f"run-{params.get('run_id', 'unknown')}"


@flow(
    name="filmroom-run",
    flow_run_name=_flow_run_name,
    task_runner=make_task_runner(get_settings()),
    on_failure=[_on_failure],
    on_crashed=[_on_crashed],
    on_cancellation=[_on_cancellation],
    log_prints=True,
)
def run_flow(run_id: str) -> dict[str, Any]:
    """Analyse one run's event: ingest → detect_track[chunk] → stitch → … → export."""
    logger = get_run_logger()
    ref, sources, params = _load(run_id)
    status.mark(run_id, RunStatus.processing, flow_run_id=str(current_flow_run.id or "") or None)
    progress = _Progress(run_id)
    settings = get_settings()
    detect = _detect_params(params)
    chunk_s = float(params.get("chunk_seconds", settings.detect.chunk_seconds))
    overlap_s = float(params.get("overlap_seconds", settings.detect.overlap_seconds))

    plan = ingest_task(ref, sources, chunk_s, overlap_s)
    progress(Stage.ingest)
    artifacts = store()
    key = stage_key(Stage.detect_track, [c.model_dump() for c in plan.chunks], detect.model_dump())
    if artifacts.read_manifest(ref).stage_keys.get(Stage.detect_track.value) != key:
        artifacts.delete_parts(ref, "detections")
    futures = [detect_track_task.submit(ref, chunk, detect) for chunk in plan.chunks]
    for finished, future in enumerate(futures, start=1):
        future.result()
        progress(Stage.detect_track, finished / len(futures))
    wait(futures)
    artifacts.update_manifest(ref, stage_keys={Stage.detect_track.value: key})
    refs = stitch_task(ref, plan.chunks)
    artifacts.update_manifest(ref, row_counts={r.artifact: r.rows for r in refs})
    progress(Stage.stitch)
    create_markdown_artifact(
        markdown="\n".join(f"- `{r.artifact}`: {r.rows} rows at `{r.path}`" for r in refs),
        description=f"artifacts of run {run_id}",
    )
    logger.info("run %s: %d chunks, %s", run_id, len(plan.chunks), {r.artifact: r.rows for r in refs})
    return {"run_id": run_id, "artifacts": {r.artifact: r.path for r in refs}}
