"""tasks.quality's labelling of tracked boxes with the ground truth's people (what every figure rests on)."""

from __future__ import annotations

import polars as pl

from tasks.quality import label_tracks


def _boxes(lefts: list[float], **columns: list[object]) -> pl.DataFrame:
    n = len(lefts)
    return pl.DataFrame(
        {"frame": [0] * n, "x1": lefts, "y1": [0.0] * n, "x2": [x + 100.0 for x in lefts], "y2": [100.0] * n}
        | columns
    )


def test_a_box_is_labelled_with_the_person_it_covers_when_the_iou_sum_favours_two_poor_pairs() -> None:
    # people P (x 0) and Q (x 68); the box at 30 covers P by IoU 0.54 and Q by 0.45, the box at -38
    # covers P by 0.45: the largest IoU sum pairs both boxes under min_iou (0.5)
    truth = _boxes([0.0, 68.0], person_id=[1, 2], team=["A", "A"], role=["player", "player"])
    tracks = _boxes([30.0, -38.0], track_id=[7, 8])
    assert label_tracks(truth, tracks)["person_id"].to_list() == [1, None]
