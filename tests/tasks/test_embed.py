"""embed: jersey colours that separate teams, face descriptors that separate people, read once per chunk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import numpy as np
import polars as pl
import pytest

from infra.synth import SynthClip
from storage.artifacts import ArtifactStore, RunRef
from storage.schemas import validate_table
from tasks.appearance import (
    APPEARANCE_DIM,
    APPEARANCE_LAYOUT,
    YuvPlanes,
    appearance_image,
    appearance_vector,
    appearance_vectors,
    grass_mask,
    pitch_colour,
)
from tasks.common import as_frame
from tasks.detect_track import DetectParams, detect_track_task
from tasks.embed import (
    EmbedParams,
    decoded_frames,
    embed_from_appearance,
    embed_task,
    embed_video,
    iter_frames,
    read_appearance,
    select_samples,
)
from tasks.faces import FACE_DIM, face_descriptors
from tasks.ingest import plan_chunks, probe_video
from tasks.stitch import stitch_task
from tests.fixtures.identities import EpisodeCase, GameCase

GRASS = (58, 128, 48)  # BGR of the synthetic pitch
RED, KEEPER_GREEN = (40, 40, 200), (60, 200, 120)
COLOURS = APPEARANCE_LAYOUT["number"].start  # the colour slots come first
NUMBER, NUMBER_CONF = APPEARANCE_LAYOUT["number"].start, APPEARANCE_LAYOUT["number_conf"].start


def _player(shirt: tuple[int, int, int], h: int = 80, w: int = 30) -> np.ndarray:
    """A crude player on grass: shirt over the torso band, white shorts, skin legs."""
    crop = np.zeros((h, w, 3), np.uint8)
    crop[:] = GRASS
    crop[int(0.15 * h) : int(0.48 * h), 8:22] = shirt
    crop[int(0.48 * h) : int(0.6 * h), 8:22] = (240, 240, 240)
    crop[int(0.6 * h) :, 10:20] = (130, 168, 214)
    crop[: int(0.12 * h), 11:19] = (30, 45, 70)
    return crop


def test_torso_colour_ignores_the_pitch_around_the_player() -> None:
    vector = appearance_vector(_player(RED))
    assert vector.shape == (APPEARANCE_DIM,)
    _, a, b = vector[APPEARANCE_LAYOUT["torso_lab"]]
    assert a > 50 and b > 30  # red, not green: the grass between the arms is masked out
    assert vector[APPEARANCE_LAYOUT["shorts_lab"]][0] > 90  # white shorts
    assert abs(float(vector[APPEARANCE_LAYOUT["torso_hist"]].sum()) - 1.0) < 1e-5
    assert 0.3 < vector[APPEARANCE_LAYOUT["torso_coverage"]][0] < 1.0


def test_a_green_keeper_shirt_is_not_taken_for_grass_once_the_pitch_colour_is_known() -> None:
    frame = np.zeros((200, 300, 3), np.uint8)
    frame[:] = GRASS
    pitch = pitch_colour(frame)
    assert pitch is not None
    shirt = np.zeros((10, 10, 3), np.uint8)
    shirt[:] = KEEPER_GREEN
    assert grass_mask(shirt).all()  # the generic mask would drop it ...
    assert not grass_mask(shirt, pitch).any()  # ... the frame's own pitch colour does not
    _, a, _ = appearance_vector(_player(KEEPER_GREEN), pitch)[APPEARANCE_LAYOUT["torso_lab"]]
    assert a < -30


def test_vectors_from_the_yuv_planes_equal_those_of_swscales_bgr_frame(identity_game: GameCase) -> None:
    """detect_track and embed convert only the bands' pixels of the decoder's planes: the colours are
    those of the whole frame converted to BGR (as they were computed before), and a frame's boxes
    computed together equal each crop computed alone; the number read is the same either way."""
    truth = identity_game.truth
    wanted = sorted(set(truth["frame"].to_list()))[::40][:6]
    compared = read = 0
    for index, frame in decoded_frames(str(identity_game.clip.video_path), wanted):
        bgr, planes = frame.to_ndarray(format="bgr24"), appearance_image(frame)
        assert isinstance(planes, YuvPlanes)
        h, w = bgr.shape[:2]
        pitch = pitch_colour(bgr)
        assert pitch is not None and pitch_colour(planes) == pitch
        rows = truth.filter(pl.col("frame") == index)
        boxes = list(zip(rows["x1"], rows["y1"], rows["x2"], rows["y2"], strict=True))
        for box, from_planes, from_bgr in zip(
            boxes, appearance_vectors(planes, boxes), appearance_vectors(bgr, boxes), strict=True
        ):
            assert (from_planes is None) == (from_bgr is None)
            if from_planes is None or from_bgr is None:
                continue
            np.testing.assert_allclose(from_planes[:COLOURS], from_bgr[:COLOURS], atol=1e-4)
            assert from_planes[NUMBER] == from_bgr[NUMBER]
            assert abs(from_planes[NUMBER_CONF] - from_bgr[NUMBER_CONF]) < 0.05
            x1, y1 = max(0, int(box[0])), max(0, int(box[1]))
            x2, y2 = min(w, int(np.ceil(box[2]))), min(h, int(np.ceil(box[3])))
            alone = appearance_vector(bgr[y1:y2, x1:x2], pitch)
            np.testing.assert_allclose(alone[:COLOURS], from_bgr[:COLOURS], atol=1e-4)
            assert alone[NUMBER] == alone[NUMBER_CONF] == 0.0  # a crop alone is not read
            compared += 1
            read += bool(from_planes[NUMBER] > 0)
    assert compared > 30
    assert read >= 4  # 5 of them read a number: the comparison covers reads, not only "none"


def test_only_even_bt601_yuv420p_frames_are_read_as_planes_and_all_give_swscales_vectors() -> None:
    image = np.zeros((200, 300, 3), np.uint8)
    image[:] = GRASS
    image[60:140, 100:130] = _player(RED)
    box = (100.0, 60.0, 130.0, 140.0)
    bgr_frame = av.VideoFrame.from_ndarray(image, format="bgr24")
    frames = {
        "yuv420p": bgr_frame.reformat(format="yuv420p"),
        "bgr24": bgr_frame,
        "odd yuv420p": bgr_frame.reformat(format="yuv420p", width=299, height=199),
    }
    for name, frame in frames.items():
        read = appearance_image(frame)
        assert isinstance(read, YuvPlanes) == (name == "yuv420p")
        (got,) = appearance_vectors(read, [box])
        (expected,) = appearance_vectors(frame.to_ndarray(format="bgr24"), [box])
        assert got is not None and expected is not None
        np.testing.assert_allclose(got, expected, atol=1e-4)


def test_samples_are_spaced_per_track_but_short_tracks_keep_every_row() -> None:
    rows = [
        {
            "angle": "main",
            "track_id": t,
            "frame": 5 * k,
            "time_s": k / 5,
            "x1": 0.0,
            "y1": 0.0,
            "x2": 20.0,
            "y2": 60.0,
        }
        for t, n in ((1, 50), (2, 4))
        for k in range(n)
    ]
    chosen = select_samples(pl.DataFrame(rows), EmbedParams(sample_every_s=0.4))
    counts = dict(chosen.group_by("track_id").len().iter_rows())
    assert counts == {1: 25, 2: 4}
    capped = select_samples(pl.DataFrame(rows), EmbedParams.for_faces())
    assert dict(capped.group_by("track_id").len().iter_rows()) == {1: 2, 2: 1}


def test_episode_faces_are_each_tracks_first_face_then_one_every_5_s() -> None:
    times = [*np.arange(0, 3, 0.2), *np.arange(0, 12, 0.2)]  # track 1: 3 s, track 2: 12 s
    tracks = pl.DataFrame(
        {
            "angle": "main",
            "track_id": [1] * 15 + [2] * 60,
            "frame": [round(t * 25) for t in times],
            "time_s": times,
            "x1": 0.0,
            "y1": 0.0,
            "x2": 60.0,
            "y2": 60.0,
        }
    )
    chosen = select_samples(tracks, EmbedParams.for_faces())
    assert chosen.filter(pl.col("track_id") == 1)["time_s"].to_list() == [0.0]
    assert np.allclose(chosen.filter(pl.col("track_id") == 2)["time_s"].to_list(), [0.0, 5.0, 10.0])


def test_iter_frames_yields_exactly_the_wanted_frames_in_order(identity_game: GameCase) -> None:
    wanted = [0, 5, 7, 120, 121, 295]
    got = [index for index, _ in iter_frames(str(identity_game.clip.video_path), wanted)]
    assert got == wanted
    tail = [index for index, _ in iter_frames(str(identity_game.clip.video_path), [250, 260], start_s=9.0)]
    assert tail == [250, 260]


def test_game_embeddings_follow_the_pinned_schema_and_separate_the_teams(identity_game: GameCase) -> None:
    embeddings = identity_game.embeddings
    validate_table("embeddings", embeddings)
    assert set(embeddings["kind"]) == {"appearance"}
    assert set(embeddings["vector"].list.len()) == {APPEARANCE_DIM}
    assert embeddings["face_x1"].null_count() == embeddings.height
    assert set(embeddings["track_id"]) <= set(identity_game.tracks["track_id"])
    truth = identity_game.tracks.select("track_id", "frame", "team").unique()
    rows = embeddings.join(truth, on=["track_id", "frame"])
    torso = {
        team: np.median(np.asarray(rows.filter(pl.col("team") == team)["vector"].to_list())[:, :3], axis=0)
        for team in ("home", "away")
    }
    assert np.linalg.norm(torso["home"] - torso["away"]) > 30  # red vs blue, ΔE


def test_faces_of_one_cast_member_are_close_and_of_two_far(identity_episode: EpisodeCase) -> None:
    embeddings = identity_episode.embeddings
    validate_table("embeddings", embeddings)
    assert set(embeddings["vector"].list.len()) == {FACE_DIM}
    assert embeddings["face_x1"].null_count() == 0
    rows = embeddings.join(
        identity_episode.tracks.select("track_id", "frame", "cast_id"), on=["track_id", "frame"]
    )
    rows = rows.drop_nulls("cast_id")
    vectors = np.asarray(rows["vector"].to_list())
    cast = rows["cast_id"].to_numpy()
    d = np.linalg.norm(vectors[:, None] - vectors[None], axis=2)
    same = d[(cast[:, None] == cast[None]) & ~np.eye(len(cast), dtype=bool)]
    other = d[cast[:, None] != cast[None]]
    assert same.max() < 0.35
    assert other.min() > 0.55
    assert identity_episode.tracks["cast_id"].null_count() == 0  # every tracked face is a cast member


@pytest.mark.parametrize("step", [1, 7, 40])
def test_seeking_over_gops_without_samples_yields_the_same_frames(
    identity_episode: EpisodeCase, step: int
) -> None:
    path = str(identity_episode.clip.video_path)
    frames = identity_episode.tracks["frame"].unique().sort()[::step].to_list()
    plain = list(iter_frames(path, frames, rgb=True))
    seeking = list(iter_frames(path, frames, rgb=True, seek=True))
    assert [index for index, _ in seeking] == [index for index, _ in plain] == frames
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(plain, seeking, strict=True))


def test_a_seek_that_overshoots_falls_back_to_decoding_every_frame(
    identity_episode: EpisodeCase, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tasks.embed

    path = str(identity_episode.clip.video_path)
    keyframes = tasks.embed._keyframes(path, 0.0, 10**6)
    assert len(keyframes) >= 3
    # claim each keyframe sits 5 frames earlier than it does, and want the frames 3 before each:
    # seeking to a keyframe lands past its wanted frame
    lying = [(index - 5 if index else 0, pts) for index, pts in keyframes]
    frames = [index - 3 for index, _ in keyframes if index >= 3]
    monkeypatch.setattr(tasks.embed, "_keyframes", lambda *_: lying)
    plain = list(iter_frames(path, frames, rgb=True))
    seeking = list(iter_frames(path, frames, rgb=True, seek=True))
    assert [index for index, _ in seeking] == [index for index, _ in plain]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(plain, seeking, strict=True))


def test_the_onnx_face_resnet_gives_dlibs_descriptors(identity_episode: EpisodeCase) -> None:
    """onnxruntime runs dlib's own ResNet weights: the same vectors (same-person faces are < 0.6 apart)."""
    frames = identity_episode.tracks["frame"].unique().sort()[:40:8].to_list()
    tracks = identity_episode.tracks.filter(pl.col("frame").is_in(frames))
    path = str(identity_episode.clip.video_path)
    compared = 0
    for index, image in iter_frames(path, tracks["frame"].to_list(), rgb=True):
        boxes = tracks.filter(pl.col("frame") == index).select("x1", "y1", "x2", "y2").rows()
        fast = face_descriptors(image, boxes)
        reference = face_descriptors(image, boxes, engine="dlib")
        assert fast.shape == reference.shape == (len(boxes), FACE_DIM)
        assert np.abs(fast - reference).max() < 1e-4
        compared += len(boxes)
    assert compared >= 5


def test_episode_tracks_never_span_a_cut(identity_episode: EpisodeCase) -> None:
    scenes = identity_episode.truth.select("frame", "scene").unique()
    per_track = (
        identity_episode.tracks.join(scenes, on="frame").group_by("track_id").agg(pl.col("scene").n_unique())
    )
    assert per_track["scene"].max() == 1
    truth_rows = identity_episode.truth.filter(pl.col("frame") % 5 == 0).height
    assert identity_episode.tracks.height / truth_rows > 0.9  # face recall on the analysis grid


@pytest.mark.parametrize("kind", ["appearance", "face"])
def test_empty_tracks_give_an_empty_table(kind: str, identity_game: GameCase) -> None:
    from tasks.embed import embed_video

    empty = identity_game.tracks.head(0)
    params = EmbedParams() if kind == "appearance" else EmbedParams.for_faces()
    table = embed_video(str(identity_game.clip.video_path), empty, params, angle="main")
    assert table.height == 0
    validate_table("embeddings", table)


def test_game_embed_reads_detect_tracks_appearance_parts_and_equals_decoding(
    game_clip: SynthClip, settings_env: Path
) -> None:
    store = ArtifactStore.from_settings()
    ref = RunRef("acme", "e" * 24, "r" * 24)
    path = str(game_clip.video_path)
    chunks = plan_chunks(probe_video(game_clip.video_path, angle="main"), 1.0, 0.6)
    assert len(chunks) == 3  # two overlaps: their frames' boxes come from the chunk before
    for chunk in chunks:
        detect_track_task.fn(ref, chunk, DetectParams(analysis_fps=5.0))
    stitch_task.fn(ref, chunks)
    tracks = as_frame(store.read_table(ref, "tracks"))
    params = EmbedParams()
    total = 0
    for chunk in chunks:
        window: dict[str, Any] = {"angle": "main", "start_s": chunk.start_s, "end_s": chunk.end_s}
        decoded = embed_video(path, tracks, params, **window)  # the path games took before
        parts = read_appearance(store, ref, chunk)
        from_parts, undecoded = embed_from_appearance(path, tracks, parts, params, **window)
        assert undecoded == 0  # every sample found its vector: no frame was decoded
        assert from_parts.equals(decoded)  # same rows, same order, bit-identical vectors
        written = embed_task.fn(ref, chunk, params)
        assert as_frame(store.read_part(ref, "embeddings", chunk.index)).equals(decoded)
        assert written.rows == decoded.height
        total += decoded.height
    assert total > 20
    # without parts (a run written by older code) every sample is decoded, with the same result
    first = chunks[0]
    empty = parts.head(0)
    fallback, undecoded = embed_from_appearance(
        path, tracks, empty, params, angle="main", start_s=first.start_s, end_s=first.end_s
    )
    assert undecoded == fallback.height > 0
    assert fallback.equals(embed_video(path, tracks, params, angle="main", start_s=0.0, end_s=first.end_s))


def test_a_resumed_detect_track_keeps_its_appearance_part_and_rewrites_a_missing_one(
    game_clip: SynthClip, settings_env: Path
) -> None:
    store = ArtifactStore.from_settings()
    ref = RunRef("acme", "e" * 24, "s" * 24)
    chunk = plan_chunks(probe_video(game_clip.video_path, angle="main"), 1.0, 0.6)[0]
    params = DetectParams(analysis_fps=5.0)
    detect_track_task.fn(ref, chunk, params)
    detections = as_frame(store.read_part(ref, "detections", chunk.index))
    appearance = as_frame(store.read_part(ref, "appearance", chunk.index))
    assert appearance.height == detections.height > 0  # one row per detection
    assert set(appearance["vector"].list.len()) <= {0, APPEARANCE_DIM}
    part = Path(store.part_ref(ref, "appearance", chunk.index).path.removeprefix("file://"))
    written_at = part.stat().st_mtime_ns
    detect_track_task.fn(ref, chunk, params)  # a resumed run: both parts on disk, nothing recomputed
    assert part.stat().st_mtime_ns == written_at
    part.unlink()  # a part lost (e.g. a run from before the parts existed): detect_track writes it again
    detect_track_task.fn(ref, chunk, params)
    assert as_frame(store.read_part(ref, "appearance", chunk.index)).equals(appearance)
