"""screentime: samples become merged intervals per identity and per team, with named presets."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from storage.schemas import validate_table
from tasks.cluster import cluster_tracks
from tasks.detect_track import DetectParams
from tasks.embed import EmbedParams, embed_video
from tasks.quality import label_tracks, track_whole
from tasks.screentime import (
    AT_EDGE,
    CLEAR,
    PRESETS,
    UNKNOWN,
    ScreentimeParams,
    compute_screentime,
    merge_samples,
    preset,
    screentime_csv,
)
from tasks.stitch import tracks_table
from tests.fixtures.identities import (
    EPISODE_SPEC,
    GAME_SPEC,
    EpisodeCase,
    GameCase,
    cast_screentime_errors,
    game_misattributed_time,
    game_screentime_errors,
)

FPS = 5.0


def _track(track_id: int, start_s: float, end_s: float, angle: str = "main") -> list[dict[str, object]]:
    n0, n1 = round(start_s * FPS), round(end_s * FPS)
    return [
        {
            "angle": angle,
            "track_id": track_id,
            "frame": k * 5,
            "time_s": k / FPS,
            "x1": 10.0,
            "y1": 10.0,
            "x2": 50.0,
            "y2": 120.0,
            "conf": 0.9,
        }
        for k in range(n0, n1)
    ]


def _identities(groups: dict[int, tuple[list[int], str | None]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "identity_id": list(groups),
            "kind": ["player"] * len(groups),
            "label": [None] * len(groups),
            "team": [team for _, team in groups.values()],
            "track_ids": [tracks for tracks, _ in groups.values()],
            "confidence": [1.0] * len(groups),
            "corrected": [False] * len(groups),
        },
        schema_overrides={"label": pl.Utf8},
    )


def test_a_person_seen_on_every_analysed_frame_gets_the_whole_span() -> None:
    """The last analysed frame (9.8 s of a 10 s video) stands for the rest of the video: no frame
    after it is analysed. A person last seen one frame earlier gets half a period after it."""
    times = [k / FPS for k in range(50)]  # 0.0 .. 9.8
    spans = merge_samples(times, period_s=1 / FPS, params=PRESETS["strict"], duration_s=10.0)
    assert spans == [(0.0, pytest.approx(10.0))]
    earlier = merge_samples(times[:-1], period_s=1 / FPS, params=PRESETS["strict"], duration_s=10.0)
    assert earlier == [(0.0, pytest.approx(9.7))]


@pytest.mark.parametrize(
    ("name", "gap_s", "pieces"),
    [("strict", 0.4, 2), ("default", 0.4, 1), ("default", 0.8, 2), ("broadcast", 1.4, 1)],
)
def test_gap_tolerance_depends_on_the_preset(name: str, gap_s: float, pieces: int) -> None:
    times = [k / FPS for k in range(20)] + [3.8 + gap_s + k / FPS for k in range(20)]
    spans = merge_samples(times, period_s=1 / FPS, params=preset(name), duration_s=20.0)
    assert len(spans) == pieces


def test_broadcast_drops_flashes_and_pads_edges() -> None:
    flash = merge_samples([5.0], period_s=0.2, params=PRESETS["broadcast"], duration_s=10.0)
    assert flash == []
    long = merge_samples(
        [2.0 + k * 0.2 for k in range(10)], period_s=0.2, params=PRESETS["broadcast"], duration_s=10.0
    )
    assert long == [(pytest.approx(1.65), pytest.approx(4.15))]


def test_intervals_are_clipped_to_the_video() -> None:
    padded = ScreentimeParams(gap_tolerance_s=0.5, edge_padding_s=0.5)
    spans = merge_samples([0.0, 9.9], period_s=0.2, params=padded, duration_s=10.0)
    assert spans[0][0] == 0.0 and spans[-1][1] == 10.0


def _hidden_for(gap_s: float) -> list[float]:
    """Samples at 0-2.8 s, then ``gap_s`` after the last one, 15 more."""
    return [k / FPS for k in range(15)] + [2.8 + gap_s + k / FPS for k in range(15)]


@pytest.mark.parametrize(
    ("before", "after", "second_track", "pieces"),
    [
        (CLEAR, CLEAR, 1, 1),
        (AT_EDGE, CLEAR, 1, 2),
        (CLEAR, AT_EDGE, 1, 2),
        (UNKNOWN, CLEAR, 1, 2),
        (CLEAR, CLEAR, 2, 2),  # a new track after the gap (as after a hard cut): not held
    ],
)
def test_a_person_the_tracker_followed_inside_the_picture_stays_on_screen(
    before: int, after: int, second_track: int, pieces: int
) -> None:
    times = _hidden_for(1.5)
    place = [CLEAR] * 14 + [before, after] + [CLEAR] * 14
    spans = merge_samples(
        times,
        period_s=1 / FPS,
        params=PRESETS["default"],
        duration_s=20.0,
        place=place,
        tracks=[1] * 15 + [second_track] * 15,
    )
    assert len(spans) == pieces
    if pieces == 1:
        assert spans == [(0.0, pytest.approx(7.2))]  # last sample 7.1 s: the hidden stretch counts


def test_the_hold_has_a_limit_and_strict_has_none() -> None:
    place, track = [CLEAR] * 30, [1] * 30
    default = PRESETS["default"]
    long = merge_samples(
        _hidden_for(3.5), period_s=0.2, params=default, duration_s=20.0, place=place, tracks=track
    )
    assert len(long) == 2
    strict = PRESETS["strict"]
    short = merge_samples(
        _hidden_for(1.0), period_s=0.2, params=strict, duration_s=20.0, place=place, tracks=track
    )
    assert len(short) == 2


def _two_tracks_hidden_between(
    runs: dict[str, np.ndarray], params: ScreentimeParams = PRESETS["default"], after: int = CLEAR
) -> list[tuple[float, float]]:
    """One identity on the main angle: track 1 until 2.8 s, track 2 from 4.3 s (hidden 1.5 s),
    track 2's first box ``after`` (its place in the picture); ``runs`` as ``merge_samples`` takes them."""
    return merge_samples(
        _hidden_for(1.5),
        period_s=1 / FPS,
        params=params,
        duration_s=20.0,
        place=[CLEAR] * 15 + [after] + [CLEAR] * 14,
        tracks=[1] * 15 + [2] * 15,
        angles=["main"] * 30,
        runs=runs,
    )


@pytest.mark.parametrize(
    ("through", "after", "pieces"),
    [
        ((0.0, 9.0), CLEAR, 1),  # another track runs through the gap: held
        ((0.0, 3.0), CLEAR, 2),  # it ends before: nothing says there was no cut
        ((0.0, 9.0), AT_EDGE, 2),  # the second track starts at the picture's edge: he walked in
    ],
)
def test_an_identitys_gap_between_two_of_its_tracks_is_held_when_no_cut_is_possible(
    through: tuple[float, float], after: int, pieces: int
) -> None:
    """Held by ``hold_in_identity_s`` only when a third track of the angle runs through the gap."""
    spans = _two_tracks_hidden_between({"main": np.array([[0.0, 2.8], [4.3, 7.1], through])}, after=after)
    assert len(spans) == pieces
    if pieces == 1:
        assert spans == [(0.0, pytest.approx(7.2))]


def test_an_identitys_gap_is_held_per_angle_and_only_in_default() -> None:
    """The other track runs through the gap on another angle: not held; strict holds nothing."""
    own = np.array([[0.0, 2.8], [4.3, 7.1]])
    assert len(_two_tracks_hidden_between({"main": own, "reverse": np.array([[0.0, 9.0]])})) == 2
    through = {"main": np.array([[0.0, 9.0]])}
    assert len(_two_tracks_hidden_between(through)) == 1  # the same gap is held on its own angle
    assert len(_two_tracks_hidden_between(through, PRESETS["strict"])) == 2


def test_compute_screentime_holds_an_identitys_gap_that_another_track_runs_through() -> None:
    """Identity 1 is tracks 1 (0-3 s) and 2 (4.4-8 s); track 3 (identity 2) is seen throughout."""
    tracks = pl.DataFrame(_track(1, 0, 3) + _track(2, 4.4, 8) + _track(3, 0, 8))
    result = compute_screentime(
        _identities({1: ([1, 2], None), 2: ([3], None)}),
        tracks,
        duration_s=10.0,
        analysis_fps=FPS,
        frame_sizes={"main": (640, 360)},
    )
    seconds = dict(zip(result.table["identity_id"], result.table["seconds_on_screen"], strict=True))
    assert seconds[1] == pytest.approx(7.9)  # 0-7.9 s: the 1.6 s between the tracks counts
    alone = compute_screentime(
        _identities({1: ([1, 2], None)}),
        tracks.filter(pl.col("track_id") != 3),
        duration_s=10.0,
        analysis_fps=FPS,
        frame_sizes={"main": (640, 360)},
    )
    assert alone.table["seconds_on_screen"][0] == pytest.approx(2.9 + 3.6)  # could have been a cut


def test_entering_and_leaving_at_the_picture_edge_is_padded() -> None:
    times = [2.0 + k / FPS for k in range(10)]  # 2.0 .. 3.8
    walk_through = [AT_EDGE] + [CLEAR] * 8 + [AT_EDGE]
    spans = merge_samples(
        times, period_s=1 / FPS, params=PRESETS["default"], duration_s=10.0, place=walk_through
    )
    pad = PRESETS["default"].picture_edge_padding_s  # on top of the half period each sample covers
    assert spans == [(pytest.approx(1.9 - pad), pytest.approx(3.9 + pad))]
    inside = merge_samples(
        times, period_s=1 / FPS, params=PRESETS["default"], duration_s=10.0, place=[CLEAR] * 10
    )
    assert inside == [(pytest.approx(1.9), pytest.approx(3.9))]


def test_frame_sizes_place_each_angles_boxes() -> None:
    """Track 1 (main, 640 wide) is clear of the edges and has a gap; track 2 (reverse, no size
    known) has the same gap: only track 1's is held."""
    hidden = _track(1, 0, 3) + _track(1, 4.4, 8)  # hidden for 1.6 s between samples
    unknown = [dict(r, track_id=2, angle="reverse") for r in hidden]
    tracks = pl.DataFrame(hidden + unknown)
    result = compute_screentime(
        _identities({1: ([1], None), 2: ([2], None)}),
        tracks,
        duration_s=10.0,
        analysis_fps=FPS,
        frame_sizes={"main": (640, 360)},
    )
    seconds = dict(zip(result.table["identity_id"], result.table["seconds_on_screen"], strict=True))
    assert seconds[1] == pytest.approx(7.9)
    assert seconds[2] == pytest.approx(2.9 + 3.6)
    edge = pl.DataFrame([dict(r, x1=2.0) for r in hidden])  # the same track, against the left edge
    at_edge = compute_screentime(
        _identities({1: ([1], None)}),
        edge,
        duration_s=10.0,
        analysis_fps=FPS,
        frame_sizes={"main": (640, 360)},
    )
    pad = PRESETS["default"].picture_edge_padding_s
    padded = 2.9 + 3.6 + 3 * pad  # every end padded but the one at 0 s
    assert at_edge.table["seconds_on_screen"][0] == pytest.approx(padded)


def test_unknown_preset_is_refused() -> None:
    with pytest.raises(ValueError, match="known: strict, default, broadcast"):
        preset("tv")


def test_fragments_of_one_identity_add_up_and_teams_take_the_union() -> None:
    tracks = pl.DataFrame(_track(1, 0, 4) + _track(2, 6, 10) + _track(3, 2, 8) + _track(4, 0, 1))
    identities = _identities({1: ([1, 2], "A"), 2: ([3], "A"), 3: ([4], None)})
    result = compute_screentime(identities, tracks, duration_s=10.0, params="strict", analysis_fps=FPS)
    validate_table("screentime", result.table)
    seconds = dict(zip(result.table["identity_id"], result.table["seconds_on_screen"], strict=True))
    assert seconds[1] == pytest.approx(8.0)  # [0, 3.9] + [5.9, 10]: 9.8 s is the last analysed frame
    assert seconds[2] == pytest.approx(6.0)
    assert seconds[3] == pytest.approx(1.0 - 0.1)
    (team,) = result.teams
    assert team.team == "A" and team.identities == 2
    assert team.seconds_on_screen == pytest.approx(10.0)  # union: someone of A is always on screen
    assert result.table["preset"].unique().to_list() == ["strict"]
    assert result.table.filter(pl.col("identity_id") == 1)["share"][0] == pytest.approx(0.8)


def test_two_angles_share_the_event_clock() -> None:
    tracks = pl.DataFrame(_track(1, 0, 5, "main") + _track(2, 3, 8, "reverse"))
    result = compute_screentime(_identities({1: ([1, 2], None)}), tracks, duration_s=10.0, params="strict")
    assert result.table["seconds_on_screen"][0] == pytest.approx(8.0 - 0.1)
    assert result.sample_period_s == pytest.approx(0.2)


def test_an_identity_whose_tracks_are_gone_has_no_time() -> None:
    tracks = pl.DataFrame(_track(1, 0, 5))
    result = compute_screentime(_identities({1: ([9], "B")}), tracks, duration_s=10.0)
    row = result.table.row(0, named=True)
    assert row["seconds_on_screen"] == 0.0 and row["first_seen_s"] is None and row["intervals"] == []


def test_csv_lists_identities_then_teams() -> None:
    tracks = pl.DataFrame(_track(1, 0, 2) + _track(2, 4, 6))
    result = compute_screentime(_identities({1: ([1], "A"), 2: ([2], "B")}), tracks, duration_s=10.0)
    lines = screentime_csv(result).decode().splitlines()
    assert lines[0].startswith("scope,identity_id,label,team,kind,seconds_on_screen")
    assert [line.split(",")[0] for line in lines[1:]] == ["identity", "identity", "team", "team"]
    assert "0.000-1.900" in lines[1]


# --- quality on generated footage ------------------------------------------------------------------

# Measured (see the closing note of issue 4), on the ground truth's tracks (a perfect detector):
# per player at most 1.2 % of the clip (mean 0.6 %) with the strict preset (time the intervals get
# wrong, missed + credited wrongly: at most 1.7 %, mean 0.7 %); per cast member, on the
# episode tracker's tracks, at most 1.5 % (mean 0.8 %).
PLAYER_ERROR_CEILING = 0.03
CAST_ERROR_CEILING = 0.05


def test_each_players_screen_time_is_within_3_percent_of_the_clip(identity_game: GameCase) -> None:
    tracks = identity_game.tracks.drop("person_id", "team", "role")
    identities = cluster_tracks(identity_game.embeddings, tracks, event_kind="game")
    result = compute_screentime(
        identities, tracks, duration_s=identity_game.duration_s, params="strict", analysis_fps=FPS
    )
    errors = game_screentime_errors(result.table, identities, identity_game)
    assert max(errors.values()) <= PLAYER_ERROR_CEILING, errors
    wrong = game_misattributed_time(result.table, identities, identity_game)
    assert all(wrong[p] >= errors[p] - 1e-9 for p in errors), (wrong, errors)  # the stricter measure
    assert max(wrong.values()) <= PLAYER_ERROR_CEILING, wrong  # measured: at most 1.7 %, mean 0.7 %
    teams = {t.team: t for t in result.teams}
    assert set(teams) == {"A", "B"} and all(t.share > 0.9 for t in teams.values())  # a team is always in view


def test_misattributed_time_adds_what_the_totals_cancel() -> None:
    """A player on screen for the first second of two, whose identity is said to be on from 0.5 to
    1.5 s: the totals agree (1 s each), but half a second is missed and half a second credited wrongly."""
    fps = 10.0
    truth = pl.DataFrame({"frame": list(range(10)), "person_id": [7] * 10, "role": ["player"] * 10})
    tracks = pl.DataFrame({"track_id": [3] * 5, "person_id": [7] * 5, "role": ["player"] * 5})
    identities = pl.DataFrame(
        {"identity_id": [1], "kind": ["player"], "team": ["A"], "track_ids": [[3]]},
        schema={"identity_id": pl.Int64, "kind": pl.Utf8, "team": pl.Utf8, "track_ids": pl.List(pl.Int64)},
    )
    table = pl.DataFrame(
        {"identity_id": [1], "seconds_on_screen": [1.0], "intervals": [[{"start_s": 0.5, "end_s": 1.5}]]}
    )
    case = GameCase(None, truth, tracks, pl.DataFrame(), 2.0, fps)  # type: ignore[arg-type]
    assert game_screentime_errors(table, identities, case) == {7: 0.0}
    assert game_misattributed_time(table, identities, case) == {7: 0.5}


# On the bundled detector's tracks of the same 12 s clip: mean error per player 4.2 % of the clip
# with strict, 1.8 % with default (the picture rules); the time the intervals get wrong (missed +
# credited wrongly) 4.2 % and 3.1 %.
DETECTED_DEFAULT_MEAN_CEILING = 0.045
DETECTED_DEFAULT_WRONG_CEILING = 0.04


def test_the_default_presets_picture_rules_bring_detected_tracks_closer_to_the_truth(
    identity_game: GameCase,
) -> None:
    """The real detector and tracker on the fixture's clip, then embed + cluster: the default preset
    (held track gaps, padding at the picture's edge) errs less than strict, which counts only
    detected samples."""
    tracks = tracks_table(track_whole(identity_game.clip.video_path, DetectParams(analysis_fps=FPS)))
    embeddings = embed_video(str(identity_game.clip.video_path), tracks, EmbedParams(), angle="main")
    identities = cluster_tracks(embeddings, tracks, event_kind="game")
    case = replace(identity_game, tracks=label_tracks(identity_game.truth, tracks), embeddings=embeddings)
    mean, wrong = {}, {}
    for name in ("strict", "default"):
        result = compute_screentime(
            identities,
            tracks,
            duration_s=case.duration_s,
            params=name,
            analysis_fps=FPS,
            frame_sizes={"main": (GAME_SPEC.width, GAME_SPEC.height)},
        )
        mean[name] = float(np.mean(list(game_screentime_errors(result.table, identities, case).values())))
        wrong[name] = float(np.mean(list(game_misattributed_time(result.table, identities, case).values())))
    assert mean["default"] <= DETECTED_DEFAULT_MEAN_CEILING, mean
    assert mean["default"] <= 0.8 * mean["strict"], mean
    assert wrong["default"] <= DETECTED_DEFAULT_WRONG_CEILING, wrong
    assert wrong["default"] < wrong["strict"], wrong


@pytest.mark.parametrize("name", ["strict", "default"])
def test_each_cast_members_screen_time_is_within_5_percent(identity_episode: EpisodeCase, name: str) -> None:
    tracks = identity_episode.tracks.drop("cast_id")
    identities = cluster_tracks(identity_episode.embeddings, tracks, event_kind="episode")
    result = compute_screentime(
        identities,
        tracks,
        duration_s=identity_episode.duration_s,
        params=name,
        analysis_fps=FPS,
        frame_sizes={"main": (EPISODE_SPEC.width, EPISODE_SPEC.height)},
    )
    errors = cast_screentime_errors(result.table, identities, identity_episode)
    assert max(errors.values()) <= CAST_ERROR_CEILING, errors
    assert result.teams == []  # a cast has no teams
