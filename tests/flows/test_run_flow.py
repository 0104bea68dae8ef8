"""The run flow on a real Prefect server and a real Dask cluster, against real footage."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.reprocess import current_versions
from infra.settings import get_settings
from infra.synth import DamageKind, SynthClip
from infra.version import code_version
from storage.artifacts import ArtifactStore
from storage.db import init_db, session_scope
from storage.models import EventKind, JobType, RunStatus
from storage.repo import create_event, create_run, create_tenant, get_run_by_id

pytestmark = pytest.mark.slow


@pytest.fixture
def flow_env(settings_env: Path, monkeypatch: pytest.MonkeyPatch, prefect_server: str) -> Path:
    footage = settings_env / "footage"
    footage.mkdir()
    monkeypatch.setenv("FILMROOM_STORAGE__FOOTAGE_DIR", str(footage))
    monkeypatch.setenv("FILMROOM_INGEST__ALLOWED_ROOTS", f'["{footage}"]')
    monkeypatch.setenv("FILMROOM_DETECT__CHUNK_SECONDS", "2")
    monkeypatch.setenv("FILMROOM_DETECT__OVERLAP_SECONDS", "1")
    get_settings.cache_clear()
    init_db()
    return footage


def _submit(footage: Path, *videos: Path) -> str:
    sources = []
    for i, video in enumerate(videos):
        target = footage / video.name
        shutil.copyfile(video, target)
        sources.append({"angle": f"a{i}", "uri": str(target)})
    with session_scope() as session:
        create_tenant(session, tenant_id="acme", name="Acme")
        event = create_event(
            session, tenant_id="acme", kind=EventKind.game, sport="soccer", title="t", sources=sources
        )
        run, _ = create_run(session, tenant_id="acme", event_id=event.id, job_type=JobType.breakdown)
        return run.id


def _run(run_id: str, api_url: str) -> None:
    from flows.run import run_flow

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        run_flow(run_id, return_state=True)


def test_a_run_goes_through_the_flow_and_leaves_its_artifacts(
    flow_env: Path, prefect_server: str, game_clip: SynthClip
) -> None:
    run_id = _submit(flow_env, game_clip.video_path)
    _run(run_id, prefect_server)
    with session_scope() as session:
        run = get_run_by_id(session, run_id=run_id)
    assert run is not None and run.status == RunStatus.file_ready, run.errors if run else None
    assert run.flow_run_id
    # the versions the nightly reprocessing flow compares with today's
    assert (run.code_version, run.model_version) == (code_version(), current_versions().model)
    store = ArtifactStore.from_settings()
    ref = store.list_runs(tenant="acme")[0]
    tracks = pl.from_arrow(store.read_table(ref, "tracks"))
    assert isinstance(tracks, pl.DataFrame) and tracks.height > 0
    assert store.read_manifest(ref).row_counts["tracks"] == tracks.height


def test_corrupt_footage_fails_with_the_ingest_code_and_no_artifacts(
    flow_env: Path, prefect_server: str, damaged_clips: dict[DamageKind, Path]
) -> None:
    run_id = _submit(flow_env, damaged_clips[DamageKind.truncated])
    _run(run_id, prefect_server)
    with session_scope() as session:
        run = get_run_by_id(session, run_id=run_id)
    assert run is not None and run.status == RunStatus.failed
    assert [e["code"] for e in run.errors] == ["incomplete_video"]
    assert ArtifactStore.from_settings().list_runs(tenant="acme") == []
