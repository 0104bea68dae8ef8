"""Faults, for real: a Dask worker killed mid-chunk, the flow's process killed, a running flow cancelled.

One module-wide setup keeps this affordable: a 6 s clip cut into three chunks, a Dask LocalCluster
(two nanny-managed worker processes that load the detector once) and one settings environment (the
workers read it when they start). Every flow here runs on that cluster through FILMROOM_DASK__ADDRESS,
in this process, in a killed subprocess, or under `filmroom serve-flows`. Corrupt footage is covered by
tests/flows/test_run_flow.py (failed with the ingest code, no artifacts).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import psutil
import pytest
from distributed import Client, LocalCluster
from polars.testing import assert_frame_equal
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows import status
from flows.submit import submit_run
from infra.settings import get_settings
from infra.synth import GameSpec, render_game
from infra.synth.spec import EncodeSpec
from storage.artifacts import ArtifactStore, RunRef
from storage.db import init_db, session_scope
from storage.models import EventKind, JobType, Run, RunStatus, Tenant
from storage.repo import create_event, create_run, create_tenant, get_event, get_run_by_id

pytestmark = pytest.mark.slow

CHUNKS = 3  # the clip's keyframes are 1 s apart; 1.5 s chunks start at 0, 2 and 4 s
BIN = Path(sys.executable).parent


def _wait(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(every)


@pytest.fixture(scope="module")
def fault_env(tmp_path_factory: pytest.TempPathFactory, prefect_server: str) -> Iterator[Path]:
    """The module's settings, a Dask cluster whose workers read them, and a 6 s clip in the footage folder."""
    root = tmp_path_factory.mktemp("faults")
    footage = root / "footage"
    env = {
        "FILMROOM_PROFILE": "test",
        "FILMROOM_DATA_DIR": str(root / "var"),
        "FILMROOM_STORAGE__ROOT": str(root / "artifacts"),
        "FILMROOM_STORAGE__FOOTAGE_DIR": str(footage),
        "FILMROOM_DATABASE__URL": f"sqlite:///{root / 'filmroom.db'}",
        "FILMROOM_INGEST__ALLOWED_ROOTS": f'["{footage}"]',
        "FILMROOM_DETECT__CHUNK_SECONDS": "1.5",
        "FILMROOM_DETECT__OVERLAP_SECONDS": "0.5",
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        get_settings.cache_clear()
        init_db()
        render_game(
            GameSpec(
                name="faults",
                duration_s=6.0,
                players_per_team=6,
                referees=1,
                seed=21,
                encode=EncodeSpec(keyint=25),
                width=640,
                height=360,
                fps=25,
            ),
            footage,
        )
        with LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster:
            mp.setenv("FILMROOM_DASK__ADDRESS", cluster.scheduler_address)
            get_settings.cache_clear()
            yield footage
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def dask(fault_env: Path) -> Iterator[Client]:
    """A client of the module's cluster, for looking at (and killing) its workers."""
    with Client(get_settings().dask.address) as client:
        yield client


def _new_run(footage: Path) -> Run:
    with session_scope() as session:
        if session.get(Tenant, "acme") is None:
            create_tenant(session, tenant_id="acme", name="Acme")
        event = create_event(
            session,
            tenant_id="acme",
            kind=EventKind.game,
            sport="soccer",
            title="Faults",
            sources=[{"angle": "main", "uri": str(footage / "faults.mp4")}],
        )
        run, _ = create_run(session, tenant_id="acme", event_id=event.id, job_type=JobType.breakdown)
        return run


def _run(run_id: str) -> Run:
    with session_scope() as session:
        run = get_run_by_id(session, run_id=run_id)
    assert run is not None
    return run


def _flow_here(run_id: str, api_url: str) -> Run:
    """The run flow in this process, on the module's cluster."""
    from flows.run import run_flow

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        run_flow(run_id, return_state=True)  # its Dask address: the settings of now
    return _run(run_id)


def _parts(run: Run, table: str = "detections") -> dict[str, int]:
    """Part file name -> mtime (ns) of a run's chunk parts."""
    folder = Path(get_settings().storage.root) / f"tenant={run.tenant_id}/event={run.event_id}/run={run.id}"
    return {p.name: p.stat().st_mtime_ns for p in sorted((folder / "parts" / table).glob("*.parquet"))}


def _detections(run: Run) -> pl.DataFrame:
    table = pl.from_arrow(
        ArtifactStore.from_settings().read_table(RunRef("acme", run.event_id, run.id), "detections")
    )
    assert isinstance(table, pl.DataFrame)
    return table.sort(table.columns)


def _in_detect_stage(run_id: str) -> bool:
    return _run(run_id).progress.get("stage") in ("ingest", "detect_track")


def _busy_workers(client: Client) -> list[str]:
    return [worker for worker, keys in client.processing().items() if keys]


def _cluster_is_idle(client: Client) -> bool:
    """No task known to the scheduler, and no thread still running one (a released task runs to its end)."""
    if client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)):
        return False
    running = client.run(lambda dask_worker: len(dask_worker.state.all_running_tasks))
    return not any(running.values())


@pytest.fixture(scope="module")
def reference(fault_env: Path, prefect_server: str) -> pl.DataFrame:
    """The detections of an undisturbed run of the clip (what every faulty run must still produce)."""
    run = _flow_here(_new_run(fault_env).id, prefect_server)
    assert run.status == RunStatus.file_ready, run.errors
    assert len(_parts(run)) == CHUNKS
    return _detections(run)


def test_a_dask_worker_killed_mid_chunk_is_replaced_and_the_run_completes_with_the_same_artifacts(
    fault_env: Path, prefect_server: str, dask: Client, reference: pl.DataFrame
) -> None:
    run_id = _new_run(fault_env).id
    pids: dict[str, int] = dask.run(os.getpid)
    killed: list[int] = []

    def kill_a_busy_worker() -> None:
        busy = _wait(
            lambda: _in_detect_stage(run_id) and _busy_workers(dask), 120, "a worker busy with a chunk", 0.05
        )
        killed.append(pids[busy[0]])
        os.kill(pids[busy[0]], signal.SIGKILL)

    killer = threading.Thread(target=kill_a_busy_worker)
    killer.start()
    run = _flow_here(run_id, prefect_server)
    killer.join()

    assert killed and not psutil.pid_exists(killed[0])
    assert run.status == RunStatus.file_ready, run.errors
    assert_frame_equal(_detections(run), reference)
    manifest = ArtifactStore.from_settings().read_manifest(RunRef("acme", run.event_id, run.id))
    assert manifest.row_counts["detections"] == reference.height
    # the nanny replaced the worker: the cluster is whole again
    _wait(lambda: len(dask.scheduler_info()["workers"]) == 2, 60, "the replacement worker")
    assert killed[0] not in dask.run(os.getpid).values()


def test_a_killed_flow_process_is_settled_by_the_reconciler_and_a_rerun_resumes_from_its_parts(
    fault_env: Path, prefect_server: str, dask: Client, reference: pl.DataFrame
) -> None:
    run_id = _new_run(fault_env).id
    code = f"from flows.run import run_flow; run_flow({run_id!r})"
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    flow_process = subprocess.Popen(
        [sys.executable, "-c", code], env=env, start_new_session=True, stderr=subprocess.DEVNULL
    )
    try:
        _wait(lambda: _parts(_run(run_id)), 180, "the first chunk's part")
        os.killpg(flow_process.pid, signal.SIGKILL)  # no hook, no state change: it just vanishes
    finally:
        flow_process.kill()
        flow_process.wait()
    before = _parts(_run(run_id))
    assert 0 < len(before) < CHUNKS, "the flow died mid-stage"
    assert _run(run_id).status == RunStatus.processing

    async def reconcile() -> str:
        async with get_client() as client:
            return (await status.reconcile_once(client, timedelta(seconds=3)))[run_id]

    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        _wait(lambda: asyncio.run(reconcile()) == "stale", 30, "the reconciler to settle the run", 1.0)

        async def prefect_state() -> StateType | None:
            async with get_client() as client:
                flow_run = await client.read_flow_run(_run(run_id).flow_run_id)  # type: ignore[arg-type]
            return flow_run.state.type if flow_run.state else None

        assert asyncio.run(prefect_state()) == StateType.CRASHED
    settled = _run(run_id)
    assert settled.status == RunStatus.failed
    assert [e["code"] for e in settled.errors] == ["technical_issues"]

    # the re-run (the same run, queued again) reuses the parts the dead attempt finished
    status.mark(run_id, RunStatus.queued)
    rerun = _flow_here(run_id, prefect_server)
    assert rerun.status == RunStatus.file_ready, rerun.errors
    after = _parts(rerun)
    assert len(after) == CHUNKS
    assert {name: after[name] for name in before} == before  # same files, untouched
    assert_frame_equal(_detections(rerun), reference)


@pytest.fixture(scope="module")
def flow_server(fault_env: Path, prefect_server: str) -> Iterator[subprocess.Popen[bytes]]:
    """`filmroom serve-flows` on the module's cluster (the runner is what enforces a cancellation)."""
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    process = subprocess.Popen(
        [str(BIN / "filmroom"), "serve-flows"],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def deployment_ready() -> bool:
        try:
            url = f"{prefect_server}/deployments/name/{get_settings().prefect.run_deployment}"
            return httpx.get(url, timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        _wait(lambda: process.poll() is not None or deployment_ready(), 120, "the served deployment", 0.5)
        assert process.poll() is None, "serve-flows exited"
        yield process
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_cancelling_a_running_flow_ends_the_run_cancelled_and_stops_its_dask_work(
    fault_env: Path, prefect_server: str, dask: Client, flow_server: subprocess.Popen[bytes]
) -> None:
    from api.orchestrator import PrefectOrchestrator

    run = _new_run(fault_env)
    with session_scope() as session:
        event = get_event(session, tenant_id="acme", event_id=run.event_id)
    assert event is not None
    settings = get_settings().model_copy(
        update={"prefect": get_settings().prefect.model_copy(update={"api_url": prefect_server})}
    )
    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        submit_run(run, event, deployment=settings.prefect.run_deployment)
    _wait(lambda: _in_detect_stage(run.id) and _busy_workers(dask), 180, "the flow's first chunks", 0.05)

    running = _run(run.id)
    assert running.status == RunStatus.processing
    assert PrefectOrchestrator(settings).cancel(running) is False  # the flow confirms later

    _wait(lambda: _run(run.id).status == RunStatus.failed, 60, "the run to end", 0.5)
    assert [e["code"] for e in _run(run.id).errors] == ["cancelled"]
    # the flow's Dask client is gone with its process: nothing of the run is left on the cluster
    _wait(lambda: _cluster_is_idle(dask), 60, "the cluster to drop the run's tasks", 0.5)
    parts = _parts(_run(run.id))
    time.sleep(2.0)
    assert _parts(_run(run.id)) == parts, "nothing ran after the cluster went idle"
    assert not ArtifactStore.from_settings().exists(RunRef("acme", run.event_id, run.id), "breakdown")
    assert flow_server.poll() is None, "the flow server survives a cancellation"
