"""The generated referee wears a shirt distinct from both teams' and the goalkeepers', as the laws require."""

from __future__ import annotations

from itertools import permutations

import numpy as np

from infra.synth.figures import (
    KEEPER_KITS,
    REFEREE_ALTERNATIVES,
    REFEREE_CLASH_DELTA_E,
    REFEREE_KIT,
    REFEREE_TRIM,
    _lab,
    kit_for,
)
from infra.synth.people import Person, Role, Team
from infra.synth.spec import NAMED_COLORS


def _referee() -> Person:
    return Person(
        person_id=0,
        team=Team.REFEREE,
        role=Role.REFEREE,
        jersey_number=0,
        goalkeeper=False,
        slot=(0.5, 0.5),
        height_m=1.8,
        build=1.0,
        skin=(120, 150, 190),
        hair=(20, 20, 20),
        top_speed=7.0,
    )


def _delta_e(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    return float(np.linalg.norm(_lab(a) - _lab(b)))


def test_default_colours_keep_the_black_referee() -> None:
    kit = kit_for(_referee(), NAMED_COLORS["red"], NAMED_COLORS["blue"])
    assert (kit.shirt, kit.shorts, kit.socks) == (REFEREE_KIT, REFEREE_KIT, REFEREE_KIT)
    assert kit.number == REFEREE_TRIM
    # navy is the darkest named kit besides black: it does not clash with the black referee
    assert kit_for(_referee(), NAMED_COLORS["orange"], NAMED_COLORS["navy"]).shirt == REFEREE_KIT


def test_a_black_team_gets_a_referee_in_another_colour() -> None:
    for home, away in (("white", "black"), ("black", "white"), ("black", "yellow")):
        shirt = kit_for(_referee(), NAMED_COLORS[home], NAMED_COLORS[away]).shirt
        assert shirt != REFEREE_KIT
        assert shirt in REFEREE_ALTERNATIVES
        assert _delta_e(shirt, NAMED_COLORS["black"]) >= REFEREE_CLASH_DELTA_E
    # black and yellow teams: the first change shirt (yellow) clashes too, so the next one is worn
    assert kit_for(_referee(), NAMED_COLORS["black"], NAMED_COLORS["yellow"]).shirt == REFEREE_ALTERNATIVES[1]


def test_every_pair_of_named_kits_gets_a_referee_shirt_that_clashes_with_no_one() -> None:
    for home, away in permutations(NAMED_COLORS, 2):
        shirt = kit_for(_referee(), NAMED_COLORS[home], NAMED_COLORS[away]).shirt
        for other in (NAMED_COLORS[home], NAMED_COLORS[away], *KEEPER_KITS):
            assert _delta_e(shirt, other) >= REFEREE_CLASH_DELTA_E, (home, away)
