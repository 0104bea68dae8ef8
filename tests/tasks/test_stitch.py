"""stitch: chunk-local tracks become global tracks through the overlap."""

from __future__ import annotations

import polars as pl

from tasks.detect_track import DETECTION_COLUMNS
from tasks.ingest import Chunk
from tasks.stitch import stitch, tracks_table
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
