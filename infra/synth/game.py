"""Game clips: the simulated match seen through each camera angle, as MP4 + ground truth + sidecar.

``iter_game_frames`` is the single source of pixels and ground truth: the MP4 writer and the
detector's training-set export both consume it, so what a model learns from and what it is scored
on are drawn by the same code.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from infra.synth.audio import match_audio
from infra.synth.camera import LOOKAHEAD_S, CameraPath, CameraPose
from infra.synth.encode import write_mp4
from infra.synth.figures import composite, draw_ball, draw_figure, draw_shadow, kit_for, tight_box
from infra.synth.pitch import build_stadium, draw_goals, render_background
from infra.synth.spec import GENERATOR_VERSION, AngleSpec, GameSpec, SynthClip, resolve_color
from infra.synth.world import World, simulate_world

GROUND_TRUTH_SCHEMA: dict[str, Any] = {
    "frame": pl.Int32,
    "time_s": pl.Float64,
    "person_id": pl.Int32,
    "team": pl.Utf8,
    "role": pl.Utf8,
    "jersey_number": pl.Int16,
    "x1": pl.Float32,
    "y1": pl.Float32,
    "x2": pl.Float32,
    "y2": pl.Float32,
    "visible_fraction": pl.Float32,
    "angle": pl.Utf8,
}
# The ball is not a person: it gets its own small table, one row per frame.
BALL_SCHEMA: dict[str, Any] = {
    "frame": pl.Int32,
    "time_s": pl.Float64,
    "world_time_s": pl.Float64,
    "x": pl.Float32,  # pixel centre (may lie outside the frame)
    "y": pl.Float32,
    "radius_px": pl.Float32,
    "in_view": pl.Boolean,
    "world_x": pl.Float32,
    "world_y": pl.Float32,
    "world_z": pl.Float32,
}


@dataclass(frozen=True)
class RenderedFrame:
    frame: int
    time_s: float  # video time (seconds from this angle's first frame)
    image: np.ndarray  # (H, W, 3) BGR uint8
    ground_truth: list[dict[str, Any]] = field(default_factory=list)
    ball: tuple[float, float] | None = None  # pixel position of the ball, if in view
    ball_truth: dict[str, Any] = field(default_factory=dict)  # one BALL_SCHEMA row


def _ball_truth(
    frame: int, video_t: float, world_t: float, ball: np.ndarray, pose: CameraPose
) -> dict[str, Any]:
    uv, depth = pose.project(ball)
    radius = 0.11 * pose.focal_px / float(depth[0]) if depth[0] > 0.5 else 0.0
    x, y = float(uv[0, 0]), float(uv[0, 1])
    in_view = depth[0] > 0.5 and -radius <= x < pose.width + radius and -radius <= y < pose.height + radius
    return {
        "frame": frame,
        "time_s": video_t,
        "world_time_s": world_t,
        "x": x,
        "y": y,
        "radius_px": radius,
        "in_view": bool(in_view),
        "world_x": float(ball[0]),
        "world_y": float(ball[1]),
        "world_z": float(ball[2]),
    }


def simulate(spec: GameSpec) -> World:
    horizon = spec.duration_s + max(a.offset_s for a in spec.angles) + LOOKAHEAD_S + 1.0
    return simulate_world(spec.players_per_team, spec.referees, spec.seed, horizon)


def iter_game_frames(
    spec: GameSpec, angle: str | None = None, world: World | None = None, only: set[int] | None = None
) -> Iterator[RenderedFrame]:
    """Every frame of one angle (or the frames in ``only``) with its ground truth, deterministic by seed."""
    chosen: AngleSpec = spec.angle(angle)
    world = world or simulate(spec)
    stadium = build_stadium(spec.seed, spec.width)
    path = CameraPath(world, chosen.preset, spec.camera_motion, spec.width, spec.height, chosen.name)
    home, away = resolve_color(spec.home_color), resolve_color(spec.away_color)
    kits = [kit_for(p, home, away) for p in world.persons]
    for frame in range(spec.frame_count):
        if only is not None and frame not in only:
            continue
        video_t = frame / spec.fps
        sample = world.sample(video_t + chosen.offset_s)
        pose = path.pose(sample.time_s)
        image = render_background(stadium, pose)
        draw_goals(image, pose)
        for i in range(len(world.persons)):
            draw_shadow(image, pose, sample.pos[i])
        draw_ball(image, pose, sample.ball)
        figures = []
        for i, person in enumerate(world.persons):
            fig = draw_figure(person, i, sample.pos[i], sample.vel[i], float(sample.phase[i]), kits[i], pose)
            if fig is not None:
                figures.append(fig)
        owner = composite(image, figures)
        visible_counts = np.bincount(owner[owner >= 0], minlength=len(world.persons))
        rows = []
        for fig in figures:
            box = tight_box(fig, spec.width, spec.height)
            visible = int(visible_counts[fig.person_index])
            if box is None or visible == 0:
                continue
            person = world.persons[fig.person_index]
            rows.append(
                {
                    "frame": frame,
                    "time_s": video_t,
                    "person_id": person.person_id,
                    "team": person.team.value,
                    "role": person.role.value,
                    "jersey_number": person.jersey_number,
                    "x1": box[0],
                    "y1": box[1],
                    "x2": box[2],
                    "y2": box[3],
                    "visible_fraction": visible / fig.pixels,
                    "angle": chosen.name,
                }
            )
        rows.sort(key=lambda r: r["person_id"])
        ball = _ball_truth(frame, video_t, sample.time_s, sample.ball, pose)
        ball_px = (ball["x"], ball["y"]) if ball["in_view"] else None
        yield RenderedFrame(frame, video_t, image, rows, ball_px, ball)


def render_game(spec: GameSpec, out_dir: Path) -> list[SynthClip]:
    """One MP4 + ground-truth Parquet + sidecar JSON per angle of ``spec``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    world = simulate(spec)
    clips = []
    for angle in spec.angles:
        started = time.perf_counter()
        stem = spec.name if len(spec.angles) == 1 else f"{spec.name}_{angle.name}"
        video = out_dir / f"{stem}.mp4"
        rows: list[dict[str, Any]] = []
        balls: list[dict[str, Any]] = []

        def frames(
            angle_name: str = angle.name,
            sink: list[dict[str, Any]] = rows,
            ball_sink: list[dict[str, Any]] = balls,
        ) -> Iterator[np.ndarray]:
            for rendered in iter_game_frames(spec, angle_name, world):
                sink.extend(rendered.ground_truth)
                ball_sink.append(rendered.ball_truth)
                yield rendered.image

        audio = match_audio(world, angle.offset_s, spec.duration_s) if spec.with_audio else None
        count = write_mp4(video, frames(), spec.fps, spec.width, spec.height, spec.encode, audio=audio)
        truth = out_dir / f"{stem}.gt.parquet"
        pl.DataFrame(rows, schema=GROUND_TRUTH_SCHEMA).write_parquet(truth)
        ball_path = out_dir / f"{stem}.ball.parquet"
        pl.DataFrame(balls, schema=BALL_SCHEMA).write_parquet(ball_path)
        sidecar = out_dir / f"{stem}.json"
        sidecar.write_text(
            json.dumps(
                {
                    "kind": "game",
                    "generator_version": GENERATOR_VERSION,
                    "spec": spec.model_dump(mode="json"),
                    "angle": angle.model_dump(mode="json"),
                    "frame_count": count,
                    "angle_time_offset_s": angle.offset_s,
                    "audio": spec.with_audio,
                    "files": {"video": video.name, "ground_truth": truth.name, "ball": ball_path.name},
                    "whistles": _whistles(world, angle.offset_s, spec.duration_s),
                    "teams": {
                        "home": list(resolve_color(spec.home_color)),
                        "away": list(resolve_color(spec.away_color)),
                    },
                    "persons": [
                        {
                            "person_id": p.person_id,
                            "team": p.team.value,
                            "role": p.role.value,
                            "jersey_number": p.jersey_number,
                        }
                        for p in world.persons
                    ],
                },
                indent=2,
            )
        )
        elapsed = time.perf_counter() - started
        clips.append(SynthClip(video, truth, sidecar, count, elapsed, angle=angle.name, ball_path=ball_path))
    return clips


def _whistles(world: World, offset_s: float, duration_s: float) -> list[dict[str, float]]:
    """Whistles heard in this angle, in world time and in this video's time (for audio sync checks)."""
    return [
        {"world_time_s": w.time_s, "video_time_s": w.time_s - offset_s, "duration_s": w.duration_s}
        for w in world.whistles
        if offset_s - w.duration_s < w.time_s < offset_s + duration_s
    ]
