"""Who is on the pitch: identities, teams, formation slots and looks."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from infra.synth.spec import BGR

SKIN_TONES: tuple[BGR, ...] = (
    (189, 210, 241),
    (160, 190, 228),
    (130, 168, 214),
    (100, 140, 196),
    (80, 112, 165),
    (60, 85, 130),
    (45, 62, 98),
)
HAIR_COLORS: tuple[BGR, ...] = ((20, 20, 25), (30, 45, 70), (40, 70, 110), (90, 150, 200), (60, 60, 60))


class Team(StrEnum):
    HOME = "home"
    AWAY = "away"
    REFEREE = "referee"


class Role(StrEnum):
    PLAYER = "player"
    REFEREE = "referee"


@dataclass(frozen=True)
class Person:
    """Identity and look of one person; ids are stable for the whole match."""

    person_id: int
    team: Team
    role: Role
    jersey_number: int
    goalkeeper: bool
    slot: tuple[float, float]  # formation slot: (depth from own goal, lateral), both 0..1
    height_m: float
    build: float  # width multiplier around 1.0
    skin: BGR
    hair: BGR
    top_speed: float


def _formation(count: int) -> list[tuple[float, float]]:
    """Formation slots for `count` players: a keeper, then defence, midfield and attack lines."""
    if count == 1:
        return [(0.45, 0.5)]
    slots = [(0.02, 0.5)]
    outfield = count - 1
    attack = max(1, round(outfield * 0.2)) if outfield >= 3 else 0
    defence = max(1, round(outfield * 0.4)) if outfield >= 2 else 0
    midfield = outfield - attack - defence
    for depth, n in ((0.2, defence), (0.4, midfield), (0.6, attack)):
        for k in range(n):
            slots.append((depth, (k + 1) / (n + 1) * 0.8 + 0.1))
    return slots


def _person(pid: int, team: Team, number: int, slot: tuple[float, float], rng: np.random.Generator) -> Person:
    return Person(
        person_id=pid,
        team=team,
        role=Role.REFEREE if team is Team.REFEREE else Role.PLAYER,
        jersey_number=number,
        goalkeeper=team is not Team.REFEREE and slot[0] < 0.05,
        slot=slot,
        height_m=float(rng.uniform(1.70, 1.94)),
        build=float(rng.uniform(0.9, 1.12)),
        skin=SKIN_TONES[int(rng.integers(len(SKIN_TONES)))],
        hair=HAIR_COLORS[int(rng.integers(len(HAIR_COLORS)))],
        top_speed=float(rng.uniform(6.8, 8.0)) if team is not Team.REFEREE else 6.5,
    )


def make_persons(players_per_team: int, referees: int, seed: int) -> tuple[Person, ...]:
    """Home players, then away players, then referees; person ids count from 1."""
    rng = np.random.default_rng([seed, 1])
    persons: list[Person] = []
    for team in (Team.HOME, Team.AWAY):
        slots = _formation(players_per_team)
        outfield_numbers = rng.choice(np.arange(2, 31), size=players_per_team, replace=False)
        for k, slot in enumerate(slots):
            number = 1 if slot[0] < 0.05 else int(outfield_numbers[k])
            persons.append(_person(len(persons) + 1, team, number, slot, rng))
    for k in range(referees):
        persons.append(_person(len(persons) + 1, Team.REFEREE, 0, (float(k), 0.0), rng))
    return tuple(persons)
