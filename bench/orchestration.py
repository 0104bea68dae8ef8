"""Benchmark: what Prefect + Dask cost a run, and the whole flow against the plain ultralytics loop.

On one synthetic 720p clip (``--seconds``; issue 5 asks for 60 s and 10 min), in one process and one
run (these machines are noisy: only figures measured side by side mean anything):

  flow        the run flow (``flows.run.run_flow``) on a real Prefect server and a warm 2-worker Dask
              LocalCluster (the detector already loaded, as under ``filmroom up``), after one warm-up
              flow on a short clip; wall time, and from Prefect the task runs and their run times
  bare        the same stage functions (``task.fn``) wired by hand on the same cluster: no Prefect,
              no statuses, no UI artifacts. flow − bare = what orchestration costs this run
  no-op       flows of 0 and N no-op tasks on the same task runner: Prefect + Dask cost per run and
              per task, alone
  plain loop  ``model.track(stream=True, vid_stride=...)`` from bench/detect_track.py (imported, not
              copied), same image size and sampling: on the trained .pt weights (what a user would
              run), their float ONNX export, and the int8 ONNX build the flow runs by default

Run:  .venv/bin/python bench/orchestration.py [--seconds 60] [--fps 5] [--noop-tasks 40] [--clip X.mp4]
(``--clip``: a clip rendered earlier with ``filmroom synth``, as a 10-minute one takes ~20 min to render)
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import shutil
import socket
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

os.environ.setdefault("YOLO_OFFLINE", "1")  # noqa: TID251 -- a script's own process, before any import
os.environ.setdefault("YOLO_AUTOINSTALL", "0")  # noqa: TID251
os.environ.setdefault("YOLO_CONFIG_DIR", "/tmp/yolo-cfg")  # noqa: TID251

BENCH = Path(__file__).resolve().parent


def _plain_loop() -> Any:
    """bench/detect_track.py's plain ultralytics loop, imported by path (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location("bench_detect_track", BENCH / "detect_track.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.plain_loop


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _configure(root: Path, fps: float) -> None:
    footage = root / "footage"
    footage.mkdir(parents=True, exist_ok=True)
    env = {
        "FILMROOM_PROFILE": "test",
        "FILMROOM_DATA_DIR": str(root / "var"),
        "FILMROOM_STORAGE__ROOT": str(root / "artifacts"),
        "FILMROOM_STORAGE__FOOTAGE_DIR": str(footage),
        "FILMROOM_DATABASE__URL": f"sqlite:///{root / 'filmroom.db'}",
        "FILMROOM_INGEST__ALLOWED_ROOTS": f'["{footage}"]',
        "FILMROOM_DETECT__ANALYSIS_FPS": str(fps),
        "FILMROOM_PREFECT__SERVER_PORT": str(_free_port()),  # a private server, never another's 4200
    }
    os.environ.update(env)  # noqa: TID251 -- the Dask workers started below inherit it


def _new_run(video: Path, title: str) -> str:
    from storage.db import session_scope
    from storage.models import EventKind, JobType, Tenant
    from storage.repo import create_event, create_run, create_tenant

    with session_scope() as session:
        if session.get(Tenant, "bench") is None:
            create_tenant(session, tenant_id="bench", name="bench")
        event = create_event(
            session,
            tenant_id="bench",
            kind=EventKind.game,
            sport="soccer",
            title=title,
            sources=[{"angle": "main", "uri": str(video)}],
        )
        run, _ = create_run(session, tenant_id="bench", event_id=event.id, job_type=JobType.breakdown)
        return run.id


def _timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - started


def run_bare(run_id: str, client: Any) -> tuple[float, dict[str, float], int]:
    """The run's stages without Prefect: wall seconds, compute seconds per stage, number of stage calls."""
    from flows.dag import Stage
    from flows.run import RunContext, _detect_params
    from infra.settings import get_settings
    from tasks.cluster import ClusterParams, cluster_task
    from tasks.detect_track import detect_track_task
    from tasks.detector import resolve_weights
    from tasks.embed import EmbedParams, collect_embeddings_task, embed_task
    from tasks.export import export_task
    from tasks.ingest import ingest_task
    from tasks.screentime import screentime_task
    from tasks.stitch import stitch_task
    from tasks.validate import ValidateParams, validate_task

    compute: dict[str, float] = defaultdict(float)
    calls = 0

    def here(stage: Stage, fn: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        result, seconds = _timed(fn, *args, **kwargs)
        compute[stage.value] += seconds
        calls += 1
        return result

    def mapped(stage: Stage, fn: Any, chunks: list[Any], *args: Any) -> None:
        nonlocal calls
        futures = [client.submit(_timed, fn, ref, chunk, *args, pure=False) for chunk in chunks]
        for _, seconds in client.gather(futures):
            compute[stage.value] += seconds
        calls += len(chunks)

    started = time.perf_counter()
    ctx = RunContext(run_id)
    ref, settings = ctx.ref, get_settings()
    detect = _detect_params(ctx.params)
    plan = here(
        Stage.ingest,
        ingest_task.fn,
        ref,
        ctx.sources,
        settings.detect.chunk_seconds,
        settings.detect.overlap_seconds,
    )
    mapped(Stage.detect_track, detect_track_task.fn, plan.chunks, detect)
    here(Stage.stitch, stitch_task.fn, ref, plan.chunks)
    mapped(Stage.embed, embed_task.fn, plan.chunks, EmbedParams())
    here(Stage.embed, collect_embeddings_task.fn, ref, plan.chunks)
    here(Stage.cluster, cluster_task.fn, ref, ctx.kind.value, ClusterParams(), ctx.corrections)
    here(
        Stage.validate,
        validate_task.fn,
        ref,
        ctx.kind.value,
        ValidateParams(analysis_fps=detect.analysis_fps),
    )
    here(Stage.screentime, screentime_task.fn, ref, ctx.preset, detect.analysis_fps)
    here(
        Stage.export,
        export_task.fn,
        ref,
        event=ctx.event,
        run=ctx.run,
        models={"detector": resolve_weights(detect.weights).name},
        corrections_applied=0,
    )
    return time.perf_counter() - started, dict(compute), calls


def run_flow_measured(run_id: str, api_url: str) -> tuple[float, list[Any]]:
    """The run flow, timed from here; and its task runs as Prefect recorded them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.run import run_flow
    from infra.cluster import make_task_runner
    from infra.settings import get_settings
    from storage.db import session_scope
    from storage.repo import get_run_by_id

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        flow = run_flow.with_options(task_runner=make_task_runner(get_settings()))
        state, wall = _timed(flow, run_id, return_state=True)
        with session_scope() as session:
            run = get_run_by_id(session, run_id=run_id)
        assert run is not None and run.status == "file_ready", (run.status, run.errors) if run else run_id

        async def task_runs() -> list[Any]:
            flow_filter = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
            async with get_client() as client:
                for _ in range(30):  # task-run states reach the server as events, a moment later
                    runs = await client.read_task_runs(flow_run_filter=flow_filter)
                    if runs and all(r.state is not None and r.state.is_final() for r in runs):
                        return list(runs)
                    await asyncio.sleep(0.5)
                return list(runs)

        return wall, asyncio.run(task_runs())


def noop(_: int) -> int:
    return _


def noop_overhead(api_url: str, n_tasks: int, repeats: int) -> tuple[float, float, float]:
    """Median wall of an empty flow, and per no-op task run one after another / all at once."""
    from prefect import flow, task
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from infra.cluster import make_task_runner
    from infra.settings import get_settings

    step = task(name="noop")(noop)
    runner = make_task_runner(get_settings())

    @flow(name="bench-noop", task_runner=runner)
    def empty() -> None:
        pass

    @flow(name="bench-noop-serial", task_runner=runner)
    def serial(n: int) -> None:
        for i in range(n):
            step.submit(i).result()

    @flow(name="bench-noop-mapped", task_runner=runner)
    def mapped(n: int) -> None:
        for future in [step.submit(i) for i in range(n)]:
            future.result()

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        empty()  # warm-up
        walls: dict[str, list[float]] = {name: [] for name in ("empty", "serial", "mapped")}
        for _ in range(repeats):
            walls["empty"].append(_timed(empty)[1])
            walls["serial"].append(_timed(serial, n_tasks)[1])
            walls["mapped"].append(_timed(mapped, n_tasks)[1])
    base = statistics.median(walls["empty"])
    per_serial = (statistics.median(walls["serial"]) - base) / n_tasks
    per_mapped = (statistics.median(walls["mapped"]) - base) / n_tasks
    return base, per_serial, per_mapped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="clip length (issue 5: 60 and 600)")
    parser.add_argument("--fps", type=float, default=5.0, help="analysed frames per second of footage")
    parser.add_argument("--noop-tasks", type=int, default=40, help="tasks of the no-op flows")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the no-op flows")
    parser.add_argument("--skip-pt", action="store_true", help="skip the plain loop on the .pt weights")
    parser.add_argument(
        "--clip", type=Path, help="an already rendered 720p clip (copied in) instead of --seconds"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _configure(root, args.fps)
        import av
        from distributed import Client, LocalCluster

        from infra.settings import get_settings
        from infra.stack import PrefectServer
        from infra.synth import GameSpec, render_game
        from infra.synth.spec import EncodeSpec
        from storage.db import init_db
        from tasks.detect_track import DetectParams, warm_worker
        from tasks.detector import BUNDLED_FLOAT_WEIGHTS, BUNDLED_WEIGHTS, ensure_offline

        ensure_offline()
        settings = get_settings()
        footage = Path(settings.storage.footage_dir)
        started = time.perf_counter()
        if args.clip:
            footage.mkdir(parents=True, exist_ok=True)
            clip_path = Path(shutil.copyfile(args.clip, footage / "bench.mp4"))
            with av.open(str(clip_path)) as container:
                args.seconds = float(container.duration or 0) / av.time_base
        else:
            clip_path = render_game(
                GameSpec(name="bench", duration_s=args.seconds, seed=7, encode=EncodeSpec(keyint=50)), footage
            )[0].video_path
        warm_clip = render_game(
            GameSpec(name="warm", duration_s=6.0, seed=8, encode=EncodeSpec(keyint=50)), footage
        )[0]
        print(
            f"clip: {args.seconds:.0f} s 720p, analysing {args.fps} fps; "
            f"rendered in {time.perf_counter() - started:.0f} s"
        )
        init_db()

        with (
            PrefectServer.ensure(settings) as prefect,
            LocalCluster(
                n_workers=settings.dask.n_workers,
                threads_per_worker=settings.dask.threads_per_worker,
                processes=True,
                dashboard_address=":0",
            ) as cluster,
            Client(cluster) as client,
        ):
            os.environ["FILMROOM_DASK__ADDRESS"] = cluster.scheduler_address  # noqa: TID251
            get_settings.cache_clear()
            params = DetectParams(analysis_fps=args.fps)
            client.run(warm_worker, params)  # warm workers, as under `filmroom up`
            print(
                f"prefect {prefect.url}, dask {cluster.scheduler_address} ({len(client.nthreads())} workers)"
            )

            run_flow_measured(_new_run(warm_clip.video_path, "warm-up"), prefect.url)
            flow_wall, task_runs = run_flow_measured(_new_run(clip_path, "flow"), prefect.url)
            bare_wall, bare_compute, bare_calls = run_bare(_new_run(clip_path, "bare"), client)
            base, per_serial, per_mapped = noop_overhead(prefect.url, args.noop_tasks, args.repeats)

        plain_loop = _plain_loop()
        stride = round(25 / args.fps)
        plain_onnx, frames = plain_loop(BUNDLED_WEIGHTS, clip_path, params, stride)
        plain_float = plain_loop(BUNDLED_FLOAT_WEIGHTS, clip_path, params, stride)[0]
        plain_pt = (
            None
            if args.skip_pt
            else plain_loop(BUNDLED_FLOAT_WEIGHTS.with_suffix(".pt"), clip_path, params, stride)[0]
        )

    by_stage: dict[str, list[float]] = defaultdict(list)
    for task_run in task_runs:
        # task-run names start with the stage's task name (embed-collect counts as embed)
        by_stage[task_run.name.split("-")[0]].append(task_run.total_run_time.total_seconds())
    task_sum = sum(sum(v) for v in by_stage.values())
    n_tasks = len(task_runs)
    print()
    print(f"{'stage (Prefect task runs)':28s} {'runs':>5s} {'run time':>9s}   {'bare compute':>12s}")
    for stage in sorted(set(by_stage) | set(bare_compute)):
        runs = by_stage.get(stage, [])
        print(f"{stage:28s} {len(runs):5d} {sum(runs):8.2f}s   {bare_compute.get(stage, 0.0):11.2f}s")
    bare_sum = sum(bare_compute.values())
    print(f"{'sum':28s} {n_tasks:5d} {task_sum:8.2f}s   {bare_sum:11.2f}s ({bare_calls} calls)")
    print()
    overhead = flow_wall - bare_wall
    modelled = base + per_serial * n_tasks
    print(
        f"flow wall                      {flow_wall:8.2f} s   (sum of its task run times {task_sum:.2f} s: "
        f"{task_sum / flow_wall:.2f}x parallel)"
    )
    print(f"bare wall (no Prefect)         {bare_wall:8.2f} s   (sum of stage compute {bare_sum:.2f} s)")
    print(
        f"orchestration: flow - bare     {overhead:8.2f} s   = {overhead / flow_wall:.1%} of the flow's wall "
        f"({overhead / n_tasks:.3f} s per task run if all per task; goal < 5% on the 10 min clip)"
    )
    print(f"no-op flow (per run)           {base:8.2f} s   (goal <= 3 s)")
    print(f"no-op task, one after another  {per_serial:8.3f} s   (goal <= 0.3 s per task)")
    print(f"no-op task, {args.noop_tasks} at once        {per_mapped:8.3f} s")
    print(
        f"bound: run + {n_tasks} tasks         {modelled:8.2f} s   = {modelled / flow_wall:.1%} "
        "of the flow's wall (if every task's overhead were serial and on the critical path)"
    )
    print()
    loops = [("int8 .onnx", plain_onnx), ("float .onnx", plain_float)]
    if plain_pt is not None:
        loops.insert(0, (".pt, what a user runs", plain_pt))
    for name, wall in loops:
        print(f"plain ultralytics loop ({name}) {wall:8.2f} s   {frames} frames")
    for i, (name, wall) in enumerate(loops):
        goal = "   (goal <= 0.5 on the 10 min clip)" if i == 0 else ""
        print(f"flow / plain loop ({name}) {flow_wall / wall:8.2f}{goal}")
    print(
        f"speed vs real time             {args.seconds / flow_wall:8.2f}x    (goal >= 4x on the 10 min clip)"
    )


if __name__ == "__main__":
    main()
