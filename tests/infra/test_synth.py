"""The synthetic footage generator: ground truth that later stages can be scored against."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import polars as pl
import pytest

from infra.synth import (
    DamageKind,
    EpisodeSpec,
    GameSpec,
    SynthClip,
    iter_episode_frames,
    iter_game_frames,
    render_episode,
    render_game,
)
from infra.synth.episode import ASTRONAUT, cast_faces


def _decoded_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]


def test_video_has_the_specified_frames_size_and_rate(game_clip: SynthClip, game_spec: GameSpec) -> None:
    with av.open(str(game_clip.video_path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (
            game_spec.width,
            game_spec.height,
        )
        assert stream.codec_context.name == "h264"
        assert stream.average_rate == game_spec.fps
    assert len(_decoded_frames(game_clip.video_path)) == game_spec.frame_count == game_clip.frame_count


def test_ground_truth_boxes_are_inside_the_frame_and_not_degenerate(
    game_clip: SynthClip, game_spec: GameSpec
) -> None:
    gt = pl.read_parquet(game_clip.ground_truth_path)
    assert gt.height > 0
    assert (gt["x1"] >= 0).all() and (gt["y1"] >= 0).all()
    assert (gt["x2"] <= game_spec.width).all() and (gt["y2"] <= game_spec.height).all()
    assert ((gt["x2"] - gt["x1"]) >= 1).all() and ((gt["y2"] - gt["y1"]) >= 1).all()
    assert (gt["frame"] < game_spec.frame_count).all()


def test_people_keep_their_id_team_and_number(game_clip: SynthClip, game_spec: GameSpec) -> None:
    gt = pl.read_parquet(game_clip.ground_truth_path)
    per_id = gt.group_by("person_id").agg(
        pl.col("team").n_unique().alias("teams"), pl.col("jersey_number").n_unique().alias("numbers")
    )
    assert (per_id["teams"] == 1).all() and (per_id["numbers"] == 1).all()
    assert (gt["person_id"] <= 2 * game_spec.players_per_team + game_spec.referees).all()
    assert set(gt["team"].unique()) <= {"home", "away", "referee"}
    # one row per person per frame
    assert gt.select("frame", "person_id").is_duplicated().sum() == 0
    # a person moves smoothly: centres jump by far less than a frame width between frames
    moves = (
        gt.sort("person_id", "frame")
        .with_columns(cx=(pl.col("x1") + pl.col("x2")) / 2, df=pl.col("frame").diff().over("person_id"))
        .with_columns(dx=pl.col("cx").diff().abs().over("person_id"))
        .filter(pl.col("df") == 1, pl.col("visible_fraction") > 0.9)
    )
    assert moves.height > 0 and (moves["dx"] < game_spec.width * 0.1).all()


def test_visible_fraction_is_a_fraction_and_occlusion_lowers_it(game_clip: SynthClip) -> None:
    gt = pl.read_parquet(game_clip.ground_truth_path)
    vf = gt["visible_fraction"]
    assert ((vf > 0) & (vf <= 1.0)).all()
    assert (vf == 1.0).sum() > gt.height / 2


def test_same_seed_gives_identical_footage_and_another_seed_does_not(game_spec: GameSpec) -> None:
    short = game_spec.model_copy(update={"duration_s": 0.4})
    first = list(iter_game_frames(short))
    again = list(iter_game_frames(short))
    other = list(iter_game_frames(short.model_copy(update={"seed": short.seed + 1})))
    assert all(np.array_equal(a.image, b.image) for a, b in zip(first, again, strict=True))
    assert [a.ground_truth for a in first] == [b.ground_truth for b in again]
    assert not np.array_equal(first[-1].image, other[-1].image)


def test_rendering_twice_writes_the_same_bytes(tmp_path: Path, game_spec: GameSpec) -> None:
    spec = game_spec.model_copy(update={"duration_s": 0.4})
    a = render_game(spec, tmp_path / "a")[0]
    b = render_game(spec, tmp_path / "b")[0]
    assert a.video_path.read_bytes() == b.video_path.read_bytes()
    assert pl.read_parquet(a.ground_truth_path).equals(pl.read_parquet(b.ground_truth_path))


def test_sidecar_records_the_spec_and_version(game_clip: SynthClip, game_spec: GameSpec) -> None:
    sidecar = json.loads(game_clip.sidecar_path.read_text())
    assert sidecar["spec"]["seed"] == game_spec.seed
    assert sidecar["frame_count"] == game_spec.frame_count
    assert sidecar["generator_version"]


def test_angles_of_one_match_show_the_same_people(two_angle_game: list[SynthClip]) -> None:
    main, reverse = (pl.read_parquet(c.ground_truth_path) for c in two_angle_game)
    assert set(main["angle"]) == {"main"} and set(reverse["angle"]) == {"reverse"}
    teams_main = dict(main.select("person_id", "team").unique().iter_rows())
    teams_rev = dict(reverse.select("person_id", "team").unique().iter_rows())
    shared = set(teams_main) & set(teams_rev)
    assert shared and all(teams_main[p] == teams_rev[p] for p in shared)
    with av.open(str(two_angle_game[0].video_path)) as container:
        assert container.streams.audio, "multi-angle renders carry stadium audio for sync checks"


def test_an_offset_angle_shows_the_match_later(two_angle_spec: GameSpec) -> None:
    late = two_angle_spec.model_copy(
        update={
            "angles": (
                two_angle_spec.angles[0],
                two_angle_spec.angles[0].model_copy(update={"name": "late", "offset_s": 1.0}),
            )
        }
    )
    first = {f.frame: f.ground_truth for f in iter_game_frames(late, "main", only={25})}
    shifted = {f.frame: f.ground_truth for f in iter_game_frames(late, "late", only={0})}
    # frame 0 of an angle 1 s late sees the world of frame 25 (1 s at 25 fps) of the main angle; the
    # camera shake is the angle's own, so boxes agree to a few pixels, not exactly
    assert [r["person_id"] for r in first[25]] == [r["person_id"] for r in shifted[0]]
    gaps = [
        abs(a["x1"] - b["x1"])
        for a, b in zip(first[25], shifted[0], strict=True)
        if a["x1"] > 0 and b["x1"] > 0
    ]
    assert np.median(gaps) < 10


def test_episode_ground_truth_has_cast_ids_and_faces_inside_the_frame(episode_clip: SynthClip) -> None:
    gt = pl.read_parquet(episode_clip.ground_truth_path)
    sidecar = json.loads(episode_clip.sidecar_path.read_text())
    cast = {c["cast_id"] for c in sidecar["cast"]}
    assert set(gt["cast_id"].unique()) <= cast
    assert len(set(gt["cast_id"])) >= 2
    assert (gt["face_x1"] >= 0).all() and (gt["face_x2"] <= 640).all()
    assert (gt["face_y1"] >= 0).all() and (gt["face_y2"] <= 360).all()
    assert gt["scene"].n_unique() >= 2, "scenes are separated by hard cuts"
    assert len(set(c["lfw_index"] for c in sidecar["cast"])) == len(cast), (
        "each cast member has their own face"
    )
    assert cast_faces.__name__  # faces come from scikit-image's bundled LFW subset, never a download


@pytest.mark.parametrize(
    ("kind", "opens", "decodes_fully"),
    [
        (DamageKind.truncated, False, False),
        (DamageKind.truncated_faststart, True, False),
        (DamageKind.no_video_stream, True, False),
        (DamageKind.zero_bytes, False, False),
        (DamageKind.wrong_container, False, False),
        (DamageKind.not_a_video, True, False),
    ],
)
def test_damaged_variants_are_really_damaged(
    damaged_clips: dict[DamageKind, Path],
    game_spec: GameSpec,
    kind: DamageKind,
    opens: bool,
    decodes_fully: bool,
) -> None:
    path = damaged_clips[kind]
    try:
        container = av.open(str(path))
    except av.error.FFmpegError:
        assert not opens
        return
    assert opens
    with container:
        if not container.streams.video:
            assert kind is DamageKind.no_video_stream
            return
        frames = 0
        try:
            for _ in container.decode(video=0):
                frames += 1
        except av.error.FFmpegError:
            pass
    assert (frames >= game_spec.frame_count) == decodes_fully


def _overlaps(a: dict[str, float], b: dict[str, float]) -> bool:
    return a["x1"] < b["x2"] and b["x1"] < a["x2"] and a["y1"] < b["y2"] and b["y1"] < a["y2"]


def test_a_partly_hidden_person_is_clipped_by_the_frame_or_covered_by_someone(game_clip: SynthClip) -> None:
    gt = pl.read_parquet(game_clip.ground_truth_path)
    by_frame = gt.partition_by("frame", as_dict=True)
    hidden = gt.filter(pl.col("visible_fraction") < 1.0)
    assert hidden.height > 0, "a 3 s clip of a match has occlusions or people at the edge"
    for row in hidden.iter_rows(named=True):
        at_edge = row["x1"] == 0 or row["y1"] == 0 or row["x2"] == 640 or row["y2"] == 360
        others = [
            r for r in by_frame[(row["frame"],)].iter_rows(named=True) if r["person_id"] != row["person_id"]
        ]
        assert at_edge or any(_overlaps(row, r) for r in others), row


def test_ball_table_follows_the_ball_in_world_and_pixels(game_clip: SynthClip, game_spec: GameSpec) -> None:
    assert game_clip.ball_path is not None
    ball = pl.read_parquet(game_clip.ball_path)
    assert ball["frame"].to_list() == list(range(game_spec.frame_count))
    assert ball["in_view"].any()
    assert (ball["world_z"] > 0).all() and ball["world_x"].is_between(-2, 107).all()
    steps = np.hypot(np.diff(ball["world_x"].to_numpy()), np.diff(ball["world_y"].to_numpy()))
    assert steps.max() < 30 / game_spec.fps, "the ball never moves faster than a hard shot"
    sidecar = json.loads(game_clip.sidecar_path.read_text())
    assert sidecar["files"]["ball"] == game_clip.ball_path.name
    assert sidecar["angle_time_offset_s"] == 0.0


def test_rendered_frames_carry_the_ball_only_when_it_is_in_view(game_spec: GameSpec) -> None:
    for rendered in iter_game_frames(game_spec.model_copy(update={"duration_s": 0.2})):
        truth = rendered.ball_truth
        assert (rendered.ball is not None) == truth["in_view"]
        assert truth["world_time_s"] == pytest.approx(rendered.time_s)


def test_episode_visible_fraction_is_exact_and_the_astronaut_can_join(tmp_path: Path) -> None:
    spec = EpisodeSpec(duration_s=2.0, cast_size=3, seed=3, include_astronaut=True, width=320, height=180)
    assert cast_faces(spec).count(ASTRONAUT) == 1
    assert cast_faces(spec.model_copy(update={"include_astronaut": False})).count(ASTRONAUT) == 0
    for rendered in iter_episode_frames(spec):
        for row in rendered.ground_truth:
            assert 0 < row["visible_fraction"] <= 1 and 0 <= row["face_visible_fraction"] <= 1
            assert row["x1"] <= row["face_x1"] and row["face_x2"] <= row["x2"], (
                "the face is part of the person"
            )
    clip = render_episode(spec, tmp_path)
    cast = json.loads(clip.sidecar_path.read_text())["cast"]
    assert [c["face"] for c in cast].count("astronaut") == 1


def test_container_duration_matches_the_spec(game_clip: SynthClip, two_angle_game: list[SynthClip]) -> None:
    for clip, seconds in ((game_clip, 3.0), *((c, 4.0) for c in two_angle_game)):
        with av.open(str(clip.video_path)) as container:
            assert container.duration is not None
            assert container.duration / 1e6 == pytest.approx(seconds, abs=0.1)
            for audio in container.streams.audio:
                assert audio.channels == 1 and audio.codec_context.name == "aac"
