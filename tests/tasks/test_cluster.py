"""cluster: teams, fragment merging, cast identities and the event's corrections.

The first half uses hand-made appearance/face vectors (the clustering logic alone); the quality
tests at the end run embed + cluster on generated footage with ground-truth boxes as tracks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from sqlmodel import Session

from storage.artifacts import ArtifactStore, RunRef
from storage.models import CorrectionKind, EventKind
from storage.repo import create_correction, create_event, create_run, create_tenant, list_corrections
from storage.schemas import validate_table
from tasks.appearance import APPEARANCE_DIM, APPEARANCE_LAYOUT
from tasks.cluster import (
    ClusterParams,
    CorrectionIn,
    SourceRun,
    cluster_tracks,
    corrections_in,
    load_sources,
    map_tracks,
)
from tasks.detect_track import DetectParams
from tasks.quality import identities_of, label_tracks, track_whole
from tasks.screentime import compute_screentime
from tests.fixtures.identities import (
    GAME_SPEC,
    EpisodeCase,
    GameCase,
    cast_purity,
    game_screentime_errors,
    player_count,
    team_accuracy,
)

RED, BLUE, BLACK = (45.0, 60.0, 45.0), (40.0, 10.0, -50.0), (15.0, 0.0, 0.0)
HEADS = [(30.0, 10.0, 20.0), (60.0, 15.0, 25.0), (20.0, 5.0, 5.0), (70.0, 10.0, 15.0), (90.0, 30.0, 40.0)]


def _vector(
    kit: tuple[float, float, float],
    head: tuple[float, float, float],
    rng: np.random.Generator,
    number: int = 0,
    confidence: float = 1.0,
) -> list[float]:
    v = np.zeros(APPEARANCE_DIM, np.float32)
    v[APPEARANCE_LAYOUT["torso_lab"]] = np.asarray(kit) + rng.normal(0, 2, 3)
    v[APPEARANCE_LAYOUT["skin_lab"]] = np.asarray(head) + rng.normal(0, 1.5, 3)
    v[APPEARANCE_LAYOUT["shorts_lab"]] = (90.0, 0.0, 0.0)
    v[APPEARANCE_LAYOUT["torso_coverage"]] = 0.9
    v[APPEARANCE_LAYOUT["number"]] = number
    v[APPEARANCE_LAYOUT["number_conf"]] = confidence
    return v.tolist()


# The jersey number a track's samples read: one number throughout, or (switch_s, before, after)
Numbers = dict[int, int | tuple[float, int, int]]


class _Game:
    """Hand-made tracks and embeddings: (track_id, kit, head, start_s, end_s, x); ``numbers`` gives
    the jersey number read (confidence 0.97) on each sample of a track (none where not given)."""

    def __init__(
        self,
        spec: Sequence[tuple[int, tuple[float, float, float], int, float, float, float]],
        numbers: Numbers | None = None,
    ) -> None:
        numbers = numbers or {}
        rng = np.random.default_rng(0)
        tracks, embeddings = [], []
        for tid, kit, head, start, end, x in spec:
            for k in range(round(start * 5), round(end * 5)):
                box = {"x1": x, "y1": 300.0, "x2": x + 30, "y2": 390.0}
                tracks.append(
                    {"angle": "main", "track_id": tid, "frame": k * 5, "time_s": k / 5, **box, "conf": 0.9}
                )
                if k % 2 == 0:
                    read = numbers.get(tid, 0)
                    if isinstance(read, tuple):
                        read = read[1] if k / 5 < read[0] else read[2]
                    embeddings.append(
                        {
                            "angle": "main",
                            "track_id": tid,
                            "frame": k * 5,
                            "kind": "appearance",
                            "vector": _vector(kit, HEADS[head], rng, read, 0.97 if read else 1.0),
                            "face_x1": None,
                            "face_y1": None,
                            "face_x2": None,
                            "face_y2": None,
                        }
                    )
        self.tracks = pl.DataFrame(tracks, schema_overrides={"frame": pl.Int32, "track_id": pl.Int64})
        self.embeddings = pl.DataFrame(
            embeddings,
            schema_overrides={
                "frame": pl.Int32,
                "vector": pl.List(pl.Float32),
                **dict.fromkeys(["face_x1", "face_y1", "face_x2", "face_y2"], pl.Float32),
            },
        )

    def identities(self, corrections: list[CorrectionIn] | None = None, **kw: Any) -> pl.DataFrame:
        out = cluster_tracks(
            self.embeddings, self.tracks, event_kind="game", corrections=corrections or [], **kw
        )
        validate_table("identities", out)
        return out


def _by_track(identities: pl.DataFrame) -> dict[int, dict[str, object]]:
    return {t: row for row in identities.iter_rows(named=True) for t in row["track_ids"]}


@pytest.fixture
def game() -> _Game:
    return _Game(
        [
            (1, RED, 0, 0, 4, 100),  # red player 0 leaves at 4 s ...
            (2, RED, 0, 4.4, 10, 110),  # ... and is picked up again a moment later nearby
            (3, RED, 1, 0, 10, 400),
            (4, BLUE, 2, 0, 10, 700),
            (5, BLUE, 3, 0, 3, 900),
            (6, BLUE, 3, 7, 10, 1000),  # blue player 3 re-enters after 4 s
            (7, BLACK, 0, 0, 10, 535),  # the referee, between the teams
        ]
    )


def test_two_teams_and_a_referee(game: _Game) -> None:
    by_track = _by_track(game.identities())
    teams = {t: row["team"] for t, row in by_track.items()}
    assert teams[1] == teams[2] == teams[3] != teams[4] == teams[5] == teams[6]
    assert {teams[1], teams[4]} == {"A", "B"}
    assert by_track[7]["kind"] == "referee" and by_track[7]["team"] is None


def test_fragments_of_one_player_merge_but_team_mates_do_not(game: _Game) -> None:
    identities = game.identities()
    groups = sorted(sorted(ts) for ts in identities["track_ids"].to_list())
    assert groups == [[1, 2], [3], [4], [5, 6], [7]]
    assert identities["identity_id"].to_list() == [1, 2, 3, 4, 5]


def test_two_numbers_are_two_players_however_alike_they_look() -> None:
    """The fixture's red player 0 re-found 0.4 s later 10 px away is one player by look and motion;
    if the two tracks read different shirt numbers, they are two team-mates (a look-alike took over)."""
    spec = [(1, RED, 0, 0, 4, 100), (2, RED, 0, 4.4, 10, 110), (3, BLUE, 2, 0, 10, 700)]
    assert sorted(sorted(ts) for ts in _Game(spec).identities()["track_ids"].to_list()) == [[1, 2], [3]]
    read = _Game(spec, numbers={1: 7, 2: 9, 3: 4}).identities()
    assert sorted(sorted(ts) for ts in read["track_ids"].to_list()) == [[1], [2], [3]]


def test_one_number_is_one_player_whatever_the_look_says() -> None:
    """A player who comes back looking different (his skin and hair in another light: a look distance
    past ``merge_max_cost``) is another player by look; reading his number on both tracks joins them,
    and a team-mate with another number stays apart."""
    spec = [
        (1, RED, 0, 0, 3, 100),
        (2, RED, 4, 5, 10, 160),
        (3, RED, 2, 0, 10, 500),
        (4, BLUE, 3, 0, 10, 800),
    ]
    unread = _by_track(_Game(spec).identities())
    assert unread[1]["identity_id"] != unread[2]["identity_id"]
    read = _by_track(_Game(spec, numbers={1: 10, 2: 10, 3: 11}).identities())
    assert read[1]["identity_id"] == read[2]["identity_id"] != read[3]["identity_id"]
    assert read[1]["kind"] == "player" and read[1]["team"] == read[3]["team"]


def test_identities_reading_one_number_are_one_player_where_no_link_could_join_them() -> None:
    """Number 10 leaves by the left edge and is seen again at the right 0.5 s later: no link crosses
    the picture unseen, so the chaining leaves two players; one number in one team makes them one."""
    spec = [
        (1, RED, 0, 0, 3, 100),
        (2, RED, 0, 3.5, 10, 1200),
        (3, RED, 2, 0, 10, 500),
        (4, BLUE, 3, 0, 10, 800),
    ]
    unread = _by_track(_Game(spec).identities())
    assert unread[1]["identity_id"] != unread[2]["identity_id"]
    read = _by_track(_Game(spec, numbers={1: 10, 2: 10, 3: 11, 4: 10}).identities())
    assert read[1]["identity_id"] == read[2]["identity_id"] != read[3]["identity_id"]
    assert read[4]["identity_id"] != read[1]["identity_id"]  # the other team's number 10


def test_a_track_whose_number_switches_is_cut_where_it_does() -> None:
    """The tracker swapped two team-mates without a gap: track 1 reads 7, then 9 from 5 s. Number 9's
    own track ends there, number 7's starts there; cut at the switch, each part chains to its player,
    so two players are seen for the whole clip, not three."""
    spec = [
        (1, RED, 0, 0, 10, 100),
        (2, RED, 0, 0, 4.8, 130),  # number 9 until the swap ...
        (3, RED, 0, 5.2, 10, 120),  # ... number 7 after it
        (4, BLUE, 3, 0, 10, 800),
    ]
    numbers: Numbers = {1: (5.0, 7, 9), 2: 9, 3: 7, 4: 4}
    by_track = _by_track(_Game(spec, numbers=numbers).identities())
    players = {row["identity_id"] for t, row in by_track.items() if t != 4}
    assert len(players) == 2
    assert by_track[2]["identity_id"] != by_track[3]["identity_id"]
    assert by_track[1]["identity_id"] in {by_track[2]["identity_id"], by_track[3]["identity_id"]}


def test_reads_below_the_confidence_floor_are_not_evidence() -> None:
    """Two look-alike fragments read 7 and 9 at confidence 0.5: not trusted, they chain as unread."""
    spec = [(1, RED, 0, 0, 4, 100), (2, RED, 0, 4.4, 10, 110), (3, BLUE, 2, 0, 10, 700)]
    game = _Game(spec, numbers={1: 7, 2: 9})
    weak = game.embeddings.with_columns(
        pl.col("vector").list.eval(
            pl.when(pl.int_range(pl.len()) == APPEARANCE_LAYOUT["number_conf"].start)
            .then(pl.lit(0.5, pl.Float32))
            .otherwise(pl.element())
        )
    )
    found = cluster_tracks(weak, game.tracks, event_kind="game", corrections=[])
    assert sorted(sorted(ts) for ts in found["track_ids"].to_list()) == [[1, 2], [3]]


def test_a_short_shadow_on_a_team_mate_joins_them_but_a_brief_player_elsewhere_does_not() -> None:
    crossing = _Game(
        [
            (1, RED, 0, 0, 10, 100),
            (2, RED, 1, 0, 10, 400),
            (3, RED, 1, 5.0, 5.6, 410),  # 3 rows on top of player 2: the tracker's second box on them
            (4, RED, 2, 5.0, 5.6, 1200),  # 3 rows of a team-mate seen briefly, far from everyone
            (5, BLUE, 3, 0, 10, 700),
            (6, BLUE, 3, 6.0, 6.6, 110),  # on top of red player 1, but in the other kit
        ]
    )
    groups = sorted(sorted(ts) for ts in crossing.identities()["track_ids"].to_list())
    assert groups == [[1], [2, 3], [4], [5], [6]]


def test_a_duplicate_box_on_a_team_mate_is_theirs_even_when_it_looks_like_a_later_player() -> None:
    crossing = _Game(
        [
            (1, RED, 0, 0, 10, 100),
            (2, RED, 1, 0, 10, 400),
            (3, RED, 2, 5.0, 6.0, 405),  # 5 rows on top of player 2 (a box over two crossing people) ...
            (4, RED, 2, 8.0, 10, 200),  # ... that looks like a team-mate who comes on 2 s later
            (5, BLUE, 3, 0, 10, 700),
        ]
    )
    groups = sorted(sorted(ts) for ts in crossing.identities()["track_ids"].to_list())
    assert groups == [[1], [2, 3], [4], [5]]
    chained = crossing.identities(params=ClusterParams(shadow_track_distance=0))["track_ids"]
    assert sorted(sorted(ts) for ts in chained) == [[1], [2], [3, 4], [5]]  # without the rule


def test_a_short_track_on_a_team_mate_that_reads_another_number_is_another_player() -> None:
    # 5 rows on top of red player 1 (the tracker's part of a team-mate running with him, cut off by
    # link where its number switched): a shadow by position, another player by his number
    spec = [(1, RED, 0, 0.0, 10.0, 400.0), (2, RED, 1, 5.0, 6.0, 405.0), (3, BLUE, 2, 0.0, 10.0, 700.0)]
    assert sorted(sorted(ts) for ts in _Game(spec).identities()["track_ids"].to_list()) == [[1, 2], [3]]
    read = _Game(spec, numbers={1: 22, 2: 7, 3: 4}).identities()
    assert sorted(sorted(ts) for ts in read["track_ids"].to_list()) == [[1], [2], [3]]


def test_a_short_track_on_a_team_mate_goes_to_the_player_whose_number_it_reads() -> None:
    spec = [
        (1, RED, 0, 0.0, 10.0, 400.0),
        (2, RED, 1, 5.0, 6.0, 405.0),  # on top of player 1, reading 7 ...
        (3, RED, 1, 7.0, 10.0, 1100.0),  # ... the number of a team-mate seen later far away
        (4, BLUE, 2, 0.0, 10.0, 700.0),
    ]
    read = _Game(spec, numbers={1: 22, 2: 7, 3: 7, 4: 4}).identities()
    assert sorted(sorted(ts) for ts in read["track_ids"].to_list()) == [[1], [2, 3], [4]]


def test_tracks_overlapping_longer_than_a_hand_over_are_never_one_person() -> None:
    same_look = _Game([(1, RED, 0, 0, 6, 100), (2, RED, 0, 3, 10, 500)])
    assert len(same_look.identities()) == 2


def test_a_track_seen_again_after_a_gap_is_not_cut_when_no_other_track_claims_the_later_stretch() -> None:
    refound = _Game(
        [
            (1, RED, 0, 0, 5, 100),  # track 1 holds a red player ...
            (1, RED, 0, 6.4, 10, 160),  # ... and, 1.4 s later, a red player again (nobody else's)
            (2, RED, 0, 5.4, 10, 105),  # a red look-alike at the same time: a second person
            (3, BLUE, 2, 0, 10, 700),
        ]
    )
    groups = sorted(sorted(ts) for ts in refound.identities()["track_ids"].to_list())
    assert groups == [[1], [2], [3]]  # cut, track 1's first stretch would take track 2 along


def test_a_new_track_that_starts_while_the_old_one_still_holds_the_player_continues_it() -> None:
    hand_over = _Game(
        [
            (1, RED, 0, 0, 5, 100),
            (2, RED, 0, 4.4, 10, 110),  # started 0.6 s before track 1 let go of the player
            (3, RED, 1, 0, 10, 400),
            (4, BLUE, 2, 0, 10, 700),
        ]
    )
    groups = sorted(sorted(ts) for ts in hand_over.identities()["track_ids"].to_list())
    assert groups == [[1, 2], [3], [4]]
    strict = hand_over.identities(params=ClusterParams(overlap_tolerance_s=0))["track_ids"]
    assert sorted(sorted(ts) for ts in strict) == [[1], [2], [3], [4]]


def test_a_track_that_swaps_to_the_other_team_is_cut_for_the_chaining() -> None:
    swapped = _Game(
        [
            (1, RED, 0, 0, 4, 100),  # red player 0 ...
            (5, RED, 0, 4.4, 10, 110),  # ... and his second track
            (2, BLUE, 2, 0, 3, 400),  # track 2 holds blue player 2 for 3 s ...
            (2, RED, 1, 3, 10, 420),  # ... then, without a gap, red player 1 for 7 s
            (3, RED, 1, 0, 2.8, 430),  # red player 1 before the swap
            (4, BLUE, 3, 0, 10, 700),
        ]
    )
    groups = sorted(sorted(ts) for ts in swapped.identities()["track_ids"].to_list())
    assert groups == [[1, 5], [2, 3], [4]]


def test_a_track_that_changes_player_after_a_gap_does_not_split_its_first_player() -> None:
    linked = _Game(
        [
            (1, RED, 0, 0, 5, 100),  # track 1 holds red player 0 ...
            (1, RED, 1, 7, 10, 420),  # ... and, after 2 s unseen, red player 1 (a wrong link)
            (2, RED, 0, 5.4, 10, 110),  # player 0 again, overlapping track 1's second stretch
            (3, RED, 1, 0, 6.4, 400),  # player 1 before
            (4, BLUE, 2, 0, 10, 700),
        ]
    )
    groups = sorted(sorted(ts) for ts in linked.identities()["track_ids"].to_list())
    assert groups == [[1, 2], [3], [4]]
    whole = sorted(
        sorted(ts) for ts in linked.identities(params=ClusterParams(stretch_gap_s=1e3))["track_ids"]
    )
    assert whole == [[1], [2], [3], [4]]  # what chaining whole tracks gives


def test_assigning_a_cluster_names_it_and_renames_a_team(game: _Game) -> None:
    before = _by_track(game.identities())
    corrections = [
        CorrectionIn(
            kind="assign_cluster", payload={"identity_id": before[3]["identity_id"], "label": "Jane Doe"}
        ),
        CorrectionIn(kind="assign_cluster", payload={"team_cluster": before[4]["team"], "team": "Lions"}),
    ]
    after = _by_track(game.identities(corrections))
    assert after[3]["label"] == "Jane Doe" and after[3]["corrected"] and after[3]["confidence"] == 1.0
    assert after[4]["team"] == after[5]["team"] == "Lions"
    assert after[1]["team"] == before[1]["team"]


def test_same_label_merges_identities(game: _Game) -> None:
    before = _by_track(game.identities())
    corrections = [
        CorrectionIn(kind="assign_cluster", payload={"identity_id": before[t]["identity_id"], "label": "Sam"})
        for t in (1, 3)
    ]
    after = game.identities(corrections)
    sam = after.filter(pl.col("label") == "Sam")
    assert sam.height == 1 and sorted(sam["track_ids"][0]) == [1, 2, 3]


def test_override_and_exclude_track(game: _Game) -> None:
    before = _by_track(game.identities())
    corrections = [
        CorrectionIn(kind="override_track", payload={"track_id": 2, "identity_id": before[3]["identity_id"]}),
        CorrectionIn(kind="override_track", payload={"track_id": 6, "team": "A"}),
        CorrectionIn(kind="exclude_track", payload={"track_id": 7}),
    ]
    after = _by_track(game.identities(corrections))
    assert after[2]["identity_id"] == after[3]["identity_id"] and after[2]["corrected"]
    assert after[1]["identity_id"] != after[2]["identity_id"]
    assert after[6]["team"] == "A" and after[6]["track_ids"] == [6]
    assert 7 not in after


def test_corrections_follow_tracks_into_a_run_that_numbers_them_differently(game: _Game) -> None:
    source = SourceRun(tracks=game.tracks, identities=game.identities())
    renumbered = _Game(
        [
            (11, RED, 0, 0, 4, 100),
            (12, RED, 0, 4.4, 10, 110),
            (13, RED, 1, 0, 10, 400),
            (14, BLUE, 2, 0, 10, 700),
            (15, BLUE, 3, 0, 3, 900),
            (16, BLUE, 3, 7, 10, 1000),
            (17, BLACK, 0, 0, 10, 535),
        ]
    )
    src = _by_track(source.identities)  # type: ignore[arg-type]
    corrections = [
        CorrectionIn(
            kind="assign_cluster",
            payload={"identity_id": src[1]["identity_id"], "label": "Kim"},
            source_run_id="r1",
        ),
        CorrectionIn(kind="exclude_track", payload={"track_id": 7}, source_run_id="r1"),
    ]
    after = _by_track(renumbered.identities(corrections, sources={"r1": source}, run_id="r2"))
    assert after[11]["label"] == after[12]["label"] == "Kim"
    assert 17 not in after


def test_map_tracks_needs_the_same_boxes(game: _Game) -> None:
    moved = game.tracks.with_columns(pl.col("track_id") + 100, pl.col("x1") + 200, pl.col("x2") + 200)
    assert map_tracks(game.tracks, game.tracks.with_columns(pl.col("track_id") + 100), [1]) == {1: [101]}
    assert map_tracks(game.tracks, moved, [3]) == {}


# --- episodes (hand-made face vectors) ------------------------------------------------------------


def _faces(
    spec: list[tuple[int, int, float, float]], noise: float = 0.05
) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(1)
    people = rng.normal(0, 1, (4, 128))
    people = people / np.linalg.norm(people, axis=1, keepdims=True) * 0.5  # ~0.7 apart
    tracks, embeddings = [], []
    for tid, person, start, end in spec:
        for k in range(round(start * 5), round(end * 5)):
            box = {"x1": 500.0, "y1": 200.0, "x2": 700.0, "y2": 400.0}
            tracks.append(
                {"angle": "main", "track_id": tid, "frame": k * 5, "time_s": k / 5, **box, "conf": 0.9}
            )
            vector = people[person] + rng.normal(0, noise / np.sqrt(128), 128)
            embeddings.append(
                {
                    "angle": "main",
                    "track_id": tid,
                    "frame": k * 5,
                    "kind": "face",
                    "vector": vector.tolist(),
                    "face_x1": 500.0,
                    "face_y1": 200.0,
                    "face_x2": 700.0,
                    "face_y2": 400.0,
                }
            )
    return (
        pl.DataFrame(tracks, schema_overrides={"frame": pl.Int32, "track_id": pl.Int64}),
        pl.DataFrame(embeddings, schema_overrides={"frame": pl.Int32, "vector": pl.List(pl.Float32)}),
    )


def test_cast_members_are_clustered_across_shots() -> None:
    tracks, embeddings = _faces([(1, 0, 0, 2), (2, 1, 2, 4), (3, 0, 4, 6), (4, 2, 6, 8), (5, 1, 8, 10)])
    identities = cluster_tracks(embeddings, tracks, event_kind="episode")
    groups = sorted(sorted(ts) for ts in identities["track_ids"].to_list())
    assert groups == [[1, 3], [2, 5], [4]]
    assert set(identities["kind"].to_list()) == {"cast"}


def test_excluding_a_wrong_face_changes_the_cluster() -> None:
    # track 3 is person 0 but one of its two samples was a wrong detection of person 1's face
    tracks, embeddings = _faces([(1, 0, 0, 2), (2, 1, 2, 4), (3, 0, 4, 4.4)])
    wrong = embeddings.filter(pl.col("track_id") == 2).head(1)["vector"]
    embeddings = embeddings.with_columns(
        vector=pl.when((pl.col("track_id") == 3) & (pl.col("frame") == 100))
        .then(wrong.first())
        .otherwise(pl.col("vector"))
    )
    strict = ClusterParams(face_distance=0.3)
    before = cluster_tracks(embeddings, tracks, event_kind="episode", params=strict)
    assert sorted(sorted(ts) for ts in before["track_ids"].to_list()) == [[1], [2], [3]]
    fix = [CorrectionIn(kind="exclude_face", payload={"track_id": 3, "frame": 100})]
    after = cluster_tracks(embeddings, tracks, event_kind="episode", params=strict, corrections=fix)
    assert sorted(sorted(ts) for ts in after["track_ids"].to_list()) == [[1, 3], [2]]


# --- quality on generated footage (ground-truth boxes as tracks) ------------------------------------

# Measured on these clips (see the closing note of issue 4): team accuracy 1.000, 14 player
# identities for 14 players, cast purity 1.000 with 4 identities for 4 cast members.
TEAM_ACCURACY_FLOOR = 0.98
PLAYER_COUNT_TOLERANCE = 0.10
CAST_PURITY_FLOOR = 0.95


def _game_identities(case: GameCase, corrections: list[CorrectionIn] | None = None) -> pl.DataFrame:
    tracks = case.tracks.drop("person_id", "team", "role")
    return cluster_tracks(case.embeddings, tracks, event_kind="game", corrections=corrections or [])


def test_players_are_put_in_the_right_team(identity_game: GameCase) -> None:
    identities = _game_identities(identity_game)
    validate_table("identities", identities)
    assert team_accuracy(identities, identity_game.tracks) >= TEAM_ACCURACY_FLOOR
    assert set(identities.filter(pl.col("kind") == "player")["team"]) == {"A", "B"}


# On the same clip tracked by detect_track (not ground truth), the whole chain (detect_track, stitch
# and link, embed, cluster, screentime under the default preset): team accuracy 0.998 of
# player-frames; 14 player identities for 14 players; screen-time error per player mean 1.82 %, max
# 12.8 % (one player's first 1.6 s, before 2 s unseen, went to an identity of its own: the boxes at
# 640x360 are too small for a number to be read) and 6.3 % with the best identities these tracks
# allow (bench/tracking_quality.py has the full-size clips).
TRACKED_TEAM_ACCURACY_FLOOR = 0.98
TRACKED_SCREENTIME_MEAN_CEILING = 0.025


@pytest.fixture(scope="module")
def tracked_game(identity_game: GameCase) -> tuple[GameCase, pl.DataFrame]:
    """The identity game tracked by detect_track: the case with its tracks labelled, and the identities."""
    video = identity_game.clip.video_path
    tracks, identities = identities_of(video, track_whole(video, DetectParams()))
    return replace(identity_game, tracks=label_tracks(identity_game.truth, tracks)), identities


def test_players_are_put_in_the_right_team_on_tracked_boxes(
    tracked_game: tuple[GameCase, pl.DataFrame],
) -> None:
    case, identities = tracked_game
    labelled = case.tracks
    assert labelled["person_id"].null_count() < labelled.height / 10  # the boxes really are the players
    assert team_accuracy(identities, labelled) >= TRACKED_TEAM_ACCURACY_FLOOR


def test_players_and_their_screen_time_on_tracked_boxes(tracked_game: tuple[GameCase, pl.DataFrame]) -> None:
    case, identities = tracked_game
    found, truth = player_count(identities, case.tracks)
    assert abs(found - truth) <= PLAYER_COUNT_TOLERANCE * truth
    result = compute_screentime(
        identities,
        case.tracks,
        duration_s=case.duration_s,
        params="default",
        analysis_fps=5.0,
        frame_sizes={"main": (GAME_SPEC.width, GAME_SPEC.height)},
    )
    errors = game_screentime_errors(result.table, identities, case)
    assert len(errors) == truth
    assert sum(errors.values()) / len(errors) <= TRACKED_SCREENTIME_MEAN_CEILING


def test_fragments_merge_into_about_one_identity_per_player(identity_game: GameCase) -> None:
    identities = _game_identities(identity_game)
    found, truth = player_count(identities, identity_game.tracks)
    assert identity_game.tracks["track_id"].n_unique() > truth + 4  # there were fragments to merge
    assert abs(found - truth) <= PLAYER_COUNT_TOLERANCE * truth


# Issue 4: screen-time error per player <= 3 % of the clip. On ground-truth tracks (this clip) cluster
# reaches mean 0.63 %, max 1.17 %; on tracked footage the tracks' own errors dominate (see
# bench/tracking_quality.py, which prints the best any clustering of those tracks can do).
SCREENTIME_ERROR_CEILING = 0.015


def test_screen_time_per_player_is_within_the_target_on_ground_truth_tracks(identity_game: GameCase) -> None:
    identities = _game_identities(identity_game)
    result = compute_screentime(
        identities,
        identity_game.tracks,
        duration_s=identity_game.duration_s,
        params="strict",
        analysis_fps=5.0,
    )
    errors = game_screentime_errors(result.table, identities, identity_game)
    assert max(errors.values()) <= SCREENTIME_ERROR_CEILING


def test_the_referee_is_not_a_player(identity_game: GameCase) -> None:
    identities = _game_identities(identity_game)
    referee_tracks = identity_game.tracks.filter(pl.col("role") == "referee")["track_id"].unique().to_list()
    kinds = {
        row["kind"] for row in identities.iter_rows(named=True) if set(row["track_ids"]) & set(referee_tracks)
    }
    assert kinds == {"referee"}


def test_cast_members_are_clustered_purely(identity_episode: EpisodeCase) -> None:
    identities = cluster_tracks(
        identity_episode.embeddings, identity_episode.tracks.drop("cast_id"), event_kind="episode"
    )
    assert cast_purity(identities, identity_episode.tracks) >= CAST_PURITY_FLOOR
    assert identities.height == identity_episode.truth["cast_id"].n_unique()


def test_a_correction_of_the_event_changes_the_next_runs_identities_and_screen_time(
    identity_game: GameCase, session: Session, tmp_path: Path
) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    create_tenant(session, tenant_id="club", name="Club")
    event = create_event(
        session,
        tenant_id="club",
        kind=EventKind.game,
        sport="football",
        title="Derby",
        sources=[{"angle": "main", "uri": "x"}],
    )
    first = create_run(session, tenant_id="club", event_id=event.id).run
    second = create_run(session, tenant_id="club", event_id=event.id).run
    ref1, ref2 = RunRef("club", event.id, first.id), RunRef("club", event.id, second.id)
    tracks = identity_game.tracks.drop("person_id", "team", "role")
    # The second run numbers its tracks differently: corrections must follow the boxes, not the ids.
    renumbered = tracks.with_columns(pl.col("track_id") + 1000)
    store.write_table(ref1, "tracks", tracks)
    before = cluster_tracks(identity_game.embeddings, tracks, event_kind="game")
    store.write_table(ref1, "identities", before)
    times = compute_screentime(before, tracks, duration_s=identity_game.duration_s, analysis_fps=5.0).table
    players = times.filter(pl.col("kind") == "player").sort("seconds_on_screen", descending=True)
    star = players.row(0, named=True)
    merged = before.filter(pl.col("track_ids").list.len() >= 2, pl.col("identity_id") != star["identity_id"])
    other = players.filter(pl.col("identity_id").is_in(merged["identity_id"].implode())).row(0, named=True)
    other_tracks = before.filter(pl.col("identity_id") == other["identity_id"])["track_ids"][0].to_list()
    dropped = max(other_tracks, key=lambda t: tracks.filter(pl.col("track_id") == t).height)

    create_correction(
        session,
        tenant_id="club",
        event_id=event.id,
        kind=CorrectionKind.assign_cluster,
        payload={"identity_id": star["identity_id"], "label": "Jane Doe"},
        author="analyst@club",
        source_run_id=first.id,
    )
    create_correction(
        session,
        tenant_id="club",
        event_id=event.id,
        kind=CorrectionKind.exclude_track,
        payload={"track_id": dropped},
        author="analyst@club",
        source_run_id=first.id,
    )
    corrections = corrections_in(list_corrections(session, tenant_id="club", event_id=event.id))
    after = cluster_tracks(
        identity_game.embeddings.with_columns(pl.col("track_id") + 1000),
        renumbered,
        event_kind="game",
        corrections=corrections,
        sources=load_sources(store, ref2, corrections),
        run_id=ref2.run_id,
    )
    new_times = compute_screentime(
        after, renumbered, duration_s=identity_game.duration_s, analysis_fps=5.0
    ).table

    jane = new_times.filter(pl.col("label") == "Jane Doe").row(0, named=True)
    assert jane["seconds_on_screen"] == pytest.approx(star["seconds_on_screen"])
    jane_identity = after.filter(pl.col("label") == "Jane Doe").row(0, named=True)
    assert jane_identity["corrected"] and jane_identity["confidence"] == 1.0
    assert all(row["track_ids"].count(dropped + 1000) == 0 for row in after.iter_rows(named=True))
    other_after = [
        row for row in after.iter_rows(named=True) if set(row["track_ids"]) & {t + 1000 for t in other_tracks}
    ]
    (other_row,) = other_after
    lost = new_times.filter(pl.col("identity_id") == other_row["identity_id"])["seconds_on_screen"][0]
    dropped_s = tracks.filter(pl.col("track_id") == dropped).height / 5.0
    assert lost == pytest.approx(other["seconds_on_screen"] - dropped_s, abs=0.5)
    assert before.filter(pl.col("corrected")).height == 0


def test_a_look_from_few_samples_counts_less() -> None:
    from tasks.cluster_base import TrackInfo
    from tasks.cluster_fragments import look_distance

    def info(look: float, samples: int) -> TrackInfo:
        features = {"look": np.array([look, 0.0]), "look_samples": np.array([samples])}
        return TrackInfo("main", 0.0, 1.0, samples, np.zeros(4), np.zeros(4), features)

    params = ClusterParams()
    # a 3-sample fragment 25.7 from a 16-sample track (q-tight-shaky): sampling noise takes ~3 off
    assert look_distance(info(0, 3), info(25.7, 16), params) == pytest.approx(22.4, abs=0.1)
    # well-sampled looks keep nearly their whole distance, and no sampling noise changes nothing
    assert look_distance(info(0, 200), info(25.7, 200), params) == pytest.approx(25.7, abs=0.5)
    assert look_distance(info(0, 3), info(25.7, 16), ClusterParams(look_noise=0)) == pytest.approx(25.7)


def test_a_track_lost_and_found_again_at_once_continues_there_not_in_a_look_alike_far_away() -> None:
    from tasks.cluster_base import TrackInfo
    from tasks.cluster_fragments import merge_fragments

    def info(start: float, end: float, first_x: float, last_x: float, look: float) -> TrackInfo:
        def box(x: float) -> np.ndarray:
            return np.array([x - 20, 300.0, x + 20, 400.0])

        features = {"look": np.array([look, 0.0]), "look_samples": np.array([20])}
        return TrackInfo("main", start, end, 20, box(first_x), box(last_x), features)

    # seed+100 q-default: player 22's track ends at 14 s mid-picture (an occlusion) and a new track
    # holds him from there at once, but its look is off (it later drifts to a team-mate); a
    # look-alike team-mate enters 670 px away 2.8 s later, a move a sprinter could make
    infos = {
        1: info(0.0, 14.0, 300, 520, look=0.0),
        2: info(14.0, 19.8, 530, 230, look=15.0),
        3: info(16.8, 19.8, 1190, 820, look=2.0),
    }
    chains = merge_fragments(infos, [1, 2, 3], ClusterParams())
    assert {1, 3} not in chains
    assert {1, 2} in chains and {3} in chains
    # without the re-found track the far look-alike is still a plausible continuation
    assert {1, 3} in merge_fragments({k: infos[k] for k in (1, 3)}, [1, 3], ClusterParams())


def test_a_player_does_not_cross_most_of_the_picture_unseen() -> None:
    from tasks.cluster_base import TrackInfo
    from tasks.cluster_fragments import merge_fragments

    def info(start: float, end: float, first_x: float, last_x: float) -> TrackInfo:
        def box(x: float) -> np.ndarray:
            return np.array([x - 20, 300.0, x + 20, 400.0])

        features = {"look": np.zeros(2), "look_samples": np.array([20]), "picture_width": np.array([1280.0])}
        return TrackInfo("main", start, end, 20, box(first_x), box(last_x), features)

    # seed+100 q-tight-shaky: a track leaves by the right edge at 11.4 s and a look-alike team-mate
    # enters by the left 4.2 s later (a sprint could cover it, but not unseen through the picture)
    infos = {1: info(9.2, 11.4, 900, 1255), 2: info(15.6, 19.8, 45, 300)}
    assert merge_fragments(infos, [1, 2], ClusterParams()) == [{1}, {2}]
    # coming back by the side he left is still a link, and so is a crossing at a looser limit
    infos[3] = info(15.6, 19.8, 1230, 900)
    assert {1, 3} in merge_fragments(infos, [1, 2, 3], ClusterParams())
    assert merge_fragments(infos, [1, 2], ClusterParams(unseen_crossing=1.0)) == [{1, 2}]


def test_a_stray_row_and_a_second_box_on_the_same_player_do_not_split_him() -> None:
    # seed+100 q-sparse-static: track 4 holds player 0 for 2.6 s, then one row (no sample) on a
    # team-mate 3 s later, then a second box on player 0 while track 9 holds him too; track 12 is
    # player 0 again later
    duplicate = _Game(
        [
            (4, RED, 0, 0, 2.6, 300),
            (4, RED, 1, 5.8, 6.0, 600),  # the stray row, on team-mate 1
            (4, RED, 3, 7.2, 9.0, 305),  # a second box on player 0 (its look off: two people in it)
            (9, RED, 0, 3.6, 8.8, 310),
            (12, RED, 0, 13, 19.8, 320),
            (1, RED, 1, 0, 19.8, 600),
            (3, BLUE, 2, 0, 19.8, 900),
        ]
    )
    groups = sorted(sorted(ts) for ts in duplicate.identities()["track_ids"].to_list())
    # glued to the first stretch, the stray row would make it overlap track 9 (no link: [4], [9, 12]);
    # taken for a sign the cut is wrong, the second box would get track 4 chained whole ([4, 12], [9])
    assert groups == [[1], [3], [4, 9, 12]]


def test_a_stretch_too_small_to_judge_is_left_out_of_the_chaining() -> None:
    from tasks.cluster_fragments import stretches

    times = np.array([0.0, 0.2, 0.4, 0.6, 3.6, 5.2, 5.4, 5.6, 5.8])
    samples = np.array([0.0, 0.4, 5.2, 5.6])
    assert stretches(times, samples, 1.0, 3) == [(0, 4), (5, 9)]  # the lone row at 3.6 s is in neither
    assert stretches(times[4:5], samples, 1.0, 3) == [(0, 1)]  # nothing to judge: one stretch


def test_a_box_over_two_people_goes_to_the_player_it_stands_on() -> None:
    # seed+100 q-dense: a box spanned two team-mates, one standing behind the other (26 % taller
    # than the people around it, its look a mix of both); too long for a shadow, it was a player
    # of its own
    tall = _Game(
        [
            (1, RED, 0, 0, 10, 100),
            (2, RED, 1, 0, 10, 400),
            (3, RED, 2, 0, 10, 700),
            (4, BLUE, 3, 0, 10, 900),
            (5, BLUE, 2, 0, 10, 1050),
            (6, BLUE, 1, 0, 10, 1200),
            (9, RED, 3, 2, 4, 104),  # 10 rows, on player 0's feet
        ]
    )
    tall.tracks = tall.tracks.with_columns(
        y1=pl.when(pl.col("track_id") == 9).then(pl.col("y1") - 60).otherwise(pl.col("y1"))
    )
    groups = sorted(sorted(ts) for ts in tall.identities()["track_ids"].to_list())
    assert groups == [[1, 9], [2], [3], [4], [5], [6]]
    alone = tall.identities(params=ClusterParams(max_stature=1e3))["track_ids"].to_list()
    assert sorted(sorted(ts) for ts in alone) == [[1], [2], [3], [4], [5], [6], [9]]


def test_a_box_over_two_people_fills_the_gap_of_the_team_mate_behind() -> None:
    # tuned q-tight-shaky: player 19 ran behind team-mate 21 for 1.6 s under one tall box standing on
    # 21's feet; 21's own track went on meanwhile, while 19's identity was unseen from 7.2 to 10.8 s:
    # given to 21 the box added nothing, and 19 lost the 3.6 s (17.5 % of the clip)
    def game(back_at: float) -> _Game:
        tall = _Game(
            [
                (1, RED, 0, 0, 10, 100),  # player 0, tracked throughout
                (2, RED, 1, 0, 3.0, 140),  # player 1 runs beside him ...
                (7, RED, 1, back_at, 10, 140),  # ... and is seen again once out from behind him
                (3, RED, 2, 0, 10, 700),
                (4, BLUE, 3, 0, 10, 900),
                (5, BLUE, 2, 0, 10, 1050),
                (6, BLUE, 1, 0, 10, 1200),
                (9, RED, 3, 3.2, 5.0, 104),  # one box over both, on player 0's feet
            ]
        )
        tall.tracks = tall.tracks.with_columns(
            y1=pl.when(pl.col("track_id") == 9).then(pl.col("y1") - 60).otherwise(pl.col("y1"))
        )
        return tall

    def groups(g: _Game) -> list[list[int]]:
        return sorted(sorted(ts) for ts in g.identities()["track_ids"].to_list())

    assert groups(game(back_at=5.2)) == [[1], [2, 7, 9], [3], [4], [5], [6]]
    # seen again only 3 s after the box: nothing says he was in it, so it is the player it stands on's
    assert groups(game(back_at=8.0)) == [[1, 9], [2, 7], [3], [4], [5], [6]]
