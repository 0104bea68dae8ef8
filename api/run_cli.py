"""`filmroom run` and `filmroom demo`: register an event, run its flow, follow it, print what it made.

The flow runs in this process against a real Prefect server (the configured one, or one this command
starts on loopback and stops again), with its stages on a Dask cluster (the configured scheduler, or a
LocalCluster). Progress is read from filmroom's database, like every other client reads it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from infra.settings import get_settings
from infra.stack import PrefectServer
from infra.synth import GameSpec, render_game
from storage.artifacts import RunRef
from storage.db import init_db, session_scope
from storage.models import EventKind, JobType
from storage.repo import create_event, create_run, create_tenant, get_run_by_id, get_tenant

console = Console()
DEMO_TENANT = "demo"


def _register(videos: list[Path], title: str, tenant: str) -> RunRef:
    settings = get_settings()
    footage = Path(settings.storage.footage_dir).resolve()
    sources = []
    for i, video in enumerate(videos):
        path = video.resolve()
        if not any(path.is_relative_to(Path(r).resolve()) for r in settings.ingest.allowed_roots):
            from tasks.ingest import copy_into_footage

            path = copy_into_footage(path, footage)
        sources.append({"angle": "main" if i == 0 else f"angle{i + 1}", "uri": str(path)})
    with session_scope() as session:
        if get_tenant(session, tenant_id=tenant) is None:
            create_tenant(session, tenant_id=tenant, name=tenant)
        event = create_event(
            session, tenant_id=tenant, kind=EventKind.game, sport="soccer", title=title, sources=sources
        )
        run, _ = create_run(session, tenant_id=tenant, event_id=event.id, job_type=JobType.breakdown)
        return RunRef(tenant, event.id, run.id)


def _follow(run_id: str, done: threading.Event) -> None:
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("queued", total=1.0)
        while not done.wait(0.5):
            with session_scope() as session:
                run = get_run_by_id(session, run_id=run_id)
            if run is not None:
                stage = run.progress.get("stage") or run.status
                bar.update(
                    task,
                    completed=float(run.progress.get("fraction") or 0.0),
                    description=f"{run.status}: {stage}",
                )


def execute(ref: RunRef, api_url: str) -> dict[str, Any]:
    """Run the flow of ``ref`` here, with a progress bar; return the run row's final state."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.run import run_flow

    done = threading.Event()
    follower = threading.Thread(target=_follow, args=(ref.run_id, done), daemon=True)
    follower.start()
    try:
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            run_flow.with_options(flow_run_name=f"{ref.event_id}-{ref.run_id}")(ref.run_id, return_state=True)
            from prefect.logging.handlers import APILogWorker

            APILogWorker.drain_all()  # send the last logs before a private server stops
    finally:
        done.set()
        follower.join()
    with session_scope() as session:
        run = get_run_by_id(session, run_id=ref.run_id)
        assert run is not None
        return {"status": run.status, "errors": run.errors, "file_uri": run.file_uri}


def _print_outcome(ref: RunRef, outcome: dict[str, Any]) -> None:
    from storage.artifacts import ArtifactStore

    store = ArtifactStore.from_settings()
    colour = "green" if outcome["status"] == "file_ready" else "red"
    console.print(
        f"run [bold]{ref.run_id}[/bold] of event {ref.event_id}: [{colour}]{outcome['status']}[/{colour}]"
    )
    for error in outcome["errors"]:
        console.print(f"  [red]{error['code']}[/red]: {error['message']}")
    table = Table("artifact", "rows", "path")
    manifest = store.read_manifest(ref) if store.exists(ref, "manifest") else None
    for name, rows in (manifest.row_counts if manifest else {}).items():
        table.add_row(name, str(rows), store.path(ref, name))
    for name in ("breakdown", "manifest"):
        if store.exists(ref, name):
            table.add_row(name, "", store.path(ref, name))
    console.print(table)


def run(
    videos: Annotated[list[Path], typer.Argument(help="Video files: one per camera angle of the event.")],
    title: Annotated[str, typer.Option(help="Event title.")] = "match",
    tenant: Annotated[str, typer.Option(help="Tenant the event belongs to.")] = DEMO_TENANT,
) -> None:
    """Register an event for VIDEO(s), run its breakdown flow, follow it, print the artifacts."""
    missing = [str(v) for v in videos if not v.is_file()]
    if missing:
        console.print(f"[red]missing_videos:[/red] {', '.join(missing)}")
        raise typer.Exit(2)
    init_db()
    with PrefectServer.ensure(get_settings()) as server:
        ref = _register(videos, title, tenant)
        outcome = execute(ref, server.url)
    _print_outcome(ref, outcome)
    if outcome["status"] != "file_ready":
        raise typer.Exit(1)


def demo(
    seconds: Annotated[float, typer.Option(help="Length of the synthetic match.")] = 20.0,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic match.")] = 1,
) -> None:
    """Render a synthetic 720p match and run the whole breakdown on it (the README's first command)."""
    settings = get_settings()
    footage = Path(settings.storage.footage_dir)
    console.print(f"rendering a {seconds:.0f} s synthetic match into {footage} ...")
    clip = render_game(GameSpec(name=f"demo-{seed}", duration_s=seconds, seed=seed), footage)[0]
    console.print(f"  {clip.video_path} ({clip.frame_count} frames, {clip.render_seconds:.1f} s to render)")
    run([clip.video_path], title=f"demo match {seed}", tenant=DEMO_TENANT)
