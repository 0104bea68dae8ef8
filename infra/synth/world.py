"""The simulated match: who is on the pitch and where everyone and the ball are over time.

The world depends only on the seed, the team sizes and the number of referees, never on
cameras, frame rates or clip length, so every angle of a match sees the same players.
It is stepped at a fixed rate and every random draw happens in time order, which makes
a longer simulation an exact extension of a shorter one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from infra.synth.motion import MatchSim
from infra.synth.people import Person, make_persons

PITCH_LENGTH = 105.0
PITCH_WIDTH = 68.0
SIM_DT = 0.02


@dataclass(frozen=True)
class WorldSample:
    """Everyone's state at one instant; arrays are indexed like `World.persons`."""

    time_s: float
    pos: np.ndarray  # (N, 2) metres
    vel: np.ndarray  # (N, 2) m/s
    phase: np.ndarray  # (N,) running-cycle phase in cycles, unwrapped
    ball: np.ndarray  # (3,) metres, z up


@dataclass(frozen=True)
class Whistle:
    time_s: float
    duration_s: float


@dataclass(frozen=True)
class World:
    """A simulated match, sampled every `SIM_DT` seconds from world time 0."""

    seed: int
    persons: tuple[Person, ...]
    pos: np.ndarray  # (T, N, 2)
    vel: np.ndarray  # (T, N, 2)
    phase: np.ndarray  # (T, N)
    ball: np.ndarray  # (T, 3)
    whistles: tuple[Whistle, ...]

    @property
    def horizon_s(self) -> float:
        return (len(self.pos) - 1) * SIM_DT

    def sample(self, time_s: float) -> WorldSample:
        """Linear interpolation between simulation steps."""
        if not 0.0 <= time_s <= self.horizon_s:
            raise ValueError(f"world time {time_s:.3f}s outside simulated 0..{self.horizon_s:.3f}s")
        x = time_s / SIM_DT
        i0 = min(int(np.floor(x)), len(self.pos) - 2)
        w = x - i0

        def lerp(a: np.ndarray) -> np.ndarray:
            return np.asarray(a[i0] * (1.0 - w) + a[i0 + 1] * w)

        return WorldSample(time_s, lerp(self.pos), lerp(self.vel), lerp(self.phase), lerp(self.ball))


def _whistles(seed: int, horizon_s: float) -> tuple[Whistle, ...]:
    # A stream of its own so that adding whistles never perturbs player motion.
    rng = np.random.default_rng([seed, 2])
    out: list[Whistle] = []
    t = float(rng.uniform(0.4, 2.0))
    while t < horizon_s:
        out.append(Whistle(t, float(rng.choice([0.25, 0.4, 0.8]))))
        t += float(rng.uniform(3.5, 9.0))
    return tuple(out)


def simulate_world(players_per_team: int, referees: int, seed: int, horizon_s: float) -> World:
    """Simulate the match from world time 0 to at least `horizon_s`."""
    persons = make_persons(players_per_team, referees, seed)
    steps = int(np.ceil(horizon_s / SIM_DT)) + 1
    sim = MatchSim(persons, np.random.default_rng([seed, 3]), PITCH_LENGTH, PITCH_WIDTH)
    track = sim.run(steps, SIM_DT)
    return World(seed, persons, track.pos, track.vel, track.phase, track.ball, _whistles(seed, horizon_s))
