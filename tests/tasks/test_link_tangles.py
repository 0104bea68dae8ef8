"""tasks.untangle, through link_tracks: tracks swapped where a player hid or in a chain of crossings,
and tracks cut where their jersey numbers switch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import polars as pl

from storage.schemas import polars_schema
from tasks.appearance import APPEARANCE_DIM, APPEARANCE_LAYOUT
from tasks.detect_track import DETECTION_COLUMNS
from tasks.link import LinkParams, link_tracks
from tests.fixtures.tables import detection_rows

# three team-mates: one kit, told apart by skin and hair (embed's APPEARANCE_LAYOUT: skin, then hair)
Look = tuple[float, ...]
PALE: Look = (50.0, 60.0, 40.0, 30.0, 0.0, 0.0, 75.0, 10.0, 20.0, 25.0, 5.0, 10.0)
DARK: Look = (50.0, 60.0, 40.0, 30.0, 0.0, 0.0, 35.0, 15.0, 25.0, 60.0, 10.0, 30.0)
RED: Look = (50.0, 60.0, 40.0, 30.0, 0.0, 0.0, 60.0, 35.0, 45.0, 45.0, 40.0, 35.0)

Row = tuple[int, int, float, Look]  # frame, track, x, the true player's look


def _scene(
    rows: list[Row], read: Callable[[Row], tuple[int, float]] | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Tracked rows (30 x 80 boxes at ``x``) and their appearance; ``read`` gives each row's jersey
    number read and its confidence (none without it)."""
    detections = pl.DataFrame(
        [{**detection_rows(0, t, range(f, f + 1), x, dx=0.0)[0], "track_id": t} for f, t, x, _ in rows],
        schema={**DETECTION_COLUMNS, "track_id": pl.Int64},
    )
    vectors = []
    for row in rows:
        f, _, x, look = row
        vector = list(look) + [0.0] * (APPEARANCE_DIM - len(look))
        if read is not None:
            number, confidence = read(row)
            vector[APPEARANCE_LAYOUT["number"].start] = float(number)
            vector[APPEARANCE_LAYOUT["number_conf"].start] = confidence
        vectors.append(
            {"angle": "main", "frame": f, "x1": x, "y1": 100.0, "x2": x + 30, "y2": 180.0, "vector": vector}
        )
    return detections, pl.DataFrame(vectors, schema=polars_schema("appearance"))


def _tracks_of(
    out: pl.DataFrame, rows: list[Row], look: tuple[float, ...], crossing: range = range(0)
) -> set[int]:
    """The track ids ``out`` gives the rows of the player with ``look`` (outside the ``crossing``
    frames, where the swap back falls in the middle)."""
    mine = {(f, x) for f, _, x, seen in rows if seen == look and f not in crossing}
    return {int(t) for f, x, t in out.select("frame", "x1", "track_id").iter_rows() if (f, x) in mine}


def _hidden_crossing() -> list[Row]:
    """P (pale, walking right) and Q (dark, walking left) cross at frame 25, P hidden behind Q
    (not detected) from frame 24 to 27: their boxes never overlap in one frame. Track 1 follows P
    until he is hidden; track 2 follows Q, then from frame 28 P, where P comes out; track 1 is
    re-found on Q at frame 30."""
    p = [(f, 1 if f <= 23 else 2, 8.0 * f, PALE) for f in range(0, 60) if not 24 <= f <= 27]
    q = [(f, 2 if f <= 27 else 1, 400.0 - 8.0 * f, DARK) for f in range(0, 60) if not 28 <= f <= 29]
    return p + q


def test_players_swapped_while_one_was_hidden_behind_the_other_get_their_tracks_back() -> None:
    rows = _hidden_crossing()
    out = link_tracks(*_scene(rows))
    assert _tracks_of(out, rows, PALE, range(23, 29)) == {1}
    assert _tracks_of(out, rows, DARK, range(23, 29)) == {2}


def test_a_lost_track_crosses_nobody_when_its_ghost_is_off() -> None:
    # the rule above is what gives them back: without ghosts the swap stays
    rows = _hidden_crossing()
    out = link_tracks(*_scene(rows), replace(LinkParams(), ghost_s=0.0))
    assert len(_tracks_of(out, rows, PALE, range(23, 29))) > 1


def _chain() -> list[Row]:
    """Track 1 follows P (pale, walking right) until it loses him at frame 24, where he meets Q
    (dark, walking left), whose track 2 goes on with P from frame 25 while Q is gone. At frame 30,
    P crosses R (red, walking left on track 3) and the tracker swaps tracks 2 and 3 too. The first
    swap shows only once the second is undone (track 2's look after the first crossing is R's)."""
    p = [(f, 1 if f <= 24 else (2 if f <= 30 else 3), 8.0 * f, PALE) for f in range(0, 70)]
    q = [(f, 2, 392.0 - 8.0 * f, DARK) for f in range(0, 25)]
    r = [(f, 3 if f <= 30 else 2, 480.0 - 8.0 * f, RED) for f in range(0, 70)]
    return p + q + r


def test_a_chain_of_swaps_is_undone_from_the_last_back() -> None:
    rows = _chain()
    out = link_tracks(*_scene(rows))
    assert _tracks_of(out, rows, PALE, range(24, 32)) == {1}
    assert _tracks_of(out, rows, DARK, range(24, 32)) == {2}
    assert _tracks_of(out, rows, RED, range(24, 32)) == {3}


def test_one_pass_over_the_crossings_leaves_the_first_swap_of_a_chain() -> None:
    rows = _chain()
    out = link_tracks(*_scene(rows), replace(LinkParams(), untangle_passes=1))
    assert len(_tracks_of(out, rows, PALE, range(24, 32))) > 1


# two team-mates who look alike (one kit, PALE's skin and hair): only their numbers tell them apart
def _twins(swapped: bool) -> list[Row]:
    """Player 5 (walking right from x 0) and player 6 (walking left from x 404) cross at frame 25; track 1
    follows 5, track 2 follows 6, the tracker swapping them from frame 26 on when ``swapped``."""

    def track(first: int, f: int) -> int:
        return 3 - first if swapped and f > 25 else first

    return [(f, track(1, f), 8.0 * f, PALE) for f in range(50)] + [
        (f, track(2, f), 404.0 - 8.0 * f, PALE) for f in range(50)
    ]


def _player(row: Row) -> int:
    frame, _, x, _ = row
    return 5 if x == 8.0 * frame else 6


def _tracks_of_player(out: pl.DataFrame, number: int, skip: range = range(0)) -> set[int]:
    """The track ids ``out`` gives player ``number``'s rows (outside the ``skip`` frames)."""
    path = (lambda f: 8.0 * f) if number == 5 else (lambda f: 404.0 - 8.0 * f)
    return {
        int(t)
        for f, x, t in out.select("frame", "x1", "track_id").iter_rows()
        if x == path(f) and f not in skip
    }


def test_a_track_is_cut_where_its_jersey_number_switches() -> None:
    rows = _twins(swapped=True)
    out = link_tracks(*_scene(rows, lambda row: (_player(row), 0.97)))
    five, six = (_tracks_of_player(out, n, range(24, 28)) for n in (5, 6))
    assert not five & six  # no track holds both players
    assert len(five) == len(six) == 2  # each: his own track up to the swap, a part of the other's after


def test_doubtful_number_reads_cut_nothing() -> None:
    # the same swap read at confidence 0.8 (under number_min_conf): the look-alikes stay swapped
    rows = _twins(swapped=True)
    detections, appearance = _scene(rows, lambda row: (_player(row), 0.8))
    assert link_tracks(detections, appearance)["track_id"].to_list() == detections["track_id"].to_list()


def test_one_read_of_another_number_does_not_cut_a_track() -> None:
    # each player's box shows the other's number once mid-track and once at its end (crowded frames)
    rows = _twins(swapped=False)
    out = link_tracks(
        *_scene(rows, lambda row: (11 - _player(row) if row[0] in (10, 49) else _player(row), 0.97))
    )
    assert _tracks_of_player(out, 5) == {1}
    assert _tracks_of_player(out, 6) == {2}


def test_a_team_mate_s_number_inside_a_track_for_seconds_is_cut_out() -> None:
    # players 5 and 6 run side by side (x and x + 40); the tracker swaps their tracks for frames
    # 20-33 and back: no single cut divides either track's reads, a block of 14 reads does
    def track(player: int, f: int) -> int:
        swapped = 20 <= f <= 33
        return (1 if player == 5 else 2) if not swapped else (2 if player == 5 else 1)

    rows = [(f, track(5, f), 8.0 * f, PALE) for f in range(50)]
    rows += [(f, track(6, f), 8.0 * f + 40.0, PALE) for f in range(50)]
    out = link_tracks(*_scene(rows, lambda row: (5 if row[2] == 8.0 * row[0] else 6, 0.97)))
    ids = {(f, x): int(t) for f, x, t in out.select("frame", "x1", "track_id").iter_rows()}
    five = {ids[(f, 8.0 * f)] for f in range(50)}
    six = {ids[(f, 8.0 * f + 40.0)] for f in range(50)}
    assert not five & six  # no track holds both players
