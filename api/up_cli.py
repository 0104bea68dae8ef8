"""`filmroom up` (the embedded stack) and `filmroom serve-flows` (the process that runs deployments)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from infra.settings import get_settings
from infra.stack import environment, plan, start, stop
from storage.db import init_db

console = Console()


def serve_flows() -> None:
    """Serve the run deployment (`filmroom-run/filmroom-run`) and the nightly reprocessing deployment
    (`filmroom-reprocess/filmroom-reprocess`, on `prefect.reprocess_cron`) from this process until
    interrupted."""
    from prefect import serve
    from prefect.deployments.runner import EntrypointType

    from flows.reprocess import reprocess_flow
    from flows.run import run_flow

    settings = get_settings()
    flow_name, _, deployment = settings.prefect.run_deployment.partition("/")
    init_db()
    # Module entrypoints (flows.run:run_flow), not file paths: Prefect loads a file-path entrypoint
    # as a top-level module named after the file ("run"), which Dask workers started elsewhere
    # (FILMROOM_DASK__ADDRESS) cannot import when they unpickle the flow's tasks.
    module_path = EntrypointType.MODULE_PATH
    run_deployment: Any = run_flow.to_deployment(
        name=deployment or flow_name, tags=["filmroom"], concurrency_limit=2, entrypoint_type=module_path
    )
    reprocess_deployment: Any = reprocess_flow.to_deployment(
        name="filmroom-reprocess",
        tags=["filmroom"],
        cron=settings.prefect.reprocess_cron,
        entrypoint_type=module_path,
    )
    # two runs at once (the run deployment's limit) plus the reprocessing pass, which only submits
    serve(run_deployment, reprocess_deployment, limit=3)


def reconcile(
    every: Annotated[float, typer.Option(help="Seconds between passes.")] = 30.0,
    stale_after: Annotated[
        float, typer.Option(help="A processing run silent this long is dead (s).")
    ] = 600.0,
    once: Annotated[bool, typer.Option(help="One pass, then exit.")] = False,
    hand_over_after: Annotated[
        float, typer.Option(help="A queued run without a flow run this long is handed over again (s).")
    ] = 60.0,
) -> None:
    """Settle runs whose flow died without reporting (killed runner, crashed worker), and hand over
    again queued runs the API could not hand to Prefect, in a loop."""
    import asyncio
    from datetime import timedelta

    from prefect.client.orchestration import get_client

    from flows.status import hand_over_stranded, reconcile_once

    deployment = get_settings().prefect.run_deployment

    async def loop() -> None:
        while True:
            handed = await asyncio.to_thread(
                hand_over_stranded, deployment, timedelta(seconds=hand_over_after)
            )
            if handed:
                console.print(f"handed over again: {handed}")
            async with get_client() as client:
                settled = {
                    k: v
                    for k, v in (await reconcile_once(client, timedelta(seconds=stale_after))).items()
                    if v not in ("ok", "waiting")
                }
            if settled:
                console.print(f"settled: {settled}")
            if once:
                return
            await asyncio.sleep(every)

    init_db()
    asyncio.run(loop())


def up() -> None:
    """Start Prefect, Dask, the flow server and the API as processes; print their URLs; Ctrl-C stops all."""
    settings = get_settings()
    init_db()
    log_dir = Path(settings.data_dir) / "logs"
    pieces, env = plan(settings, log_dir)
    console.print(f"starting {len(pieces)} processes (logs in {log_dir}) ...")
    try:
        start(pieces, env, log_dir, environment())
    except RuntimeError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    table = Table("piece", "url")
    for piece in pieces:
        table.add_row(piece.name, piece.url)
    console.print(table)
    console.print("filmroom is up; Ctrl-C stops everything.")
    stopped = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        while not stopped.wait(1.0):
            dead = [p.name for p in pieces if p.process is not None and p.process.poll() is not None]
            if dead:
                console.print(f"[red]stopped unexpectedly: {', '.join(dead)}[/red]")
                break
    finally:
        console.print("stopping ...")
        stop(pieces)
