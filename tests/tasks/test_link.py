"""link: a player's track fragments are joined across short gaps, and only when the jump and kit fit."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from storage.schemas import polars_schema
from tasks.appearance import APPEARANCE_DIM
from tasks.detect_track import DETECTION_COLUMNS
from tasks.ingest import Chunk
from tasks.link import LinkParams, claim_starts, link_tracks
from tasks.stitch import stitch
from tests.fixtures.tables import FPS, detection_rows

RED = (50.0, 60.0, 40.0, 30.0, 0.0, 0.0)  # shirt and shorts CIELAB
BLUE = (40.0, 10.0, -50.0, 90.0, 0.0, 0.0)


def _rows(
    local: int | None, frames: range, x: float, dx: float = 4.0, chunk: int = 0, track: int | None = None
) -> list[dict[str, object]]:
    return [{**row, "track_id": track} for row in detection_rows(chunk, local, frames, x, dx)]


def _table(rows: list[dict[str, object]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={**DETECTION_COLUMNS, "track_id": pl.Int64})


def _appearance(detections: pl.DataFrame, kit_of: Mapping[int, tuple[float, ...]]) -> pl.DataFrame:
    """One appearance row per detection, its kit chosen by the row's local track id."""
    rows = [
        {
            **{k: row[k] for k in ("angle", "frame", "x1", "y1", "x2", "y2")},
            "vector": list(kit_of[row["local_track_id"]]) + [0.0] * (APPEARANCE_DIM - 6),
        }
        for row in detections.iter_rows(named=True)
    ]
    return pl.DataFrame(rows, schema=polars_schema("appearance"))


def _ids(out: pl.DataFrame, frames: range) -> list[int]:
    return out.filter(pl.col("frame").is_in(list(frames)))["track_id"].unique().to_list()


def test_a_player_missed_for_a_second_keeps_his_track_id() -> None:
    # track 1 runs to frame 19, the same player is picked up again at frame 25 on the same path
    detections = _table(_rows(1, range(0, 20), 0, track=1) + _rows(2, range(25, 50), 0, track=2))
    out = link_tracks(detections, _appearance(detections, {1: RED, 2: RED}))
    assert out["track_id"].unique().to_list() == [1]


def test_a_jump_too_far_for_the_gap_is_not_linked() -> None:
    detections = _table(_rows(1, range(0, 20), 0, track=1) + _rows(2, range(25, 50), 400, track=2))
    out = link_tracks(detections, _appearance(detections, {1: RED, 2: RED}))
    assert sorted(out["track_id"].unique().to_list()) == [1, 2]


def test_a_gap_longer_than_the_limit_is_not_linked() -> None:
    gap_frames = round((LinkParams().max_gap_s + 1) * FPS)
    detections = _table(
        _rows(1, range(0, 20), 0, dx=0, track=1) + _rows(2, range(20 + gap_frames, 60), 0, dx=0, track=2)
    )
    out = link_tracks(detections, _appearance(detections, {1: RED, 2: RED}))
    assert sorted(out["track_id"].unique().to_list()) == [1, 2]


def test_a_track_in_another_kit_is_not_linked() -> None:
    detections = _table(_rows(1, range(0, 20), 0, track=1) + _rows(2, range(25, 50), 0, track=2))
    out = link_tracks(detections, _appearance(detections, {1: RED, 2: BLUE}))
    assert sorted(out["track_id"].unique().to_list()) == [1, 2]


def test_two_players_reappearing_are_each_linked_to_their_own_track() -> None:
    # two red players 150 px apart both lost at frame 19; each comes back on his own path
    detections = _table(
        _rows(1, range(0, 20), 0, track=1)
        + _rows(2, range(0, 20), 150, track=2)
        + _rows(3, range(24, 50), 150, track=3)
        + _rows(4, range(25, 50), 0, track=4)
    )
    out = link_tracks(detections, _appearance(detections, {k: RED for k in (1, 2, 3, 4)}))
    assert _ids(out.filter(pl.col("x1") < 120 + 4 * pl.col("frame")), range(50)) == [1]
    assert _ids(out.filter(pl.col("x1") >= 120 + 4 * pl.col("frame")), range(50)) == [2]


def test_without_appearance_nothing_is_linked() -> None:
    detections = _table(_rows(1, range(0, 20), 0, track=1) + _rows(2, range(25, 50), 0, track=2))
    assert link_tracks(detections, None).equals(detections)


def test_chunked_stitching_links_like_one_piece() -> None:
    # the player is lost at frame 49 (chunk 0) and found again at frame 62, after the overlap [50, 60)
    chunks = [
        Chunk(index=0, angle="main", path="x", start_s=0.0, end_s=10.0, decode_end_s=12.0),
        Chunk(index=1, angle="main", path="x", start_s=10.0, end_s=20.0, decode_end_s=20.0),
    ]
    whole_chunk = Chunk(index=0, angle="main", path="x", start_s=0.0, end_s=20.0, decode_end_s=20.0)
    first = _table(_rows(1, range(0, 50), 0) + _rows(2, range(0, 60), 600, dx=0))
    second = _table(_rows(1, range(62, 100), 0, chunk=1) + _rows(3, range(50, 100), 600, dx=0, chunk=1))
    whole = _table(
        _rows(1, range(0, 50), 0) + _rows(4, range(62, 100), 0) + _rows(2, range(0, 100), 600, dx=0)
    )
    kits = {1: RED, 2: BLUE, 3: BLUE, 4: RED}
    chunked = stitch(chunks, [first, second], [_appearance(first, kits), _appearance(second, kits)])
    one_piece = stitch([whole_chunk], [whole], [_appearance(whole, kits)])
    for out in (chunked, one_piece):
        assert out["track_id"].n_unique() == 2
        assert out.filter(pl.col("x1") < 500)["track_id"].n_unique() == 1


def _start_row(frame: int, x: float, track: int | None, h: float = 100.0) -> dict[str, object]:
    return {
        "angle": "main",
        "frame": frame,
        "x1": x,
        "y1": 100.0,
        "x2": x + h / 3,
        "y2": 100.0 + h,
        "track_id": track,
    }


def test_a_track_claims_the_untracked_detection_it_was_born_from() -> None:
    schema = {"angle": pl.Utf8, "frame": pl.Int32, "x1": pl.Float32, "y1": pl.Float32, "x2": pl.Float32}
    schema |= {"y2": pl.Float32, "track_id": pl.Int64}
    table = pl.DataFrame(
        [
            _start_row(0, 500.0, None),  # nothing near it starts later: stays untracked
            _start_row(5, 100.0, None),  # where track 3 starts one analysed frame later: claimed
            _start_row(5, 900.0, None),  # too far from track 3's start
            _start_row(5, 300.0, None, h=40.0),  # near, but another size: someone else
            _start_row(10, 110.0, 3),
            _start_row(15, 120.0, 3),
            _start_row(0, 700.0, 1),  # a track of the first frame has nothing before it
            _start_row(10, 700.0, 1),
        ],
        schema=schema,
    )
    assert claim_starts(table)["track_id"].to_list() == [None, 3, None, None, 3, 3, 1, 1]
    # two analysed frames back is not where the track was born
    shifted = table.with_columns(
        pl.when(pl.col("frame") == 5).then(0).otherwise(pl.col("frame")).alias("frame")
    )
    assert claim_starts(shifted)["track_id"].to_list()[1] is None


def test_a_claim_is_not_given_up_to_pair_two_starts_with_boxes_out_of_their_reach() -> None:
    # tracks 1 and 2 start on one frame; of the two untracked boxes before it, only the one at 250 is
    # in reach (of track 1). The summed distances favour 1 -> 1000 and 2 -> 250, both out of reach.
    schema = {"angle": pl.Utf8, "frame": pl.Int32, "x1": pl.Float32, "y1": pl.Float32, "x2": pl.Float32}
    schema |= {"y2": pl.Float32, "track_id": pl.Int64}
    table = pl.DataFrame(
        [
            _start_row(5, 250.0, None),
            _start_row(5, 1000.0, None),
            _start_row(10, 300.0, 1),
            _start_row(10, 0.0, 2),
        ],
        schema=schema,
    )
    assert claim_starts(table)["track_id"].to_list() == [1, None, 1, 2]


# two team-mates: one kit, told apart by skin and hair (APPEARANCE_LAYOUT: skin, then hair)
PALE = (50.0, 60.0, 40.0, 30.0, 0.0, 0.0, 75.0, 10.0, 20.0, 25.0, 5.0, 10.0)
DARK = (50.0, 60.0, 40.0, 30.0, 0.0, 0.0, 35.0, 15.0, 25.0, 60.0, 10.0, 30.0)


def _crossing(frames: range, swapped_after: int | None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Players P (pale, walking right from x 0) and Q (dark, walking left from x 404) cross at frame
    25; the tracker gives P track 1 and Q track 2, swapped from ``swapped_after`` on. Also the rows'
    appearance, by the true player."""
    rows: list[dict[str, object]] = []
    vectors: list[dict[str, object]] = []
    for f in frames:
        for player, x, look in (("P", 8.0 * f, PALE), ("Q", 404.0 - 8.0 * f, DARK)):
            track = 1 if player == "P" else 2
            if swapped_after is not None and f > swapped_after:
                track = 3 - track
            row = {**detection_rows(0, track, range(f, f + 1), x, dx=0.0)[0], "track_id": track}
            rows.append(row)
            box = {k: row[k] for k in ("angle", "frame", "x1", "y1", "x2", "y2")}
            vectors.append(box | {"vector": list(look) + [0.0] * (APPEARANCE_DIM - len(look))})
    detections = _table(rows)
    appearance = pl.DataFrame(vectors, schema=polars_schema("appearance"))
    return detections, appearance


def _track_of(out: pl.DataFrame, frame: int, player_x: float) -> int:
    return int(out.filter((pl.col("frame") == frame) & (pl.col("x1") == player_x))["track_id"][0])


def test_two_crossing_players_swapped_by_the_tracker_get_their_own_tracks_back() -> None:
    detections, appearance = _crossing(range(0, 50), swapped_after=25)
    out = link_tracks(detections, appearance)
    assert {_track_of(out, f, 8.0 * f) for f in range(0, 50)} == {1}  # P
    assert {_track_of(out, f, 404.0 - 8.0 * f) for f in range(0, 50)} == {2}  # Q


def test_two_crossing_players_the_tracker_kept_apart_stay_apart() -> None:
    detections, appearance = _crossing(range(0, 50), swapped_after=None)
    out = link_tracks(detections, appearance)
    assert out["track_id"].to_list() == detections["track_id"].to_list()


def test_a_swapped_track_that_alone_goes_on_after_the_crossing_is_given_back() -> None:
    # track 2 (Q until the crossing) ends there; track 1 follows P up to it, then Q
    detections, appearance = _crossing(range(0, 50), swapped_after=25)
    detections = detections.filter(~((pl.col("track_id") == 2) & (pl.col("frame") > 25)))
    out = link_tracks(detections, appearance)
    assert {_track_of(out, f, 404.0 - 8.0 * f) for f in range(0, 50)} == {2}  # Q
    assert {_track_of(out, f, 8.0 * f) for f in range(0, 26)} == {1}  # P, until he is lost


def _refound(rival: bool) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Track 1 follows P (pale) walking right from x 0 up to frame 20, is lost for 2 s and is then
    re-found on Q (dark), who walks right from x 300 at frame 30. With ``rival``, P is picked up
    again at frame 25 by track 2, where track 1 lost him. Also the rows' appearance."""
    rows = [(f, 1, 8.0 * f, PALE) for f in range(0, 21)] + [
        (f, 1, 60.0 + 8.0 * f, DARK) for f in range(30, 60)
    ]
    if rival:
        rows += [(f, 2, 8.0 * f, PALE) for f in range(25, 60)]
    detections = _table(
        [{**detection_rows(0, t, range(f, f + 1), x, dx=0.0)[0], "track_id": t} for f, t, x, _ in rows]
    )
    vectors = [
        {"angle": "main", "frame": f, "x1": x, "y1": 100.0, "x2": x + 30, "y2": 180.0}
        | {"vector": list(look) + [0.0] * (APPEARANCE_DIM - len(look))}
        for f, _, x, look in rows
    ]
    return detections, pl.DataFrame(vectors, schema=polars_schema("appearance"))


def test_a_track_re_found_on_someone_else_while_its_player_went_on_elsewhere_is_cut() -> None:
    detections, appearance = _refound(rival=True)
    out = link_tracks(detections, appearance)
    assert _ids(out.filter(pl.col("x1") < 300), range(0, 21)) == [1]
    q = out.filter((pl.col("frame") >= 30) & (pl.col("x1") == 60.0 + 8.0 * pl.col("frame")))
    assert q["track_id"].n_unique() == 1
    assert q["track_id"][0] not in (1, 2)


def test_a_track_re_found_after_a_gap_is_kept_whole_without_a_rival() -> None:
    # the look changes across the gap, but nobody else continues P: nothing says the track erred
    detections, appearance = _refound(rival=False)
    out = link_tracks(detections, appearance)
    assert out["track_id"].unique().to_list() == [1]
