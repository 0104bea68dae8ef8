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
    "face_visible_fraction": pl.Float32,
}
ASTRONAUT = -1  # cast_faces() value for skimage's astronaut photo instead of an LFW face
_ASTRONAUT_FACE = (slice(72, 177), slice(170, 275))  # eyebrows to chin, like the LFW crops
CLOTHES = ((60, 60, 160), (140, 90, 40), (50, 120, 50), (120, 120, 120), (30, 30, 30), (180, 160, 200))


@lru_cache(maxsize=1)
def _faces() -> np.ndarray:
    from skimage import data

    faces = data.lfw_subset()[:100]  # the first 100 are faces, the rest are not
    return np.asarray((faces * 255).clip(0, 255).astype(np.uint8))


@lru_cache(maxsize=1)
def _astronaut_face() -> np.ndarray:
    from skimage import data

    grey = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)
    return np.asarray(grey[_ASTRONAUT_FACE])


def face_source(index: int) -> np.ndarray:
    """The grey uint8 face photo behind a cast member: an LFW image, or the astronaut."""
    return _astronaut_face() if index == ASTRONAUT else np.asarray(_faces()[index])


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
    """The lfw index of each cast member (cast id = position + 1); ASTRONAUT marks the astronaut."""
    rng = np.random.default_rng([spec.seed, 11])
    chosen = [int(i) for i in rng.choice(100, size=spec.cast_size, replace=False)]
    if spec.include_astronaut:
        # A stream of its own, so casts without the astronaut are unchanged by the option.
        chosen[int(np.random.default_rng([spec.seed, 13]).integers(spec.cast_size))] = ASTRONAUT
    return chosen


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
    """Every frame with its ground truth; cast members later in a scene's list stand in front."""
    chosen = cast_faces(spec)
    for scene in plan_scenes(spec):
        base = _background(spec, scene)
        prepared = {
            a.cast_id: _face_image(face_source(chosen[a.cast_id - 1]), a.face_px, a.angle_deg, a.gain)
            for a in scene.cast
        }
        for frame in range(scene.start, scene.end):
            t = frame / spec.fps
            dt = (frame - scene.start) / spec.fps
            image = base.copy()
            owner = np.full((spec.height, spec.width), -1, np.int16)
            drawn = []
            for k, a in enumerate(scene.cast):
                cx = a.centre[0] * spec.width + a.drift[0] * dt
                cy = a.centre[1] * spec.height + a.drift[1] * dt
                drawn.append(_draw_member(image, owner, k, prepared[a.cast_id], a, cx, cy))
            rows = [
                _truth_row(member, owner, k, a, frame, t, scene.index)
                for k, (a, member) in enumerate(zip(scene.cast, drawn, strict=True))
            ]
            yield EpisodeFrame(frame, t, image, [r for r in rows if r is not None])


@dataclass(frozen=True)
class _Member:
    """Where one cast member's pixels went: a mask in local coordinates and the face square."""

    mask: np.ndarray  # bool, drawn pixels including any outside the frame
    x0: int
    y0: int
    face: tuple[int, int, int]  # x0, y0, size of the pasted face square, in frame pixels


def _shapes(canvas: np.ndarray, color: Any, a: Appearance, cx: float, cy: float, ox: int, oy: int) -> None:
    """Shoulders, chest and neck; drawn identically into the frame and into a member's own mask."""
    s = a.face_px
    shoulders_c = (round(cx) - ox, round(cy + 1.35 * s) - oy)
    cv2.ellipse(canvas, shoulders_c, (round(1.1 * s), round(0.75 * s)), 0, 180, 360, color, -1, cv2.LINE_AA)
    chest = ((round(cx - 1.1 * s) - ox, shoulders_c[1]), (round(cx + 1.1 * s) - ox, round(cy + 2.2 * s) - oy))
    cv2.rectangle(canvas, chest[0], chest[1], color, -1)
    neck_color = (120, 150, 190) if canvas.ndim == 3 else color
    neck = ((round(cx - 0.2 * s) - ox, round(cy + 0.4 * s) - oy), (round(cx + 0.2 * s) - ox, shoulders_c[1]))
    cv2.rectangle(canvas, neck[0], neck[1], neck_color, -1)


def _paste(target: np.ndarray, patch: np.ndarray | int, x0: int, y0: int, size: int) -> None:
    h, w = target.shape[:2]
    fx0, fy0, fx1, fy1 = max(0, x0), max(0, y0), min(w, x0 + size), min(h, y0 + size)
    if fx0 < fx1 and fy0 < fy1:
        value = patch if isinstance(patch, int) else patch[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
        target[fy0:fy1, fx0:fx1] = value


def _draw_member(
    image: np.ndarray, owner: np.ndarray, k: int, face: np.ndarray, a: Appearance, cx: float, cy: float
) -> _Member:
    """Draw one member into ``image`` and claim its visible pixels in ``owner``."""
    s = a.face_px
    _shapes(image, a.clothes, a, cx, cy, 0, 0)
    fx, fy = round(cx - s / 2), round(cy - s / 2)
    _paste(image, face, fx, fy, s)
    # The same shapes in a local canvas that nothing clips, so pixels outside the frame count too.
    ox, oy = round(cx - 1.1 * s) - 4, fy - 4
    local = np.zeros((round(2.7 * s) + 12, round(2.2 * s) + 12), np.uint8)
    _shapes(local, 255, a, cx, cy, ox, oy)
    _paste(local, 255, fx - ox, fy - oy, s)
    mask = local > 127
    region = owner[max(0, oy) : oy + local.shape[0], max(0, ox) : ox + local.shape[1]]
    inside = mask[max(0, -oy) : max(0, -oy) + region.shape[0], max(0, -ox) : max(0, -ox) + region.shape[1]]
    region[inside] = k
    return _Member(mask, ox, oy, (fx, fy, s))


def _truth_row(
    member: _Member, owner: np.ndarray, k: int, a: Appearance, frame: int, t: float, scene: int
) -> dict[str, Any] | None:
    h, w = owner.shape
    fx, fy, s = member.face
    fx0, fy0, fx1, fy1 = max(0, fx), max(0, fy), min(w, fx + s), min(h, fy + s)
    visible = int(np.count_nonzero(owner == k))
    if fx0 >= fx1 or fy0 >= fy1 or visible == 0:
        return None  # only members whose face is (at least partly) in the picture
    ys, xs = np.nonzero(member.mask)
    face_visible = int(np.count_nonzero(owner[fy0:fy1, fx0:fx1] == k))
    return {
        "frame": frame,
        "time_s": t,
        "scene": scene,
        "cast_id": a.cast_id,
        "face_x1": float(fx0),
        "face_y1": float(fy0),
        "face_x2": float(fx1),
        "face_y2": float(fy1),
        "x1": float(max(0, member.x0 + xs.min())),
        "y1": float(max(0, member.y0 + ys.min())),
        "x2": float(min(w, member.x0 + xs.max() + 1)),
        "y2": float(min(h, member.y0 + ys.max() + 1)),
        "visible_fraction": visible / int(member.mask.sum()),
        "face_visible_fraction": face_visible / (s * s),
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
                "cast": [
                    {"cast_id": i + 1, "lfw_index": idx, "face": "astronaut" if idx == ASTRONAUT else "lfw"}
                    for i, idx in enumerate(cast_faces(spec))
                ],
                "scenes": [
                    {"scene": s.index, "start_frame": s.start, "end_frame": s.end} for s in plan_scenes(spec)
                ],
            },
            indent=2,
        )
    )
    return SynthClip(video, truth, sidecar, count, time.perf_counter() - started)
