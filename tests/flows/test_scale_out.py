"""Scale-out: a run's flow on a real `dask scheduler` with two `dask worker` processes and a separate
`prefect server` process (the session's), found only through settings, as on several machines."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from distributed import Client
from prefect.settings import PREFECT_API_URL, temporary_settings

from infra.settings import get_settings
from infra.synth import SynthClip
from storage.artifacts import ArtifactStore, RunRef
from storage.db import init_db, session_scope
from storage.models import EventKind, JobType, RunStatus
from storage.repo import create_event, create_run, create_tenant, get_run_by_id

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in reversed(processes):
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in reversed(processes):
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture
def dask_cluster(settings_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """`dask scheduler` + two `dask worker` processes on loopback, sharing this test's settings."""
    footage = settings_env / "footage"
    footage.mkdir()
    monkeypatch.setenv("FILMROOM_STORAGE__FOOTAGE_DIR", str(footage))
    monkeypatch.setenv("FILMROOM_INGEST__ALLOWED_ROOTS", f'["{footage}"]')
    monkeypatch.setenv("FILMROOM_DETECT__CHUNK_SECONDS", "2")
    monkeypatch.setenv("FILMROOM_DETECT__OVERLAP_SECONDS", "1")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # the workers import filmroom's tasks from the checkout

    def spawn(*argv: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [str(BIN / "dask"), *argv],
            env=env,
            cwd=settings_env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    processes = [spawn("scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard")]
    try:
        for name in ("w1", "w2"):
            worker = ["worker", address, "--name", name, "--nthreads", "1", "--nworkers", "1"]
            processes.append(spawn(*worker, "--no-dashboard", "--host", "127.0.0.1"))
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        monkeypatch.setenv("FILMROOM_DASK__ADDRESS", address)
        get_settings.cache_clear()
        yield address
    finally:
        _stop(processes)
        assert all(p.poll() is not None for p in processes)


def test_a_run_flows_over_two_dask_worker_processes_and_a_separate_prefect_server(
    dask_cluster: str, prefect_server: str, game_clip: SynthClip
) -> None:
    from flows.run import run_flow

    settings = get_settings()
    assert settings.dask.address == dask_cluster
    init_db()
    video = Path(settings.storage.footage_dir) / game_clip.video_path.name
    shutil.copyfile(game_clip.video_path, video)
    with session_scope() as session:
        create_tenant(session, tenant_id="acme", name="Acme")
        event = create_event(
            session,
            tenant_id="acme",
            kind=EventKind.game,
            sport="soccer",
            title="scale-out",
            sources=[{"angle": "main", "uri": str(video)}],
        )
        run, _ = create_run(session, tenant_id="acme", event_id=event.id, job_type=JobType.breakdown)

    with Client(dask_cluster) as client:
        client.get_task_stream()  # installs the scheduler's task-stream plugin
        started = time.time()
        with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
            run_flow(run.id, return_state=True)  # finds the cluster through the settings only
        stream = client.get_task_stream(start=started)
        workers = {w["name"]: addr for addr, w in client.scheduler_info()["workers"].items()}

    with session_scope() as session:
        finished = get_run_by_id(session, run_id=run.id)
    assert finished is not None and finished.status == RunStatus.file_ready, (
        finished.errors if finished else None
    )
    store = ArtifactStore.from_settings()
    ref = RunRef("acme", event.id, run.id)
    manifest = store.read_manifest(ref)
    for name in ("detections", "tracks", "embeddings", "identities"):
        table = pl.from_arrow(store.read_table(ref, name))
        assert isinstance(table, pl.DataFrame) and table.height > 0, name
        assert manifest.row_counts[name] == table.height, name
    assert store.exists(ref, "breakdown")
    # every chunk ran on the cluster, and both worker processes took some
    chunks = len(list(Path(settings.storage.root).glob(f"**/run={run.id}/parts/detections/*.parquet")))
    assert chunks == 2
    ran_on = [record["worker"] for record in stream]
    assert len(ran_on) >= 2 * chunks  # detect_track and embed, per chunk
    assert set(ran_on) == set(workers.values()), ran_on
