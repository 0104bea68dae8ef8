"""`prefect deploy --all` from the repo root registers both deployments of prefect.yaml, and a process
worker of the work pool runs them (pull step, entrypoint, parameters) against a real Prefect server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from storage.db import init_db

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
POOL = "filmroom-process"
NAMES = ("filmroom-run/filmroom-run", "filmroom-reprocess/filmroom-reprocess")


def _prefect(*args: str, env: dict[str, str], cwd: Path = REPO) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "prefect"), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@pytest.fixture(scope="module")
def deployed(prefect_server: str) -> Iterator[dict[str, str]]:
    """prefect.yaml deployed by the CLI onto the test server; the deployments are deleted afterwards."""
    env = {**os.environ, "PREFECT_API_URL": prefect_server}

    async def create_pool() -> bool:
        async with get_client() as client:
            pools = {p.name for p in await client.read_work_pools()}
            if POOL in pools:
                return False
            await client.create_work_pool(WorkPoolCreate(name=POOL, type="process"))
            return True

    async def clean_up(created_pool: bool) -> None:
        async with get_client() as client:
            for name in NAMES:
                deployment = await client.read_deployment_by_name(name)
                await client.delete_deployment(deployment.id)
            if created_pool:
                await client.delete_work_pool(POOL)

    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        created_pool = asyncio.run(create_pool())
        deploy = _prefect("--no-prompt", "deploy", "--all", env=env)
        output, _ = deploy.communicate(timeout=180)
        try:
            assert deploy.returncode == 0, output.decode(errors="replace")[-3000:]
            yield env
        finally:
            asyncio.run(clean_up(created_pool))


def test_prefect_deploy_all_registers_the_run_and_the_nightly_reprocessing_deployments(
    deployed: dict[str, str], prefect_server: str
) -> None:
    async def read() -> dict[str, Any]:
        async with get_client() as client:
            return {name: await client.read_deployment_by_name(name) for name in NAMES}

    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        found = asyncio.run(read())
    run, reprocess = found[NAMES[0]], found[NAMES[1]]
    assert (run.entrypoint, reprocess.entrypoint) == (
        "flows/run.py:run_flow",
        "flows/reprocess.py:reprocess_flow",
    )
    pull = [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $FILMROOM_HOME }}"}}]
    for deployment in (run, reprocess):
        assert deployment.work_pool_name == POOL
        assert deployment.pull_steps == pull
        assert "filmroom" in deployment.tags
    assert run.parameter_openapi_schema["required"] == ["run_id"]
    assert reprocess.parameters == {"batch_size": 20, "dry_run": False, "max_attempts": 3}
    [schedule] = reprocess.schedules
    assert schedule.active
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 3 * * *", "UTC")
    assert run.schedules == []


def test_a_process_worker_of_the_pool_runs_the_reprocessing_deployment(
    deployed: dict[str, str], prefect_server: str, settings_env: Path
) -> None:
    init_db()  # the worker's flow run shares this test's database (FILMROOM_* in the environment)
    env = {**deployed, **{k: v for k, v in os.environ.items() if k.startswith("FILMROOM_")}}
    # started elsewhere: only the pull step (cd FILMROOM_HOME) makes the entrypoint resolve
    worker = _prefect(
        "worker",
        "start",
        "--pool",
        POOL,
        "--limit",
        "1",
        env={**env, "FILMROOM_HOME": str(REPO)},
        cwd=settings_env,
    )
    try:
        with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
            flow_run: Any = run_deployment(NAMES[1], parameters={"dry_run": True}, timeout=180)
            assert flow_run.state is not None and flow_run.state.is_completed(), flow_run.state

            async def markdown() -> list[str]:
                async with get_client() as client:
                    artifacts = await client.read_artifacts(
                        artifact_filter=ArtifactFilter(
                            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id])
                        )
                    )
                return [str(a.data) for a in artifacts]

            assert [m.strip() for m in asyncio.run(markdown())] == ["# Would re-run 0 runs"]
    finally:
        worker.terminate()
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
