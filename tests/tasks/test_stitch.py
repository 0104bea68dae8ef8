"""stitch: chunk-local tracks become global tracks through the overlap."""

from __future__ import annotations

import polars as pl

from tasks.detect_track import DETECTION_COLUMNS
from tasks.ingest import Chunk
from tasks.link import claim_starts
from tasks.stitch import claim_stretch_starts, stitch, tracks_table
from tests.fixtures.tables import detection_rows as _rows


def _chunks() -> list[Chunk]:
    # chunk 0 covers [0, 10) s and decodes to 12 s; chunk 1 covers [10, 20) s. The overlap [10, 12) s
    # belongs to chunk 0, whose tracker is warm there (chunk 1's has just started).
    return [
        Chunk(index=0, angle="main", path="x", start_s=0.0, end_s=10.0, decode_end_s=12.0),
        Chunk(index=1, angle="main", path="x", start_s=10.0, end_s=20.0, decode_end_s=20.0),
    ]


def test_a_person_crossing_the_boundary_keeps_one_id() -> None:
    first = pl.DataFrame(
        _rows(0, 7, range(0, 60), 0) + _rows(0, 8, range(0, 60), 600), schema=DETECTION_COLUMNS
    )
    # chunk 1 numbers the same two people differently (and in the other order)
    second = pl.DataFrame(
        _rows(1, 1, range(50, 100), 600) + _rows(1, 2, range(50, 100), 0), schema=DETECTION_COLUMNS
    )
    out = stitch(_chunks(), [first, second])
    ids_left = out.filter(pl.col("x1") < 500)["track_id"].unique().to_list()
    ids_right = out.filter(pl.col("x1") >= 500)["track_id"].unique().to_list()
    assert len(ids_left) == 1
    assert len(ids_right) == 1
    assert ids_left != ids_right


def test_every_frame_is_owned_by_exactly_one_chunk() -> None:
    first = pl.DataFrame(_rows(0, 1, range(0, 60), 0), schema=DETECTION_COLUMNS)
    second = pl.DataFrame(_rows(1, 1, range(50, 100), 0), schema=DETECTION_COLUMNS)
    out = stitch(_chunks(), [first, second])
    assert out["frame"].to_list() == list(range(100))
    assert out.filter(pl.col("frame") < 60)["chunk"].unique().to_list() == [0]
    assert out.filter(pl.col("frame") >= 60)["chunk"].unique().to_list() == [1]


def test_a_person_who_appears_after_the_overlap_gets_a_new_id() -> None:
    first = pl.DataFrame(_rows(0, 1, range(0, 60), 0), schema=DETECTION_COLUMNS)
    second = pl.DataFrame(
        _rows(1, 1, range(50, 100), 0) + _rows(1, 5, range(70, 100), 900, dx=0), schema=DETECTION_COLUMNS
    )
    out = stitch(_chunks(), [first, second])
    assert out["track_id"].n_unique() == 2


def test_people_far_apart_in_the_overlap_are_not_merged() -> None:
    first = pl.DataFrame(_rows(0, 1, range(0, 60), 0), schema=DETECTION_COLUMNS)
    second = pl.DataFrame(_rows(1, 1, range(50, 100), 300), schema=DETECTION_COLUMNS)
    out = stitch(_chunks(), [first, second])
    assert out["track_id"].n_unique() == 2


def test_untracked_boxes_stay_without_a_track_and_leave_the_tracks_table() -> None:
    first = pl.DataFrame(
        _rows(0, 1, range(0, 60), 0) + _rows(0, None, range(0, 3), 900), schema=DETECTION_COLUMNS
    )
    second = pl.DataFrame(_rows(1, 3, range(50, 100), 0), schema=DETECTION_COLUMNS)
    out = stitch(_chunks(), [first, second])
    assert out["track_id"].null_count() == 3
    tracks = tracks_table(out)
    assert tracks["track_id"].null_count() == 0
    assert tracks.height == 100


def _box(frame: int, x: float, track: int | None, angle: str = "main") -> dict[str, object]:
    return {
        "angle": angle,
        "frame": frame,
        "x1": x,
        "y1": 100.0,
        "x2": x + 30.0,
        "y2": 180.0,
        "track_id": track,
    }


def test_every_stretch_of_a_track_grows_back_over_the_detections_it_came_from() -> None:
    schema = {"angle": pl.Utf8, "frame": pl.Int32, "x1": pl.Float32, "y1": pl.Float32, "x2": pl.Float32}
    schema |= {"y2": pl.Float32, "track_id": pl.Int64}
    table = pl.DataFrame(
        [
            _box(0, 90.0, None),  # two analysed frames before track 3 starts, on his way: claimed
            _box(5, 100.0, None),  # the detection that started track 3: claimed
            _box(10, 110.0, 3),
            _box(15, 120.0, 3),
            _box(25, 140.0, None),  # the tracker lost him at 20 and matched him again at 30 only
            _box(30, 150.0, 3),
            _box(25, 600.0, None),  # far from any stretch: someone else, stays untracked
            _box(30, 900.0, 4),  # track 4 in another angle: the same place there is not the same
            _box(25, 140.0, None, angle="side"),
            _box(30, 140.0, 5, angle="side"),  # ... and it claims its own angle's detection
        ],
        schema=schema,
    )
    assert claim_stretch_starts(table)["track_id"].to_list() == [3, 3, 3, 3, 3, 3, None, 4, 5, 5]
    assert claim_stretch_starts(table, passes=1)["track_id"].to_list()[:2] == [None, 3]  # one frame a pass
    # without stretches, only a track's own start claims (the detection at 25 stays a missed player)
    assert claim_starts(table)["track_id"].to_list()[4] is None
