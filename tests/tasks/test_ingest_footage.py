"""ingest on real footage: probing, damage → documented codes, angle sync, chunk plans."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra import errors
from infra.settings import IngestSettings
from infra.synth import DamageKind, GameSpec, SynthClip
from tasks.ingest import Source, VideoProbe, ingest, plan_chunks, probe_video


def _settings(*roots: Path, **overrides: object) -> IngestSettings:
    return IngestSettings(allowed_roots=[str(r) for r in roots], **overrides)


def test_probe_reports_what_the_file_is(game_clip: SynthClip, game_spec: GameSpec) -> None:
    probe = probe_video(game_clip.video_path)
    assert probe.codec == "h264"
    assert (probe.width, probe.height) == (game_spec.width, game_spec.height)
    assert probe.fps == pytest.approx(game_spec.fps)
    assert probe.duration_s == pytest.approx(game_spec.duration_s, abs=0.05)
    assert probe.frame_count == game_spec.frame_count
    assert probe.keyframes_s[0] == pytest.approx(0.0)
    assert probe.last_decoded_s == pytest.approx(game_spec.duration_s - 1 / game_spec.fps, abs=0.05)
    assert not probe.has_audio


@pytest.mark.parametrize(
    ("kind", "error", "fragment"),
    [
        (DamageKind.truncated, errors.IncompleteVideo, "no moov"),
        (DamageKind.truncated_faststart, errors.IncompleteVideo, "decoding"),
        (DamageKind.no_video_stream, errors.VideoUnsupportedFormat, "no video stream"),
        (DamageKind.zero_bytes, errors.IncompleteVideo, "empty"),
        (DamageKind.wrong_container, errors.VideoUnsupportedFormat, "not a video container"),
        (DamageKind.not_a_video, errors.VideoUnsupportedFormat, "still image"),
    ],
)
def test_damaged_footage_gets_the_documented_code_and_leaves_nothing(
    damaged_clips: dict[DamageKind, Path], kind: DamageKind, error: type[errors.FilmroomError], fragment: str
) -> None:
    path = damaged_clips[kind]
    before = sorted(path.parent.iterdir())
    with pytest.raises(error, match=fragment) as caught:
        ingest([Source(uri=str(path))], _settings(path.parent), chunk_s=10, overlap_s=1)
    assert caught.value.code == error.code
    assert "Traceback" not in caught.value.details
    assert sorted(path.parent.iterdir()) == before


def test_too_long_video_is_refused(game_clip: SynthClip) -> None:
    with pytest.raises(errors.VideoTooLong, match="limit is 2 s"):
        ingest(
            [Source(uri=str(game_clip.video_path))],
            _settings(game_clip.video_path.parent, max_duration_s=2.0),
            chunk_s=10,
            overlap_s=1,
        )


def test_synchronised_angles_pass_with_a_measured_offset_near_zero(two_angle_game: list[SynthClip]) -> None:
    root = two_angle_game[0].video_path.parent
    result = ingest(
        [Source(angle=c.angle or "x", uri=str(c.video_path)) for c in two_angle_game],
        _settings(root),
        chunk_s=10,
        overlap_s=1,
    )
    assert set(result.angle_offsets_s) == {"main", "reverse"}
    assert abs(result.angle_offsets_s["reverse"]) < 0.1
    assert {c.angle for c in result.chunks} == {"main", "reverse"}
    assert [c.index for c in result.chunks] == list(range(len(result.chunks)))


def test_angles_out_of_sync_are_refused_with_the_measured_offset(offset_angle_game: list[SynthClip]) -> None:
    root = offset_angle_game[0].video_path.parent
    with pytest.raises(errors.NotSynchronizedCameraAngles) as caught:
        ingest(
            [Source(angle=c.angle or "x", uri=str(c.video_path)) for c in offset_angle_game],
            _settings(root),
            chunk_s=10,
            overlap_s=1,
        )
    assert caught.value.context["offset_s"] == pytest.approx(1.5, abs=0.1)
    assert "offset by" in caught.value.details


def test_duplicate_angle_names_are_refused(game_clip: SynthClip) -> None:
    source = Source(angle="main", uri=str(game_clip.video_path))
    with pytest.raises(errors.MissingVideos, match="unique"):
        ingest([source, source], _settings(game_clip.video_path.parent), chunk_s=10, overlap_s=1)


def _probe(duration: float, keyframes: list[float]) -> VideoProbe:
    return VideoProbe(
        angle="main",
        uri="x",
        path="x",
        size_bytes=1,
        container="mp4",
        codec="h264",
        width=1280,
        height=720,
        fps=25.0,
        duration_s=duration,
        frame_count=int(duration * 25),
        start_time_s=0.0,
        has_audio=False,
        keyframes_s=keyframes,
        last_decoded_s=duration - 0.04,
    )


def test_chunks_start_on_keyframes_cover_the_video_and_overlap() -> None:
    probe = _probe(100.0, [float(k) for k in range(0, 100, 10)])
    chunks = plan_chunks(probe, chunk_s=30.0, overlap_s=2.0)
    assert [c.start_s for c in chunks] == [0.0, 30.0, 60.0]
    assert all(c.start_s in probe.keyframes_s for c in chunks)
    assert [c.end_s for c in chunks] == [30.0, 60.0, 100.0]
    assert [c.decode_end_s for c in chunks] == [32.0, 62.0, 100.0]


def test_a_short_tail_joins_the_last_chunk() -> None:
    chunks = plan_chunks(_probe(64.0, [0.0, 30.0, 60.0]), chunk_s=30.0, overlap_s=2.0)
    assert [(c.start_s, c.end_s) for c in chunks] == [(0.0, 30.0), (30.0, 64.0)]


def test_a_video_with_one_keyframe_is_one_chunk() -> None:
    chunks = plan_chunks(_probe(12.0, [0.0]), chunk_s=5.0, overlap_s=1.0)
    assert len(chunks) == 1 and chunks[0].decode_end_s == 12.0


def test_a_short_video_is_cut_into_one_chunk_per_worker() -> None:
    keyframes = [float(k) for k in range(0, 60, 2)]
    chunks = plan_chunks(_probe(60.0, keyframes), chunk_s=60.0, overlap_s=2.0, min_chunks=2, shortest_s=20.0)
    assert [(c.start_s, c.end_s) for c in chunks] == [(0.0, 30.0), (30.0, 60.0)]
    # a long one keeps its chunk length
    long = plan_chunks(
        _probe(600.0, keyframes + [float(k) for k in range(60, 600, 2)]), 60.0, 2.0, min_chunks=2
    )
    assert len(long) == 10 and {c.end_s - c.start_s for c in long} == {60.0}


def test_no_chunk_is_cut_shorter_than_the_shortest_split() -> None:
    keyframes = [float(k) for k in range(0, 30, 2)]
    chunks = plan_chunks(
        _probe(12.0, keyframes[:6]), chunk_s=60.0, overlap_s=2.0, min_chunks=2, shortest_s=20.0
    )
    assert len(chunks) == 1
    chunks = plan_chunks(_probe(30.0, keyframes), chunk_s=60.0, overlap_s=2.0, min_chunks=2, shortest_s=20.0)
    assert [(c.start_s, c.end_s) for c in chunks] == [(0.0, 20.0), (20.0, 30.0)]
