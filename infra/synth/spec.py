"""Render specifications and result types shared by the game and episode generators."""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Bumped whenever a change alters pixels or ground truth for the same spec, so that
# cached training sets and benchmark baselines can tell stale footage apart.
GENERATOR_VERSION = "1.1.0"

BGR = tuple[int, int, int]

NAMED_COLORS: dict[str, BGR] = {
    "red": (40, 40, 200),
    "blue": (190, 110, 30),
    "sky": (230, 180, 100),
    "navy": (90, 40, 20),
    "white": (235, 235, 235),
    "black": (30, 30, 30),
    "yellow": (40, 215, 240),
    "orange": (30, 130, 245),
    "green": (60, 150, 40),
    "purple": (140, 50, 120),
    "maroon": (40, 30, 120),
    "claret": (70, 30, 130),
    "grey": (128, 128, 128),
    "pink": (180, 130, 240),
}

Color = str | tuple[int, int, int]


def resolve_color(color: Color) -> BGR:
    """Turn a colour name, '#rrggbb' hex string or BGR triple into a BGR triple."""
    if isinstance(color, tuple):
        if len(color) != 3 or any(not 0 <= c <= 255 for c in color):
            raise ValueError(f"BGR colour components must be 0..255, got {color!r}")
        return (int(color[0]), int(color[1]), int(color[2]))
    text = color.strip().lower()
    if text in NAMED_COLORS:
        return NAMED_COLORS[text]
    if text.startswith("#") and len(text) == 7:
        r, g, b = (int(text[i : i + 2], 16) for i in (1, 3, 5))
        return (b, g, r)
    raise ValueError(f"unknown colour {color!r}; use one of {sorted(NAMED_COLORS)}, '#rrggbb' or a BGR tuple")


class CameraPreset(StrEnum):
    """Where a camera stands; each preset is a fixed rig in `camera.PRESETS`."""

    MAIN = "main"
    TIGHT = "tight"
    REVERSE = "reverse"
    WIDE = "wide"


class AngleSpec(BaseModel):
    """One camera angle of a match: which rig, and the world time of its first frame."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(
        default="main", pattern=r"^[A-Za-z0-9_-]+$", description="Angle label, used in file names."
    )
    preset: CameraPreset = Field(default=CameraPreset.MAIN, description="Camera rig.")
    offset_s: float = Field(default=0.0, ge=0.0, le=3600.0, description="World time shown by frame 0.")


class EncodeSpec(BaseModel):
    """x264 settings; the defaults trade a little size for render speed."""

    model_config = ConfigDict(frozen=True)

    crf: int = Field(default=23, ge=0, le=51)
    preset: str = Field(default="veryfast")
    keyint: int | None = Field(default=None, ge=1, description="Frames between keyframes (x264 default 250).")


class GameSpec(BaseModel):
    """A synthetic football match rendered from one or more camera angles."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(default="game", pattern=r"^[A-Za-z0-9_-]+$", description="File name stem.")
    duration_s: float = Field(default=10.0, gt=0.0, le=3600.0)
    fps: int = Field(default=25, ge=1, le=120)
    width: int = Field(default=1280, ge=64, le=3840)
    height: int = Field(default=720, ge=64, le=2160)
    players_per_team: int = Field(default=11, ge=1, le=16)
    referees: int = Field(default=1, ge=0, le=3)
    home_color: Color = "red"
    away_color: Color = "blue"
    camera_motion: float = Field(default=1.0, ge=0.0, le=3.0, description="0 = static camera.")
    seed: int = Field(default=0, ge=0)
    angles: tuple[AngleSpec, ...] = Field(default=(AngleSpec(),), min_length=1)
    audio: bool | None = Field(default=None, description="None = on only for multi-angle renders.")
    encode: EncodeSpec = EncodeSpec()

    @field_validator("home_color", "away_color")
    @classmethod
    def _known_color(cls, value: Color) -> Color:
        resolve_color(value)
        return value

    @field_validator("width", "height")
    @classmethod
    def _even(cls, value: int) -> int:
        # yuv420p needs even dimensions.
        if value % 2:
            raise ValueError("width and height must be even for yuv420p")
        return value

    @model_validator(mode="after")
    def _unique_angle_names(self) -> GameSpec:
        names = [a.name for a in self.angles]
        if len(set(names)) != len(names):
            raise ValueError(f"angle names must be unique, got {names}")
        return self

    @property
    def frame_count(self) -> int:
        return max(1, round(self.duration_s * self.fps))

    @property
    def with_audio(self) -> bool:
        return self.audio if self.audio is not None else len(self.angles) > 1

    def angle(self, name: str | None = None) -> AngleSpec:
        """The named angle, or the first one."""
        if name is None:
            return self.angles[0]
        for angle in self.angles:
            if angle.name == name:
                return angle
        raise KeyError(f"no angle {name!r} in spec; have {[a.name for a in self.angles]}")


def default_angles(count: int, offset_s: float) -> tuple[AngleSpec, ...]:
    """`count` angles cycling through the rigs, angle i starting at world time i * offset_s."""
    presets = [CameraPreset.MAIN, CameraPreset.REVERSE, CameraPreset.TIGHT, CameraPreset.WIDE]
    return tuple(
        AngleSpec(
            name=presets[i % len(presets)].value + ("" if i < len(presets) else str(i)),
            preset=presets[i % len(presets)],
            offset_s=i * offset_s,
        )
        for i in range(count)
    )


def varied_game(
    rng: random.Random, name: str, duration_s: float, seed: int, preset: CameraPreset | None = None
) -> GameSpec:
    """A match for a training set: its kits (never green, the pitch's colour), squad sizes, referees,
    camera motion and, unless ``preset`` is given, its rig are drawn from ``rng`` (in that order)."""
    home, away = rng.sample([c for c in NAMED_COLORS if c != "green"], 2)
    players, referees = rng.randint(5, 11), rng.randint(1, 3)
    motion = rng.uniform(0.3, 2.0)
    rig = rng.choice(list(CameraPreset)) if preset is None else preset
    return GameSpec(
        name=name,
        duration_s=duration_s,
        players_per_team=players,
        referees=referees,
        home_color=home,
        away_color=away,
        camera_motion=motion,
        seed=seed,
        angles=(AngleSpec(preset=rig),),
    )


SceneLength = Annotated[float, Field(gt=0.0, le=60.0)]


class EpisodeSpec(BaseModel):
    """A broadcast-style clip of hard-cut head-and-shoulders scenes with real faces."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(default="episode", pattern=r"^[A-Za-z0-9_-]+$")
    duration_s: float = Field(default=10.0, gt=0.0, le=3600.0)
    fps: int = Field(default=25, ge=1, le=120)
    width: int = Field(default=1280, ge=64, le=3840)
    height: int = Field(default=720, ge=64, le=2160)
    cast_size: int = Field(default=4, ge=1, le=20)
    scene_min_s: SceneLength = 1.5
    scene_max_s: SceneLength = 4.0
    include_astronaut: bool = Field(
        default=False, description="Let the skimage astronaut photo join the cast."
    )
    seed: int = Field(default=0, ge=0)
    encode: EncodeSpec = EncodeSpec()

    @field_validator("width", "height")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError("width and height must be even for yuv420p")
        return value

    @model_validator(mode="after")
    def _scene_range(self) -> EpisodeSpec:
        if self.scene_min_s > self.scene_max_s:
            raise ValueError("scene_min_s must not exceed scene_max_s")
        return self

    @property
    def frame_count(self) -> int:
        return max(1, round(self.duration_s * self.fps))


@dataclass(frozen=True)
class SynthClip:
    """What one render wrote; paths are absolute."""

    video_path: Path
    ground_truth_path: Path
    sidecar_path: Path
    frame_count: int
    render_seconds: float
    angle: str | None = None
    ball_path: Path | None = None
