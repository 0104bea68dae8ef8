"""Fixed-step match simulation: players steer towards tactical targets, the ball is passed around.

Everything here is deliberately simple (no physics beyond speed and acceleration limits);
the aim is footage whose motion statistics look like football to a tracker: people run
0-8 m/s, cross each other, bunch around the ball and wander in and out of shot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from infra.synth.people import Person, Team

BALL_RADIUS = 0.11
ACCEL = 5.0  # m/s^2, the same for speeding up and braking
CONTROL_RADIUS = 0.9  # a player within this of the ball can take it
CHASERS_PER_TEAM = 2


@dataclass(frozen=True)
class Track:
    pos: np.ndarray  # (T, N, 2)
    vel: np.ndarray  # (T, N, 2)
    phase: np.ndarray  # (T, N)
    ball: np.ndarray  # (T, 3)


@dataclass(frozen=True)
class Flight:
    start: np.ndarray
    end: np.ndarray
    t0: float
    duration: float
    apex: float
    passer: int
    receiver: int  # -1 for a shot


def _unit(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.asarray(v / np.maximum(norm, 1e-9))


def stride_frequency(speed: np.ndarray) -> np.ndarray:
    """Running-cycle frequency in Hz: about 1.2 Hz jogging, 2.3 Hz sprinting, 0 standing."""
    return np.asarray(np.clip(speed / 0.6, 0.0, 1.0) * (0.9 + 0.17 * speed))


class MatchSim:
    """Mutable simulation state; `run` returns the recorded track."""

    def __init__(self, persons: tuple[Person, ...], rng: np.random.Generator, length: float, width: float):
        self.persons = persons
        self.rng = rng
        self.length = length
        self.width = width
        self.n = len(persons)
        self.team = np.array([{Team.HOME: 0, Team.AWAY: 1, Team.REFEREE: 2}[p.team] for p in persons])
        self.keeper = np.array([p.goalkeeper for p in persons], dtype=bool)
        self.top = np.array([p.top_speed for p in persons])
        self.slots = np.array([p.slot for p in persons], dtype=float).reshape(self.n, 2)
        self.t = 0.0
        self.ball = np.array([length / 2, width / 2, BALL_RADIUS])
        self.ball_vel = np.zeros(2)
        self.flight: Flight | None = None
        self.cooldown = np.zeros(self.n)
        self.wander = np.zeros((self.n, 2))
        self.wander_until = np.zeros(self.n)
        self.pos = self._shape_targets() + rng.normal(0.0, 1.5, (self.n, 2))
        self.vel = np.zeros((self.n, 2))
        self.heading = np.where(self.team[:, None] == 1, [[-1.0, 0.0]], [[1.0, 0.0]])
        self.phase = rng.uniform(0.0, 1.0, self.n)
        self.owner = self._kickoff_taker()
        self.hold_until = float(rng.uniform(0.8, 2.0))
        if self.owner >= 0:  # the ball starts at the taker's feet rather than jumping there on step 1
            feet = self.pos[self.owner] + 0.55 * self.heading[self.owner]
            self.ball = np.array([feet[0], feet[1], BALL_RADIUS])

    # ---- recording -------------------------------------------------------------------
    def run(self, steps: int, dt: float) -> Track:
        pos = np.empty((steps, self.n, 2))
        vel = np.empty((steps, self.n, 2))
        phase = np.empty((steps, self.n))
        ball = np.empty((steps, 3))
        for k in range(steps):
            if k:
                self.step(dt)
            pos[k], vel[k], phase[k], ball[k] = self.pos, self.vel, self.phase, self.ball
        return Track(pos, vel, phase, ball)

    def step(self, dt: float) -> None:
        self.t += dt
        self._refresh_wander()
        targets, caps = self._targets()
        self._steer(targets, caps, dt)
        self._update_ball(dt)

    # ---- people ------------------------------------------------------------------------
    def _kickoff_taker(self) -> int:
        if not (self.team < 2).any():
            return -1
        d = np.linalg.norm(self.pos - self.ball[:2], axis=1)
        d[(self.team != 0) | self.keeper] = np.inf
        if not np.isfinite(d).any():
            d = np.where(self.team == 0, 0.0, np.inf)
        return int(np.argmin(d))

    def _refresh_wander(self) -> None:
        due = self.wander_until <= self.t
        for i in np.flatnonzero(due):
            self.wander[i] = self.rng.normal(0.0, 4.0, 2)
            self.wander_until[i] = self.t + self.rng.uniform(2.0, 6.0)

    def _shape_targets(self) -> np.ndarray:
        """Where each person would stand given the ball: a team block sliding with play."""
        L, W = self.length, self.width
        bx, by = self.ball[0], self.ball[1]
        depth, lateral = self.slots[:, 0], self.slots[:, 1]
        home = self.team == 0
        x = np.where(home, 3 + depth * L * 0.85, L - 3 - depth * L * 0.85) + 0.5 * (bx - L / 2)
        y = lateral * W + 0.3 * (by - lateral * W)
        own_goal = np.where(home, 0.0, L)
        gk_x = own_goal + np.where(home, 1.0, -1.0) * np.clip(2 + 0.08 * np.abs(bx - own_goal), 2, 10)
        gk_y = W / 2 + np.clip(0.15 * (by - W / 2), -4, 4)
        x = np.where(self.keeper, gk_x, x)
        y = np.where(self.keeper, gk_y, y)
        targets = np.stack([np.clip(x, 1, L - 1), np.clip(y, 1, W - 1)], axis=1)
        return self._referee_targets(targets)

    def _referee_targets(self, targets: np.ndarray) -> np.ndarray:
        L, W = self.length, self.width
        bx, by = self.ball[0], self.ball[1]
        for k, i in enumerate(np.flatnonzero(self.team == 2)):
            if k == 0:
                targets[i] = (np.clip(bx - 6, 2, L - 2), np.clip(by + (12 if by < W / 2 else -12), 2, W - 2))
            elif k == 1:
                targets[i] = (np.clip(bx, L / 2, L - 2), W + 1.5)
            else:
                targets[i] = (np.clip(bx, 2, L / 2), -1.5)
        return targets

    def _targets(self) -> tuple[np.ndarray, np.ndarray]:
        targets = self._shape_targets()
        targets[self.team < 2] += self.wander[self.team < 2]
        dist = np.linalg.norm(targets - self.pos, axis=1)
        caps = self.top * np.clip(0.25 + dist / 25, 0.25, 0.8)
        ball_goal = self.flight.end if self.flight is not None else self.ball[:2]
        owner_team = self.team[self.owner] if self.owner >= 0 else -1
        for team in (0, 1):
            if owner_team == team:
                self._dribble_target(targets, caps)
                continue
            if (
                self.flight is not None
                and self.flight.receiver >= 0
                and self.team[self.flight.receiver] == team
            ):
                targets[self.flight.receiver] = self.flight.end
                caps[self.flight.receiver] = self.top[self.flight.receiver] * 0.85
                continue
            for i in self._chasers(team):
                targets[i] = ball_goal
                caps[i] = self.top[i]
        return targets, caps

    def _chasers(self, team: int) -> np.ndarray:
        d = np.linalg.norm(self.pos - self.ball[:2], axis=1)
        d[(self.team != team) | self.keeper] = np.inf
        order = np.argsort(d, kind="stable")[:CHASERS_PER_TEAM]
        return order[np.isfinite(d[order]) & (d[order] < 30)]

    def _dribble_target(self, targets: np.ndarray, caps: np.ndarray) -> None:
        i = self.owner
        goal_x = self.length if self.team[i] == 0 else 0.0
        targets[i] = (goal_x, self.width / 2 + 2.5 * self.wander[i, 1])
        caps[i] = self.top[i] * 0.6

    def _steer(self, targets: np.ndarray, caps: np.ndarray, dt: float) -> None:
        offset = targets - self.pos
        dist = np.linalg.norm(offset, axis=1)
        desired = _unit(offset) * np.minimum(caps, 1.5 * dist)[:, None]
        dv = desired - self.vel
        dv_norm = np.linalg.norm(dv, axis=1)
        self.vel = self.vel + dv * (np.minimum(1.0, ACCEL * dt / np.maximum(dv_norm, 1e-9)))[:, None]
        self.vel += self._separation()
        speed = np.linalg.norm(self.vel, axis=1)
        self.vel *= (np.minimum(1.0, self.top / np.maximum(speed, 1e-9)))[:, None]
        self.pos = self.pos + self.vel * dt
        self.pos[:, 0] = np.clip(self.pos[:, 0], -2, self.length + 2)
        self.pos[:, 1] = np.clip(self.pos[:, 1], -3, self.width + 3)
        speed = np.linalg.norm(self.vel, axis=1)
        moving = speed > 0.3
        self.heading[moving] = _unit(self.vel[moving])
        self.phase = self.phase + stride_frequency(speed) * dt

    def _separation(self) -> np.ndarray:
        # A gentle push so bodies pass close by without merging into one blob for long.
        diff = self.pos[:, None, :] - self.pos[None, :, :]
        d = np.linalg.norm(diff, axis=2) + np.eye(self.n) * 1e3
        push = np.clip((1.0 - d) / 1.0, 0.0, None)[:, :, None] * _unit(diff) * 0.15
        return np.asarray(push.sum(axis=1))

    # ---- ball -------------------------------------------------------------------------
    def _update_ball(self, dt: float) -> None:
        if self.flight is not None:
            self._fly()
        elif self.owner >= 0:
            self._carry(dt)
        else:
            self._roll(dt)

    def _fly(self) -> None:
        f = self.flight
        assert f is not None
        s = (self.t - f.t0) / f.duration
        if s >= 1.0:
            self.flight = None
            self.ball_vel = _unit(f.end - f.start) * (np.linalg.norm(f.end - f.start) / f.duration) * 0.25
            self.ball = np.array([f.end[0], f.end[1], BALL_RADIUS])
            self._pick_up()
            return
        xy = f.start + (f.end - f.start) * s
        self.ball = np.array([xy[0], xy[1], BALL_RADIUS + 4 * f.apex * s * (1 - s)])
        if self.ball[2] < 1.5 and s > 0.1:
            self._pick_up()

    def _carry(self, dt: float) -> None:
        i = self.owner
        xy = self.pos[i] + 0.55 * self.heading[i]
        self.ball = np.array([xy[0], xy[1], BALL_RADIUS])
        d = np.linalg.norm(self.pos - xy, axis=1)
        rivals = np.flatnonzero((self.team < 2) & (self.team != self.team[i]) & (d < CONTROL_RADIUS))
        if rivals.size and self.rng.random() < 1.5 * dt:
            self._give(int(rivals[np.argmin(d[rivals])]), previous=i)
        elif self.t >= self.hold_until:
            self._release(i)

    def _roll(self, dt: float) -> None:
        xy = self.ball[:2] + self.ball_vel * dt
        self.ball_vel *= max(0.0, 1.0 - 1.2 * dt)
        if not (-1 <= xy[0] <= self.length + 1 and -1 <= xy[1] <= self.width + 1):
            xy = np.array([np.clip(xy[0], 0, self.length), np.clip(xy[1], 0, self.width)])
            self.ball_vel = np.zeros(2)
        self.ball = np.array([xy[0], xy[1], BALL_RADIUS])
        self._pick_up()

    def _pick_up(self) -> None:
        d = np.linalg.norm(self.pos - self.ball[:2], axis=1)
        d[(self.team == 2) | (self.cooldown > self.t)] = np.inf
        i = int(np.argmin(d))
        if d[i] < CONTROL_RADIUS:
            self.flight = None
            self._give(i, previous=-1)

    def _give(self, i: int, previous: int) -> None:
        if previous >= 0:
            self.cooldown[previous] = self.t + 0.8
        self.owner = i
        self.hold_until = self.t + float(self.rng.uniform(0.6, 3.0))

    def _release(self, i: int) -> None:
        goal_x = self.length if self.team[i] == 0 else 0.0
        if abs(self.pos[i, 0] - goal_x) < 24 and self.rng.random() < 0.45:
            end = np.array([goal_x + (1.0 if goal_x else -1.0), self.width / 2 + self.rng.uniform(-3.5, 3.5)])
            self._launch(i, -1, end, speed=24.0, apex=float(self.rng.uniform(0.0, 2.0)))
            return
        mates = np.flatnonzero((self.team == self.team[i]) & (np.arange(self.n) != i))
        if not mates.size:
            self.hold_until = self.t + 2.0
            return
        d = np.linalg.norm(self.pos[mates] - self.pos[i], axis=1)
        forward = np.sign(self.pos[mates, 0] - self.pos[i, 0]) * (1 if goal_x else -1)
        weights = (
            np.exp(-(((d - 18) / 12) ** 2)) * (1.0 + 0.4 * forward) * np.where(self.keeper[mates], 0.15, 1)
        )
        j = int(self.rng.choice(mates, p=weights / weights.sum()))
        speed = float(self.rng.uniform(13.0, 19.0))
        dist = float(np.linalg.norm(self.pos[j] - self.pos[i]))
        lofted = dist > 28
        speed *= 0.8 if lofted else 1.0
        end = self.pos[j] + self.vel[j] * (dist / speed) * 0.8
        end = np.array([np.clip(end[0], 0.5, self.length - 0.5), np.clip(end[1], 0.5, self.width - 0.5)])
        self._launch(i, j, end, speed=speed, apex=float(self.rng.uniform(2.5, 6.0)) if lofted else 0.0)

    def _launch(self, passer: int, receiver: int, end: np.ndarray, speed: float, apex: float) -> None:
        start = self.ball[:2].copy()
        duration = max(0.2, float(np.linalg.norm(end - start)) / speed)
        self.flight = Flight(start, end, self.t, duration, apex, passer, receiver)
        self.cooldown[passer] = self.t + 0.4
        self.owner = -1
