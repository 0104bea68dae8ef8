"""validate: the integrity report and the content checks that refuse footage with no field or no game."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from infra.errors import FilmroomError, NotAGame, WrongVideo
from storage.schemas import validate_table
from tasks.validate import (
    ValidateParams,
    VideoInfo,
    analysed_frames,
    pitch_fraction,
    raise_for_content,
    validate_run,
)

VIDEO = VideoInfo(angle="main", width=1280, height=720, fps=25.0, duration_s=10.0)


def _tracks(people: int = 6, seconds: float = 10.0, x0: float = 100.0) -> pl.DataFrame:
    rows = [
        {
            "angle": "main",
            "track_id": p + 1,
            "frame": k * 5,
            "time_s": k / 5,
            "x1": x0 + 150.0 * p,
            "y1": 300.0,
            "x2": x0 + 150.0 * p + 40,
            "y2": 400.0,
            "conf": 0.9,
        }
        for p in range(people)
        for k in range(round(seconds * 5))
    ]
    return pl.DataFrame(rows, schema_overrides={"frame": pl.Int32, "track_id": pl.Int64})


def _detections(tracks: pl.DataFrame) -> pl.DataFrame:
    return tracks.with_columns(
        chunk=pl.lit(0, pl.Int32), cls=pl.lit(0, pl.Int16), local_track_id=pl.col("track_id")
    )


def _identities(groups: list[list[int]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "identity_id": list(range(1, len(groups) + 1)),
            "kind": ["player"] * len(groups),
            "label": [None] * len(groups),
            "team": ["A"] * len(groups),
            "track_ids": groups,
            "confidence": [0.9] * len(groups),
            "corrected": [False] * len(groups),
        },
        schema_overrides={"label": pl.Utf8},
    )


def _embeddings(tracks: pl.DataFrame) -> pl.DataFrame:
    return tracks.select("angle", "track_id", "frame").with_columns(
        kind=pl.lit("appearance"),
        vector=pl.lit([0.0, 1.0], pl.List(pl.Float32)),
        face_x1=pl.lit(None, pl.Float32),
        face_y1=pl.lit(None, pl.Float32),
        face_x2=pl.lit(None, pl.Float32),
        face_y2=pl.lit(None, pl.Float32),
    )


def _status(report_table: pl.DataFrame) -> dict[str, str]:
    return dict(zip(report_table["check_name"], report_table["status"], strict=True))


def test_consistent_artifacts_pass_every_check() -> None:
    tracks = _tracks()
    report = validate_run(
        detections=_detections(tracks),
        tracks=tracks,
        embeddings=_embeddings(tracks),
        identities=_identities([[1], [2], [3], [4], [5], [6]]),
        videos=[VIDEO],
        pitch_fractions=[0.7, 0.6],
    )
    validate_table("validation", report.table)
    assert report.ok, report.summary
    assert set(_status(report.table).values()) == {"pass"}
    assert report.summary["coverage"] == pytest.approx(1.0)
    assert report.summary["short_track_fraction"] == 0.0
    assert report.summary["identities_per_minute"] == pytest.approx(36.0)
    assert report.summary["persons_per_frame"] == pytest.approx(6.0)
    raise_for_content(report)  # a game: nothing raised


def test_dangling_references_and_boxes_outside_the_frame_fail() -> None:
    tracks = _tracks(people=3)
    detections = _detections(tracks).with_columns(
        track_id=pl.when(pl.col("frame") == 0).then(99).otherwise(pl.col("track_id"))
    )
    outside = tracks.with_columns(x2=pl.when(pl.col("track_id") == 3).then(1400.0).otherwise(pl.col("x2")))
    report = validate_run(
        detections=detections,
        tracks=outside,
        embeddings=_embeddings(tracks).with_columns(track_id=pl.lit(42, pl.Int64)),
        identities=_identities([[1, 2], [2, 7]]),
        videos=[VIDEO],
    )
    status = _status(report.table)
    assert not report.ok
    for check in (
        "detections_reference_tracks",
        "embeddings_reference_tracks",
        "identities_reference_tracks",
        "tracks_in_one_identity",
        "tracks_inside_frame",
    ):
        assert status[check] == "fail", check
    assert status["tracks_inside_duration"] == "pass"
    values = dict(zip(report.table["check_name"], report.table["value"], strict=True))
    assert values["detections_reference_tracks"] == 3  # three people in frame 0
    assert values["tracks_inside_frame"] == 50


def test_missing_artifacts_are_reported() -> None:
    report = validate_run(detections=None, tracks=_tracks(), embeddings=None, identities=None, videos=[VIDEO])
    status = _status(report.table)
    assert status["artifact_present:detections"] == "fail"
    assert status["artifact_present:tracks"] == "pass"
    assert "artifact_present:identities" in report.summary["failed"]


def test_sparse_and_fragmented_tracks_warn() -> None:
    tracks = _tracks(people=2, seconds=0.6)  # 3 samples each, then nobody
    report = validate_run(detections=None, tracks=tracks, embeddings=None, identities=None, videos=[VIDEO])
    status = _status(report.table)
    assert status["coverage"] == "warn"
    assert status["short_track_fraction"] == "warn"
    assert report.summary["coverage"] == pytest.approx(3 / 50)


def test_analysed_frames_follow_detect_tracks_stride() -> None:
    assert analysed_frames([VIDEO], 5.0) == 50
    assert analysed_frames([VIDEO, VIDEO.model_copy(update={"angle": "b", "fps": 30.0})], 5.0) == 100


@pytest.mark.parametrize(
    ("pitch", "people", "error"),
    [
        ([0.7, 0.8], 6, None),
        ([0.02, 0.05, 0.9], 6, WrongVideo),  # median of sampled frames: mostly no field
        ([0.7, 0.8], 1, NotAGame),
        ([0.01], 0, WrongVideo),  # no field and nobody: the field is checked first
    ],
)
def test_content_checks_raise_the_documented_codes(
    pitch: list[float], people: int, error: type[FilmroomError] | None
) -> None:
    tracks = _tracks(people=max(people, 1)) if people else _tracks(people=1).head(0)
    report = validate_run(
        detections=None,
        tracks=tracks,
        embeddings=None,
        identities=None,
        videos=[VIDEO],
        pitch_fractions=pitch,
    )
    if error is None:
        raise_for_content(report)
    else:
        with pytest.raises(error) as caught:
            raise_for_content(report)
        assert caught.value.code in ("wrong_video", "not_a_game")


def test_pitch_fraction_counts_grass_not_kits_or_crowd() -> None:
    grass = np.zeros((90, 160, 3), np.uint8)
    grass[:] = (58, 128, 48)  # BGR of the synthetic pitch
    crowd = np.random.default_rng(0).integers(0, 255, (90, 160, 3), dtype=np.uint8)
    crowd[..., 1] //= 3  # little green
    kits = np.zeros((90, 160, 3), np.uint8)
    kits[:, :80] = (40, 40, 200)  # red
    kits[:, 80:] = (235, 235, 235)  # white
    assert pitch_fraction(grass) == 1.0
    assert pitch_fraction(kits) == 0.0
    assert pitch_fraction(crowd) < ValidateParams().min_pitch_fraction
