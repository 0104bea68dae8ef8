"""episode_track's linking of face boxes into tracks (pure: boxes in, track ids out)."""

from __future__ import annotations

import numpy as np

from tasks.episode_track import EpisodeTrackParams, SampledFaces, link_faces


def _frame(frame: int, lefts: list[float]) -> SampledFaces:
    boxes = np.array([[x, 0.0, x + 100.0, 100.0] for x in lefts])
    return SampledFaces(frame, frame / 5, False, boxes, np.ones(len(lefts)))


def test_a_face_keeps_its_track_when_the_iou_sum_favours_two_links_under_the_threshold() -> None:
    # faces A (x 0) and B (x 103); a frame later a box at 48 overlaps A by IoU 0.35 (a link) and B by
    # 0.29, a box at -55 overlaps A by 0.29: the largest IoU sum pairs both under link_iou (0.3)
    out = link_faces(
        iter([_frame(0, [0.0, 103.0]), _frame(1, [48.0, -55.0])]), EpisodeTrackParams(), angle="main", chunk=0
    )
    ids = out["local_track_id"].to_list()
    assert ids[2] == ids[0]  # the box at 48 continues A
    assert ids[3] not in ids[:2]  # the box at -55 is a new face
