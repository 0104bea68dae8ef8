"""Benchmark: Jobs API latency at a fixed request rate, and a burst of 500 submissions, on loopback.

A real uvicorn server, a real Prefect server (the run deployment registered but nobody serving it, as
when every worker is busy: submitted flow runs wait as Scheduled), SQLite. Prints p50/p99 latency of
``GET /v1/jobs/{id}`` and ``POST /v1/jobs`` at a fixed rate, then fires 500 submissions 50 at a time:
each must be answered 2xx or 429, and every accepted job must exist with its Prefect flow run.

Run:  .venv/bin/python bench/jobs_api.py [--rate 20 --seconds 10]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import uvicorn


def _serve(app: object) -> tuple[str, uvicorn.Server]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))  # type: ignore[arg-type]
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{sock.getsockname()[1]}", server


def _paced(call: object, rate: float, seconds: float) -> list[float]:
    latencies = []
    interval = 1.0 / rate
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        delay = start + i * interval - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        t = time.perf_counter()
        call()  # type: ignore[operator]
        latencies.append((time.perf_counter() - t) * 1000)
    return latencies


def _pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--burst", type=int, default=500)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="filmroom-bench-api-"))
    footage = tmp / "footage"
    footage.mkdir()
    os.environ.update(  # noqa: TID251 - this script configures filmroom the way an operator would
        {
            "FILMROOM_DATA_DIR": str(tmp / "var"),
            "FILMROOM_DATABASE__URL": f"sqlite:///{tmp / 'filmroom.db'}",
            "FILMROOM_STORAGE__ROOT": str(tmp / "artifacts"),
            "FILMROOM_INGEST__ALLOWED_ROOTS": f'["{footage}"]',
            "FILMROOM_API__RATE_LIMIT": "100000/minute",
            "FILMROOM_API__SUBMIT_RATE_LIMIT": "300/minute",
        }
    )
    from infra.settings import get_settings
    from infra.stack import PrefectServer
    from infra.synth import GameSpec, render_game

    video = render_game(
        GameSpec(name="clip", duration_s=1, width=320, height=180, players_per_team=2), footage
    )
    settings = get_settings()
    with PrefectServer.ensure(settings) as prefect:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        from api.main import create_app
        from flows.run import run_flow
        from storage.db import init_db, session_scope
        from storage.models import Run
        from storage.repo import create_api_key, create_tenant

        settings = settings.model_copy(
            update={"prefect": settings.prefect.model_copy(update={"api_url": prefect.url})}
        )
        with temporary_settings(updates={PREFECT_API_URL: prefect.url}):
            run_flow.to_deployment(name="filmroom-run").apply()  # type: ignore[union-attr]
        init_db()
        with session_scope() as session:
            create_tenant(session, tenant_id="bench", name="bench")
            key = create_api_key(session, tenant_id="bench", name="bench").plaintext
        url, server = _serve(create_app(settings))
        body = {
            "job": {"type": "breakdown", "videos": [{"url": str(video[0].video_path)}], "sport": "soccer"}
        }
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
            job_id = client.post("/v1/jobs", json=body).json()["job_id"]
            gets = _paced(
                lambda: client.get(f"/v1/jobs/{job_id}").raise_for_status(), args.rate, args.seconds
            )
            posts = _paced(lambda: client.post("/v1/jobs", json=body), args.rate / 4, args.seconds)
        for name, rate, values in (
            ("GET  /v1/jobs/{id}", args.rate, gets),
            ("POST /v1/jobs", args.rate / 4, posts),
        ):
            p50, p99 = _pct(values, 0.5), _pct(values, 0.99)
            print(f"{name:18s} at {rate:.0f}/s: p50 {p50:6.1f} ms  p99 {p99:6.1f} ms")

        def submit(_: int) -> tuple[int, str | None]:
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=180) as c:
                response = c.post("/v1/jobs", json=body)
                return response.status_code, response.json().get("job_id")

        started = time.perf_counter()
        with ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(submit, range(args.burst)))
        seconds = time.perf_counter() - started
        codes = statistics.multimode([c for c, _ in answers])
        accepted = {j for c, j in answers if 200 <= c < 300 and j}
        limited = sum(1 for c, _ in answers if c == 429)
        other = [c for c, _ in answers if not (200 <= c < 300 or c == 429)]
        with session_scope() as session:
            stored = {str(r.job_id): r.flow_run_id for r in session.query(Run).all()}
        lost = [j for j in accepted if j not in stored or not stored[j]]
        print(
            f"burst of {args.burst}: {len(accepted)} accepted, {limited} rate-limited (429), "
            f"{len(other)} other "
            f"{sorted(set(other))}; {len(lost)} accepted jobs without a run or flow run; {seconds:.1f} s "
            f"(most common status {codes})"
        )
        server.should_exit = True


if __name__ == "__main__":
    main()
