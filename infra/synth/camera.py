"""Pinhole broadcast cameras: fixed rigs that pan, tilt and zoom to follow the ball.

A real pinhole model (rather than a hand-made scaling) gives natural perspective: people
higher up the image are further away and smaller. Ground truth never depends on the
model's accuracy, because boxes come from the drawn pixels, but sizes on screen do.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from infra.synth.spec import CameraPreset
from infra.synth.world import PITCH_LENGTH, PITCH_WIDTH, SIM_DT, World

# World time the camera path may look ahead (Gaussian smoothing is non-causal); the world
# must be simulated this far past the last rendered instant.
LOOKAHEAD_S = 3.0
_SMOOTH_SIGMA_S = 0.9
_UP = np.array([0.0, 0.0, 1.0])


@dataclass(frozen=True)
class Rig:
    """Where a camera stands and how it frames play."""

    position: tuple[float, float, float]
    focal_rel: float  # focal length in units of the image width, at zoom 1
    follow_y: float  # how much the tilt follows the ball across the pitch
    zoom_swing: float  # amplitude of slow zoom changes at camera_motion 1
    lag_s: float  # operators react late; the camera trails the ball


PRESETS: dict[CameraPreset, Rig] = {
    CameraPreset.MAIN: Rig((52.5, -40.0, 18.0), 2.5, 0.7, 0.14, 0.35),
    CameraPreset.TIGHT: Rig((40.0, -30.0, 12.0), 3.3, 0.9, 0.10, 0.25),
    CameraPreset.REVERSE: Rig((52.5, PITCH_WIDTH + 40.0, 18.0), 2.5, 0.7, 0.14, 0.45),
    CameraPreset.WIDE: Rig((52.5, -55.0, 30.0), 1.8, 0.5, 0.08, 0.5),
}


@dataclass(frozen=True)
class CameraPose:
    """A camera at one instant. Camera axes: x right, y down, z forward."""

    center: np.ndarray  # (3,) world position
    rotation: np.ndarray  # (3, 3) world -> camera
    focal_px: float
    width: int
    height: int

    @property
    def intrinsics(self) -> np.ndarray:
        return np.array(
            [[self.focal_px, 0.0, self.width / 2], [0.0, self.focal_px, self.height / 2], [0.0, 0.0, 1.0]]
        )

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """World points (N, 3) in camera coordinates (N, 3)."""
        return np.asarray((points - self.center) @ self.rotation.T)

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates (N, 2) and depth (N,) of world points (N, 3)."""
        cam = self.to_camera(np.atleast_2d(points))
        depth = cam[:, 2]
        safe = np.where(depth > 1e-6, depth, 1e-6)
        uv = cam[:, :2] * (self.focal_px / safe)[:, None] + [self.width / 2, self.height / 2]
        return uv, depth

    def plane_homography(self, origin: np.ndarray, axis_u: np.ndarray, axis_v: np.ndarray) -> np.ndarray:
        """Homography from plane coordinates (u, v, 1) to pixels, for world = origin + u*axis_u + v*axis_v."""
        cols = np.stack([axis_u, axis_v, np.asarray(origin) - self.center], axis=1)
        return np.asarray(self.intrinsics @ self.rotation @ cols)

    @property
    def right(self) -> np.ndarray:
        """The world direction that moves a point rightwards on screen."""
        return np.asarray(self.rotation[0])


def look_at(center: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rotation (world -> camera) of a camera at `center` looking at `target`, with no roll."""
    forward = target - center
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, _UP)
    right = right / np.linalg.norm(right)
    down = np.cross(forward, right)
    return np.stack([right, down, forward])


def _wobble(rng: np.random.Generator, count: int, freq: tuple[float, float]) -> np.ndarray:
    """Random sinusoid parameters (frequency Hz, phase, weight) for smooth pseudo-noise."""
    return np.stack(
        [rng.uniform(*freq, count), rng.uniform(0.0, 2 * np.pi, count), rng.uniform(0.5, 1.0, count)], axis=1
    )


def _wobble_at(params: np.ndarray, t: float) -> float:
    value = np.sum(params[:, 2] * np.sin(2 * np.pi * params[:, 0] * t + params[:, 1]))
    return float(value / params[:, 2].sum())


class CameraPath:
    """A camera's pose as a function of world time, for one rig, world and resolution."""

    def __init__(self, world: World, preset: CameraPreset, motion: float, width: int, height: int, key: str):
        self.rig = PRESETS[preset]
        self.motion = motion
        self.width = width
        self.height = height
        sigma = _SMOOTH_SIGMA_S / SIM_DT
        self._ball = gaussian_filter1d(world.ball[:, :2], sigma, axis=0, mode="nearest", truncate=3.0)
        rng = np.random.default_rng([world.seed, 4, zlib.crc32(key.encode())])
        self._shake = [_wobble(rng, 4, (0.4, 2.5)) for _ in range(3)]
        self._drift = _wobble(rng, 3, (0.03, 0.12))

    def pose(self, time_s: float) -> CameraPose:
        base = np.array([PITCH_LENGTH / 2, PITCH_WIDTH / 2])
        k = round(max(0.0, time_s - self.rig.lag_s) / SIM_DT)
        ball = self._ball[min(k, len(self._ball) - 1)]
        follow = min(self.motion, 1.0)
        target = base + follow * (ball - base) * [1.0, self.rig.follow_y]
        shake = self.motion * np.array([_wobble_at(p, time_s) for p in self._shake])
        target = target + shake[:2] * 0.3
        target = np.array([np.clip(target[0], 10, PITCH_LENGTH - 10), np.clip(target[1], 8, PITCH_WIDTH - 8)])
        zoom = 1.0 + self.motion * (self.rig.zoom_swing * _wobble_at(self._drift, time_s) + 0.006 * shake[2])
        center = np.array(self.rig.position)
        rotation = look_at(center, np.array([target[0], target[1], 0.0]))
        focal = self.rig.focal_rel * self.width * float(np.clip(zoom, 0.7, 1.5))
        return CameraPose(center, rotation, focal, self.width, self.height)
