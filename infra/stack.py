"""The embedded stack behind ``filmroom up``: every piece a separate process, started by command.

Pieces, in start order (each skipped when settings point at an existing one):

1. a Prefect server on SQLite        (unless ``PREFECT_API_URL`` / ``FILMROOM_PREFECT__API_URL`` is set)
2. a Dask scheduler + N workers       (unless ``FILMROOM_DASK__ADDRESS`` is set); long-lived, so each
                                      worker loads the detector once for every run, not once per run
3. the flow server                    ``filmroom serve-flows``: serves the run deployment
4. the reconciler                     ``filmroom reconcile``: settles runs whose flow died silently
5. the API                            ``filmroom serve`` (uvicorn), with the webhook dispatcher

This module imports nothing of filmroom but settings: it launches the others by command, so a crash in
one piece never takes the launcher down, and Ctrl-C stops everything in reverse order.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from infra.settings import Settings


@dataclass
class Piece:
    name: str
    argv: list[str]
    ready: Callable[[], bool]
    url: str
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=1.0).status_code < 500
        except httpx.HTTPError:
            return False

    return check


def _bin(name: str) -> str:
    """A console script of this environment (beside the running interpreter), else from PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else (shutil.which(name) or name)


def prefect_piece(settings: Settings, port: int) -> Piece:
    """A `prefect server start` on SQLite under ``<data dir>/prefect``; its ``url`` is the API URL."""
    host = settings.prefect.server_host
    home = (settings.data_dir / "prefect").resolve()
    home.mkdir(parents=True, exist_ok=True)
    url = f"http://{host}:{port}/api"
    return Piece(
        "prefect server",
        [_bin("prefect"), "server", "start", "--host", host, "--port", str(port)],
        http_ok(f"{url}/health"),
        url,
        env={"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"},
    )


def plan(settings: Settings, log_dir: Path) -> tuple[list[Piece], dict[str, str]]:
    """The pieces to start and the environment every piece shares (URLs of the others)."""
    env: dict[str, str] = {}
    pieces: list[Piece] = []
    prefect_url = settings.prefect.api_url
    if not prefect_url:
        piece = prefect_piece(settings, settings.prefect.server_port)
        prefect_url = piece.url
        piece.url = prefect_url.removesuffix("/api")  # what `up` prints: the Prefect UI
        pieces.append(piece)
    env["PREFECT_API_URL"] = prefect_url
    env["FILMROOM_PREFECT__API_URL"] = prefect_url
    if not settings.dask.address:
        scheduler_port = _free_port()
        address = f"tcp://127.0.0.1:{scheduler_port}"
        dashboard = settings.dask.dashboard_port
        pieces.append(
            Piece(
                "dask scheduler",
                [
                    _bin("dask"),
                    "scheduler",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(scheduler_port),
                    "--dashboard-address",
                    f"127.0.0.1:{dashboard}",
                ],
                lambda: port_open("127.0.0.1", scheduler_port),
                f"http://127.0.0.1:{dashboard}/status",
            )
        )
        for i in range(settings.dask.n_workers):
            pieces.append(
                Piece(
                    f"dask worker {i + 1}",
                    [
                        _bin("dask"),
                        "worker",
                        address,
                        "--nworkers",
                        "1",
                        "--nthreads",
                        str(settings.dask.threads_per_worker),
                        "--name",
                        f"filmroom-{i + 1}",
                        "--no-dashboard",
                    ],
                    lambda: True,
                    address,
                )
            )
        env["FILMROOM_DASK__ADDRESS"] = address
    pieces.append(
        Piece(
            "flow server",
            [_bin("filmroom"), "serve-flows"],
            lambda: True,
            f"{prefect_url.removesuffix('/api')}",
        )
    )
    pieces.append(Piece("reconciler", [_bin("filmroom"), "reconcile"], lambda: True, "(settles silent runs)"))
    api = settings.api
    pieces.append(
        Piece(
            "api",
            [_bin("filmroom"), "serve", "--host", api.host, "--port", str(api.port)],
            http_ok(f"http://{api.host}:{api.port}/healthz"),
            f"http://{api.host}:{api.port}/docs",
        )
    )
    log_dir.mkdir(parents=True, exist_ok=True)
    return pieces, env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(
    pieces: list[Piece], env: dict[str, str], log_dir: Path, base_env: dict[str, str], timeout_s: float = 90.0
) -> None:
    """Start each piece and wait until it answers; raise (after stopping the rest) if one never does."""
    for piece in pieces:
        log = (log_dir / f"{piece.name.replace(' ', '-')}.log").open("ab")
        piece.process = subprocess.Popen(
            piece.argv,
            env={**base_env, **env, **piece.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while not piece.ready():
            if piece.process.poll() is not None or time.monotonic() > deadline:
                stop(pieces)
                raise RuntimeError(f"{piece.name} did not start; see {log.name}")
            time.sleep(0.3)


def stop(pieces: list[Piece], grace_s: float = 10.0) -> None:
    """SIGTERM in reverse start order, SIGKILL whatever is still alive after the grace period."""
    for piece in reversed(pieces):
        if piece.process and piece.process.poll() is None:
            piece.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for piece in reversed(pieces):
        if piece.process is None:
            continue
        try:
            piece.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            piece.process.kill()
            piece.process.wait()


class PrefectServer:
    """A Prefect server for one command: the configured one, or a private one on a free loopback port."""

    def __init__(self, url: str, piece: Piece | None) -> None:
        self.url = url
        self.piece = piece

    @classmethod
    @contextmanager
    def ensure(cls, settings: Settings, timeout_s: float = 90.0) -> Iterator[PrefectServer]:
        configured = settings.prefect.api_url or os.environ.get("PREFECT_API_URL")  # noqa: TID251
        if configured:
            _export_api_url(configured)
            yield cls(configured, None)
            return
        host = settings.prefect.server_host
        port = (
            settings.prefect.server_port
            if not port_open(host, settings.prefect.server_port)
            else _free_port()
        )
        piece = prefect_piece(settings, port)
        url = piece.url
        log_dir = settings.data_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        start([piece], {}, log_dir, dict(os.environ), timeout_s)  # noqa: TID251
        previous = os.environ.get("PREFECT_API_URL")  # noqa: TID251
        _export_api_url(url)
        try:
            yield cls(url, piece)
        finally:
            stop([piece])
            if previous is None:
                os.environ.pop("PREFECT_API_URL", None)  # noqa: TID251
            else:
                os.environ["PREFECT_API_URL"] = previous  # noqa: TID251


def environment() -> dict[str, str]:
    """This process's environment, for the pieces it starts (they inherit FILMROOM_* settings)."""
    return dict(os.environ)  # noqa: TID251


def _export_api_url(url: str) -> None:
    # Prefect reads its API URL from the environment; Dask worker processes inherit it from here.
    os.environ["PREFECT_API_URL"] = url  # noqa: TID251
