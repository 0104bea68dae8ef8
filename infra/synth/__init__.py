"""Synthetic footage: deterministic broadcast-like match clips and episode clips with ground truth."""

from infra.synth.damage import DamageKind, make_damaged
from infra.synth.episode import iter_episode_frames, render_episode
from infra.synth.game import RenderedFrame, iter_game_frames, render_game
from infra.synth.spec import GENERATOR_VERSION, AngleSpec, CameraPreset, EpisodeSpec, GameSpec, SynthClip

__all__ = [
    "GENERATOR_VERSION",
    "AngleSpec",
    "CameraPreset",
    "DamageKind",
    "EpisodeSpec",
    "GameSpec",
    "RenderedFrame",
    "SynthClip",
    "iter_episode_frames",
    "iter_game_frames",
    "make_damaged",
    "render_episode",
    "render_game",
]
