"""``filmroom serve`` (the API under uvicorn) and ``filmroom dispatcher`` (the webhook outbox alone).

Registered in ``api/cli.py`` with ``app.command("serve")(serve)`` and
``app.command("dispatcher")(dispatcher)``.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Annotated

import typer
import uvicorn

from api.main import create_app
from api.webhooks.dispatcher import Dispatcher
from infra.settings import get_settings
from storage.db import init_db


def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default: settings.api.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind (default: settings.api.port).")] = None,
    migrate: Annotated[bool, typer.Option(help="Bring the database to the newest schema first.")] = True,
) -> None:
    """Run the HTTP API (and, unless settings.webhooks.dispatch_in_api is false, the webhook dispatcher)."""
    settings = get_settings()
    if migrate:
        init_db()
    uvicorn.run(
        create_app(settings),
        host=host or settings.api.host,
        port=port or settings.api.port,
        proxy_headers=False,
        server_header=False,
        log_level="info",
    )


def dispatcher(
    once: Annotated[bool, typer.Option(help="Send what is due now, then exit.")] = False,
) -> None:
    """Drain the webhook outbox until interrupted (run it when the API's own dispatcher is off)."""
    settings = get_settings()
    init_db()
    worker = Dispatcher(settings)
    if once:
        sent = worker.run_once()
        worker.stop()
        typer.echo(f"{sent} delivery attempt(s) made")
        return
    stop = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        worker.run_forever(stop)
    finally:
        worker.stop()
