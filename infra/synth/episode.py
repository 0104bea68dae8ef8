"""Episode clips for the broadcast path: hard-cut scenes of a small cast, with real faces.

The faces are real photographs that ship inside scikit-image (``skimage.data.lfw_subset()``: its first
100 images are faces of different people, 25x25 grey), never downloaded. Each cast member keeps one
face; every scene varies its scale, brightness, tilt and position, so a face is never a pixel-identical
paste. Ground truth: per frame and visible cast member, the face box and the head-and-shoulders box.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import polars as pl

from infra.synth.encode import write_mp4
from infra.synth.spec import GENERATOR_VERSION, EpisodeSpec, SynthClip

EPISODE_TRUTH_SCHEMA: dict[str, Any] = {
    "frame": pl.Int32,
    "time_s": pl.Float64,
    "scene": pl.Int16,
    "cast_id": pl.Int32,
    "face_x1": pl.Float32,
    "face_y1": pl.Float32,
    "face_x2": pl.Float32,
    "face_y2": pl.Float32,
    "x1": pl.Float32,
    "y1": pl.Float32,
    "x2": pl.Float32,
    "y2": pl.Float32,
    "visible_fraction": pl.Float32,
}
CLOTHES = ((60, 60, 160), (140, 90, 40), (50, 120, 50), (120, 120, 120), (30, 30, 30), (180, 160, 200))


@lru_cache(maxsize=1)
def _faces() -> np.ndarray:
    from skimage import data

    faces = data.lfw_subset()[:100]  # the first 100 are faces, the rest are not
    return np.asarray((faces * 255).clip(0, 255).astype(np.uint8))


@dataclass(frozen=True)
class Appearance:
    cast_id: int
    centre: tuple[float, float]  # face centre, fraction of the frame
    drift: tuple[float, float]  # pixels per second
    face_px: int
    angle_deg: float
    gain: float
    clothes: tuple[int, int, int]


@dataclass(frozen=True)
class Scene:
    index: int
    start: int
    end: int  # exclusive frame
    background: tuple[tuple[int, int, int], tuple[int, int, int]]
    cast: tuple[Appearance, ...]


def cast_faces(spec: EpisodeSpec) -> list[int]:
    """The lfw index of each cast member (cast id = position + 1)."""
    rng = np.random.default_rng([spec.seed, 11])
    return [int(i) for i in rng.choice(100, size=spec.cast_size, replace=False)]


def plan_scenes(spec: EpisodeSpec) -> list[Scene]:
    rng = np.random.default_rng([spec.seed, 12])
    scenes: list[Scene] = []
    frame = 0
    while frame < spec.frame_count:
        length = max(1, round(rng.uniform(spec.scene_min_s, spec.scene_max_s) * spec.fps))
        count = int(rng.integers(1, min(3, spec.cast_size) + 1))
        members = rng.choice(spec.cast_size, size=count, replace=False)
        slots = np.linspace(0.2, 0.8, count) if count > 1 else np.array([rng.uniform(0.35, 0.65)])
        cast = tuple(
            Appearance(
                cast_id=int(m) + 1,
                centre=(float(slots[k] + rng.uniform(-0.04, 0.04)), float(rng.uniform(0.35, 0.45))),
                drift=(float(rng.uniform(-8, 8)), float(rng.uniform(-3, 3))),
                face_px=int(rng.integers(110, 170) * spec.height / 720),
                angle_deg=float(rng.uniform(-6, 6)),
                gain=float(rng.uniform(0.85, 1.15)),
                clothes=CLOTHES[int(rng.integers(len(CLOTHES)))],
            )
            for k, m in enumerate(members)
        )
        top = tuple(int(v) for v in rng.integers(40, 200, 3))
        bottom = tuple(int(v) for v in rng.integers(20, 120, 3))
        scenes.append(Scene(len(scenes), frame, min(spec.frame_count, frame + length), (top, bottom), cast))  # type: ignore[arg-type]
        frame += length
    return scenes


def _background(spec: EpisodeSpec, scene: Scene) -> np.ndarray:
    top, bottom = (np.array(c, np.float32) for c in scene.background)
    ramp = np.linspace(0, 1, spec.height, dtype=np.float32)[:, None, None]
    image = (top * (1 - ramp) + bottom * ramp).repeat(spec.width, axis=1)
    return image.astype(np.uint8)


def _face_image(face: np.ndarray, size: int, angle: float, gain: float) -> np.ndarray:
    big = cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC)
    rot = cv2.getRotationMatrix2D((size / 2, size / 2), angle, 1.0)
    big = cv2.warpAffine(big, rot, (size, size), borderMode=cv2.BORDER_REFLECT)
    big = np.clip(big.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    return np.asarray(cv2.cvtColor(big, cv2.COLOR_GRAY2BGR))


@dataclass(frozen=True)
class EpisodeFrame:
    frame: int
    time_s: float
    image: np.ndarray
    ground_truth: list[dict[str, Any]]


def iter_episode_frames(spec: EpisodeSpec) -> Iterator[EpisodeFrame]:
    faces = _faces()
    chosen = cast_faces(spec)
    for scene in plan_scenes(spec):
        base = _background(spec, scene)
        prepared = {
            a.cast_id: _face_image(faces[chosen[a.cast_id - 1]], a.face_px, a.angle_deg, a.gain)
            for a in scene.cast
        }
        for frame in range(scene.start, scene.end):
            t = frame / spec.fps
            dt = (frame - scene.start) / spec.fps
            image = base.copy()
            rows = []
            for a in scene.cast:
                cx = a.centre[0] * spec.width + a.drift[0] * dt
                cy = a.centre[1] * spec.height + a.drift[1] * dt
                rows.append(_draw_member(image, prepared[a.cast_id], a, cx, cy, frame, t, scene.index, spec))
            yield EpisodeFrame(frame, t, image, [r for r in rows if r is not None])


def _draw_member(
    image: np.ndarray,
    face: np.ndarray,
    a: Appearance,
    cx: float,
    cy: float,
    frame: int,
    t: float,
    scene: int,
    spec: EpisodeSpec,
) -> dict[str, Any] | None:
    s = a.face_px
    # Shoulders: a wide ellipse below the face, then the neck, then the face itself.
    shoulders_c = (round(cx), round(cy + 1.35 * s))
    cv2.ellipse(
        image, shoulders_c, (round(1.1 * s), round(0.75 * s)), 0, 180, 360, a.clothes, -1, cv2.LINE_AA
    )
    cv2.rectangle(
        image,
        (round(cx - 1.1 * s), shoulders_c[1]),
        (round(cx + 1.1 * s), round(cy + 2.2 * s)),
        a.clothes,
        -1,
    )
    cv2.rectangle(
        image,
        (round(cx - 0.2 * s), round(cy + 0.4 * s)),
        (round(cx + 0.2 * s), shoulders_c[1]),
        (120, 150, 190),
        -1,
    )
    x0, y0 = round(cx - s / 2), round(cy - s / 2)
    fx0, fy0 = max(0, x0), max(0, y0)
    fx1, fy1 = min(spec.width, x0 + s), min(spec.height, y0 + s)
    if fx0 >= fx1 or fy0 >= fy1:
        return None
    image[fy0:fy1, fx0:fx1] = face[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
    px0, py0 = max(0.0, cx - 1.1 * s), max(0.0, cy - s / 2)
    px1, py1 = min(float(spec.width), cx + 1.1 * s), min(float(spec.height), cy + 2.2 * s)
    return {
        "frame": frame,
        "time_s": t,
        "scene": scene,
        "cast_id": a.cast_id,
        "face_x1": float(fx0),
        "face_y1": float(fy0),
        "face_x2": float(fx1),
        "face_y2": float(fy1),
        "x1": px0,
        "y1": py0,
        "x2": px1,
        "y2": py1,
        "visible_fraction": (fx1 - fx0) * (fy1 - fy0) / (s * s),
    }


def render_episode(spec: EpisodeSpec, out_dir: Path) -> SynthClip:
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []

    def frames() -> Iterator[np.ndarray]:
        for rendered in iter_episode_frames(spec):
            rows.extend(rendered.ground_truth)
            yield rendered.image

    video = out_dir / f"{spec.name}.mp4"
    count = write_mp4(video, frames(), spec.fps, spec.width, spec.height, spec.encode)
    truth = out_dir / f"{spec.name}.gt.parquet"
    pl.DataFrame(rows, schema=EPISODE_TRUTH_SCHEMA).write_parquet(truth)
    sidecar = out_dir / f"{spec.name}.json"
    sidecar.write_text(
        json.dumps(
            {
                "kind": "episode",
                "generator_version": GENERATOR_VERSION,
                "spec": spec.model_dump(mode="json"),
                "frame_count": count,
                "cast": [{"cast_id": i + 1, "lfw_index": idx} for i, idx in enumerate(cast_faces(spec))],
                "scenes": [
                    {"scene": s.index, "start_frame": s.start, "end_frame": s.end} for s in plan_scenes(spec)
                ],
            },
            indent=2,
        )
    )
    return SynthClip(video, truth, sidecar, count, time.perf_counter() - started)
