"""Benchmark: Jobs API latency at a fixed request rate, and a burst of 500 submissions, on loopback.

The whole stack, as an operator runs it: a real uvicorn server (this process), a real Prefect server,
`filmroom serve-flows` serving the run deployment and `filmroom reconcile` in their own processes, a
shared 2-worker Dask LocalCluster (``FILMROOM_DASK__ADDRESS``), SQLite. Prints:

1. p50/p99 latency of ``GET /v1/jobs/{id}`` and ``POST /v1/jobs`` at a fixed request rate;
2. a burst of ``--burst`` submissions, 50 in flight at a time: how many were answered 2xx and 429
   (``--submit-limit`` per key), any other answer, and whether every accepted job has its run row
   and Prefect flow run;
3. then it waits until every accepted job reaches a terminal status (``completed``/``failed`` in the
   Jobs API) and prints how long that took and the statuses.

Run:  .venv/bin/python bench/api.py [--rate 20 --seconds 10 --burst 500 --submit-limit 120/minute]
"""

from __future__ import annotations

import argparse
import collections
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and `import api` would find this file.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import httpx  # noqa: E402
import uvicorn  # noqa: E402

TERMINAL = {"completed", "failed"}


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


def _wait_for_deployment(api_url: str, name: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("filmroom serve-flows exited")
        try:
            if httpx.get(f"{api_url}/deployments/name/{name}", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("the run deployment never appeared")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0, help="GET requests per second (POST: a quarter)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each fixed-rate phase")
    parser.add_argument("--burst", type=int, default=500, help="submissions in the burst")
    parser.add_argument("--submit-limit", default="120/minute", help="per-key submission rate limit")
    parser.add_argument("--settle-timeout", type=float, default=3600.0, help="seconds to wait for runs")
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
            "FILMROOM_API__SUBMIT_RATE_LIMIT": args.submit_limit,
        }
    )
    from distributed import LocalCluster

    from infra.settings import get_settings
    from infra.stack import PrefectServer
    from infra.synth import GameSpec, render_game

    video = render_game(
        GameSpec(name="clip", duration_s=1, width=320, height=180, players_per_team=2), footage
    )
    settings = get_settings()
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    os.environ["FILMROOM_DASK__ADDRESS"] = cluster.scheduler_address  # noqa: TID251 - as above
    with PrefectServer.ensure(settings) as prefect:
        os.environ["PREFECT_API_URL"] = prefect.url  # noqa: TID251 - serve-flows and run_deployment
        from api.main import create_app
        from storage.db import init_db, session_scope
        from storage.models import Run
        from storage.repo import create_api_key, create_tenant

        settings = get_settings().model_copy(
            update={"prefect": settings.prefect.model_copy(update={"api_url": prefect.url})}
        )
        init_db()
        with session_scope() as session:
            create_tenant(session, tenant_id="bench", name="bench")
            key = create_api_key(session, tenant_id="bench", name="bench").plaintext
        filmroom = str(Path(sys.executable).parent / "filmroom")
        runner = subprocess.Popen([filmroom, "serve-flows"], start_new_session=True)
        # as `filmroom up` does: hands over again runs a busy Prefect server refused at submit
        reconciler = subprocess.Popen(
            [filmroom, "reconcile", "--every", "10", "--hand-over-after", "20"], start_new_session=True
        )
        try:
            _wait_for_deployment(prefect.url, settings.prefect.run_deployment, runner)
            url, server = _serve(create_app(settings))
            _bench(args, url, key, str(video[0].video_path), session_scope, Run)
            server.should_exit = True
        finally:
            for process in (reconciler, runner):
                process.terminate()
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
            cluster.close()


def _bench(
    args: argparse.Namespace, url: str, key: str, video: str, session_scope: object, run: type
) -> None:
    body = {"job": {"type": "breakdown", "videos": [{"url": video}], "sport": "soccer"}}
    headers = {"Authorization": f"Bearer {key}"}
    accepted: set[str] = set()
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        job_id = client.post("/v1/jobs", json=body).json()["job_id"]
        accepted.add(job_id)
        gets = _paced(lambda: client.get(f"/v1/jobs/{job_id}").raise_for_status(), args.rate, args.seconds)

        def post() -> None:
            response = client.post("/v1/jobs", json=body)
            if response.status_code < 300:
                accepted.add(response.json()["job_id"])

        posts = _paced(post, args.rate / 4, args.seconds)
    for name, rate, values in (
        ("GET  /v1/jobs/{id}", args.rate, gets),
        ("POST /v1/jobs", args.rate / 4, posts),
    ):
        p50, p99 = _pct(values, 0.5), _pct(values, 0.99)
        print(f"{name:18s} at {rate:4.1f}/s: p50 {p50:6.1f} ms  p99 {p99:6.1f} ms")
    before_burst = len(accepted)

    def submit(_: int) -> tuple[int, str | None]:
        with httpx.Client(base_url=url, headers=headers, timeout=180) as c:
            response = c.post("/v1/jobs", json=body)
            return response.status_code, response.json().get("job_id")

    started = time.perf_counter()
    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(submit, range(args.burst)))
    seconds = time.perf_counter() - started
    burst_accepted = {j for c, j in answers if 200 <= c < 300 and j}
    accepted |= burst_accepted
    limited = sum(1 for c, _ in answers if c == 429)
    other = collections.Counter(c for c, _ in answers if not (200 <= c < 300 or c == 429))
    with session_scope() as session:  # type: ignore[operator]
        stored = {str(r.job_id): r.flow_run_id for r in session.query(run).all()}
    lost = [j for j in accepted if j not in stored or not stored[j]]
    print(
        f"burst of {args.burst} in {seconds:.1f} s: {len(burst_accepted)} accepted (2xx), {limited} "
        f"rate-limited (429), other answers {dict(other) or 'none'}; accepted jobs without a run row or "
        f"flow run: {len(lost)}"
    )
    started = time.perf_counter()
    deadline = time.monotonic() + args.settle_timeout
    statuses: dict[str, str] = {}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        while time.monotonic() < deadline:
            for job in sorted(accepted - {j for j, s in statuses.items() if s in TERMINAL}):
                statuses[job] = client.get(f"/v1/jobs/{job}").json()["status"]
            if all(statuses.get(j) in TERMINAL for j in accepted):
                break
            time.sleep(5)
    counts = collections.Counter(statuses.values())
    print(
        f"{len(accepted)} accepted jobs ({before_burst} before the burst): statuses after "
        f"{time.perf_counter() - started:.0f} s: {dict(counts)}; "
        f"{sum(counts[s] for s in TERMINAL)} terminal"
    )


if __name__ == "__main__":
    main()
