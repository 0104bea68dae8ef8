"""The synthetic footage generator: ground truth that later stages can be scored against."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import polars as pl
import pytest

from infra.synth import DamageKind, GameSpec, SynthClip, iter_game_frames, render_game
from infra.synth.episode import cast_faces


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
        assert float(stream.average_rate) == game_spec.fps
    assert len(_decoded_frames(game_clip.video_path)) == game_spec.frame_count == game_clip.frame_count


def test_ground_truth_boxes_are_inside_the_frame_and_not_degenerate(
    game_clip: SynthClip, game_spec: GameSpec
) -> None:
    gt = pl.read_parquet(game_clip.ground_truth_path)
    assert gt.height > 0
    assert (gt["x1"] >= 0).all() and (gt["y1"] >= 0).all()
    assert (gt["x2"] <= game_spec.width).all() and (gt["y2"] <= game_spec.height).all()
    assert ((gt["x2"] - gt["x1"]) >= 1).all() and ((gt["y2"] - gt["y1"]) >= 1).all()
    assert gt["frame"].max() < game_spec.frame_count


def test_people_keep_their_id_team_and_number(game_clip: SynthClip, game_spec: GameSpec) -> None:
    gt = pl.read_parquet(game_clip.ground_truth_path)
    per_id = gt.group_by("person_id").agg(
        pl.col("team").n_unique().alias("teams"), pl.col("jersey_number").n_unique().alias("numbers")
    )
    assert (per_id["teams"] == 1).all() and (per_id["numbers"] == 1).all()
    assert gt["person_id"].max() <= 2 * game_spec.players_per_team + game_spec.referees
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
    assert moves["dx"].max() < game_spec.width * 0.1


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
