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
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.runtime import flow_run as current_flow_run
from pydantic import BaseModel

from flows import status
from flows.dag import Stage, progress_after
from infra.cluster import make_task_runner
from infra.settings import get_settings
from infra.version import code_version, weights_version
from storage.artifacts import RunRef
from storage.db import session_scope
from storage.models import EventKind, RunStatus
from storage.repo import get_event, get_run_by_id, list_corrections
from tasks.cluster import ClusterParams, cluster_task, corrections_in
from tasks.common import store
from tasks.detect_track import DetectParams, detect_track_task
from tasks.detector import resolve_weights
from tasks.embed import EmbedParams, collect_embeddings_task, embed_task
from tasks.episode_track import EpisodeTrackParams, episode_track_task
from tasks.export import EventOut, RunOut, export_task
from tasks.ingest import Chunk, Source, ingest_task
from tasks.screentime import screentime_task
from tasks.stitch import stitch_task
from tasks.validate import ValidateParams, validate_task


def stage_key(stage: Stage, inputs: Any, params: Any) -> str:
    """Cache key of a stage: its inputs, its parameters and the code version."""
    blob = json.dumps(
        {"stage": stage.value, "in": inputs, "params": params, "code": code_version()}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class RunContext:
    """What the flow needs to know about its run, read once from the database."""

    def __init__(self, run_id: str) -> None:
        with session_scope() as session:
            run = get_run_by_id(session, run_id=run_id)
            if run is None:
                raise ValueError(f"run {run_id} does not exist")
            event = get_event(session, tenant_id=run.tenant_id, event_id=run.event_id)
            assert event is not None  # a foreign key guarantees it
            self.ref = RunRef(run.tenant_id, run.event_id, run.id)
            self.sources = [Source(angle=s["angle"], uri=s["uri"]) for s in event.sources]
            self.params: dict[str, Any] = dict(run.params)
            self.kind = EventKind(event.kind)
            self.corrections = corrections_in(
                list_corrections(session, tenant_id=run.tenant_id, event_id=event.id)
            )
            self.event = EventOut(
                id=event.id, tenant=run.tenant_id, kind=self.kind.value, title=event.title, sport=event.sport
            )
            self.preset = str(self.params.get("screentime_preset", "default"))
            self.run = RunOut(id=run.id, job_id=str(run.job_id), mode=str(run.mode), preset=self.preset)
            self.finished = run.status in (RunStatus.failed, RunStatus.file_ready, RunStatus.file_failed)


def _detect_params(params: dict[str, Any]) -> DetectParams:
    # the settings' detect section holds the defaults of every DetectParams field it shares a name with
    base = DetectParams(**get_settings().detect.model_dump(include=set(DetectParams.model_fields)))
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


@flow(
    name="filmroom-run",
    # no flow_run_name here: the API names each flow run "<event title>-<run id>" when it submits, and a
    # name template would overwrite that once the run starts
    task_runner=make_task_runner(),  # built from the settings of each flow run, not of this import
    on_failure=[_on_failure],
    on_crashed=[_on_crashed],
    on_cancellation=[_on_cancellation],
    log_prints=True,
)
def run_flow(run_id: str) -> dict[str, Any]:
    """Analyse one run's event: ingest → detect_track[chunk] → stitch → embed[chunk] → cluster → validate →
    screentime → export."""
    logger = get_run_logger()
    ctx = RunContext(run_id)
    if ctx.finished:  # cancelled (or settled) before the flow started
        logger.info("run %s is already finished; nothing to do", run_id)
        return {"run_id": run_id, "skipped": True}
    ref, params = ctx.ref, ctx.params
    settings = get_settings()
    detect = _detect_params(params)
    weights = resolve_weights(detect.weights)
    status.mark(
        run_id,
        RunStatus.processing,
        flow_run_id=str(current_flow_run.id or "") or None,
        model_version=weights_version(weights),  # what reprocessing compares with the configured weights
        code_version=code_version(),
    )
    progress = _Progress(run_id)
    chunk_s = float(params.get("chunk_seconds", settings.detect.chunk_seconds))
    overlap_s = float(params.get("overlap_seconds", settings.detect.overlap_seconds))

    plan = ingest_task(ref, ctx.sources, chunk_s, overlap_s)
    progress(Stage.ingest)
    artifacts = store()
    artifacts.update_manifest(
        ref,
        model_name=weights.name,
        model_version=weights_version(weights),
        params={"detect": detect.model_dump(), "chunk_seconds": chunk_s, "overlap_seconds": overlap_s},
    )
    _mapped(ref, Stage.detect_track, plan.chunks, detect, progress, episode=ctx.kind is EventKind.episode)
    refs = stitch_task(ref, plan.chunks)
    progress(Stage.stitch)

    embed = EmbedParams.for_faces() if ctx.kind is EventKind.episode else EmbedParams()
    _mapped(ref, Stage.embed, plan.chunks, embed, progress)
    refs.append(collect_embeddings_task(ref, plan.chunks))
    refs.append(cluster_task(ref, ctx.kind.value, ClusterParams(), ctx.corrections))
    progress(Stage.cluster)
    validate_task(ref, ctx.kind.value, ValidateParams(analysis_fps=detect.analysis_fps))
    progress(Stage.validate)
    screentime_paths = screentime_task(ref, ctx.preset, detect.analysis_fps)
    artifacts.update_manifest(ref, row_counts={r.artifact: r.rows for r in refs})
    status.mark(run_id, RunStatus.completed)
    progress(Stage.screentime)
    try:
        breakdown = export_task(
            ref,
            event=ctx.event,
            run=ctx.run,
            models={"detector": weights.name},
            corrections_applied=len(ctx.corrections),
        )
    except Exception as exc:
        status.mark(run_id, RunStatus.file_failed, error=exc)
        raise
    status.mark(run_id, RunStatus.file_ready, file_uri=breakdown)
    progress(Stage.export)
    _report(run_id, refs, screentime_paths, breakdown)
    logger.info("run %s: %d chunks, %s", run_id, len(plan.chunks), {r.artifact: r.rows for r in refs})
    return {"run_id": run_id, "breakdown": breakdown, "artifacts": {r.artifact: r.path for r in refs}}


def _mapped(
    ref: RunRef,
    stage: Stage,
    chunks: list[Chunk],
    params: BaseModel,
    progress: _Progress,
    episode: bool = False,
) -> None:
    """One task run per chunk on Dask; parts of an earlier attempt with the same key are reused.

    The key is recorded before any chunk runs, so an attempt that died halfway (killed flow, lost
    worker) leaves parts a re-run can trust: each part is written atomically, so one that exists is whole.
    """
    artifacts = store()
    table = "detections" if stage is Stage.detect_track else "embeddings"
    key = stage_key(stage, [c.model_dump() for c in chunks], params.model_dump())
    if artifacts.read_manifest(ref).stage_keys.get(stage.value) != key:
        artifacts.delete_parts(ref, table)
        artifacts.update_manifest(ref, stage_keys={stage.value: key})
    if stage is Stage.detect_track:
        task: Any = episode_track_task if episode else detect_track_task
        task_params: Any = EpisodeTrackParams() if episode else params
    else:
        task, task_params = embed_task, params
    futures = [task.submit(ref, chunk, task_params) for chunk in chunks]
    for finished, future in enumerate(futures, start=1):
        future.result()
        progress(stage, finished / len(futures))


def _report(run_id: str, refs: list[Any], screentime_paths: list[str], breakdown: str) -> None:
    """What the Prefect UI shows for the run: the screen-time table and where every artifact is."""
    import polars as pl

    table = pl.read_parquet(screentime_paths[0])
    rows = table.select("label", "team", "kind", "seconds_on_screen", "share").head(50).to_dicts()
    create_table_artifact(table=rows, description=f"screen time of run {run_id}")
    lines = [f"- `{r.artifact}`: {r.rows} rows at `{r.path}`" for r in refs]
    lines += [f"- `screentime`: `{p}`" for p in screentime_paths] + [f"- `breakdown.json`: `{breakdown}`"]
    create_markdown_artifact(markdown="\n".join(lines), description=f"artifacts of run {run_id}")
