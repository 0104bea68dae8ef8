"""export: breakdown.json is built by a pure function, validated, versioned and written atomically."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from infra.errors import ExportFailed, NotAGame, WrongVideo
from storage.artifacts import ArtifactStore, RunRef
from storage.schemas import SCHEMAS, Table
from tasks.appearance import APPEARANCE_MODEL
from tasks.cluster import ClusterParams, cluster_task
from tasks.embed import EmbedParams, collect_embeddings_task, embed_task
from tasks.export import (
    BREAKDOWN_SCHEMA_VERSION,
    Breakdown,
    EventOut,
    RunOut,
    build_breakdown,
    export_breakdown,
    export_task,
)
from tasks.ingest import Chunk, probe_video
from tasks.screentime import PRESETS, compute_screentime, screentime_task
from tasks.validate import ValidateParams, VideoInfo, validate_run, validate_task
from tests.fixtures.identities import EpisodeCase, GameCase

REF = RunRef("tenant-1", "0123456789abcdef01234567", "76543210fedcba9876543210")
VIDEO = VideoInfo(angle="main", width=1280, height=720, fps=25.0, duration_s=10.0, uri="/footage/game.mp4")


def _tracks() -> pl.DataFrame:
    rows = [
        {
            "angle": "main",
            "track_id": t,
            "frame": k * 5,
            "time_s": k / 5,
            "x1": 100.0 * t,
            "y1": 300.0,
            "x2": 100.0 * t + 40,
            "y2": 400.0,
            "conf": 0.9,
        }
        for t, (a, b) in {1: (0, 20), 2: (10, 50), 3: (0, 50)}.items()
        for k in range(a, b)
    ]
    return pl.DataFrame(rows, schema_overrides={"frame": pl.Int32, "track_id": pl.Int64})


def _identities() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "identity_id": [1, 2],
            "kind": ["player", "referee"],
            "label": ["Jane Doe", None],
            "team": ["A", None],
            "track_ids": [[1, 2], [3]],
            "confidence": [0.9, 0.5],
            "corrected": [True, False],
        }
    )


def _breakdown() -> Breakdown:
    tracks, identities = _tracks(), _identities()
    return build_breakdown(
        event=EventOut(id=REF.event_id, tenant=REF.tenant, kind="game", title="Final", sport="football"),
        run=RunOut(id=REF.run_id, job_id="5b0e7e3a-8c1e-4a52-9d7e-3f1f0c2b7a11", mode="ai", preset="default"),
        videos=[VIDEO],
        identities=identities,
        screentime=compute_screentime(identities, tracks, duration_s=10.0, analysis_fps=5.0),
        validation=validate_run(
            detections=None, tracks=tracks, embeddings=None, identities=identities, videos=[VIDEO]
        ),
        models={"detector": "filmroom-yolo-synth", "appearance": "lab-bands-v1"},
        params={"screentime": {"preset": "default"}},
        corrections_applied=1,
        generated_at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
    )


def test_breakdown_holds_identities_teams_validation_and_provenance() -> None:
    breakdown = _breakdown()
    assert breakdown.schema_version == BREAKDOWN_SCHEMA_VERSION == 1
    jane, referee = breakdown.identities
    assert jane.label == "Jane Doe" and jane.track_ids == [1, 2] and jane.corrected
    assert jane.seconds_on_screen == pytest.approx(10.0)  # [0, 3.9] and [1.9, 10] (9.8 s: last frame) merge
    assert referee.kind == "referee" and referee.team is None
    (team,) = breakdown.teams
    assert team.team == "A" and team.identities == [1]
    assert breakdown.validation.ok is False  # no detections/embeddings given: reported as missing
    assert "artifact_present:detections" in breakdown.validation.failed
    assert breakdown.provenance.corrections_applied == 1
    rules = breakdown.provenance.params["screentime"]  # the preset's rules, not only its name
    assert rules["preset"] == "default" and rules["hold_in_identity_s"] == 2.0
    assert rules == PRESETS["default"].model_dump(mode="json")
    assert breakdown.provenance.table_versions["screentime"] == 1
    assert breakdown.videos[0].uri == "/footage/game.mp4"


def test_breakdown_json_is_written_atomically_and_reads_back(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    url = export_breakdown(store, REF, _breakdown())
    assert url.endswith("breakdown.json")
    data = json.loads(Path(url).read_text())
    assert data["schema_version"] == 1
    assert data["generated_at"].startswith("2025-01-02T03:04:05")
    assert Breakdown.model_validate(data) == _breakdown()
    assert [p.name for p in Path(url).parent.iterdir()] == ["breakdown.json"]  # no temp file left


def test_a_failed_write_is_export_failed_and_leaves_no_file(tmp_path: Path) -> None:
    blocker = tmp_path / "artifacts"
    blocker.write_text("a file where the artifact folder should be")
    with pytest.raises(ExportFailed) as caught:
        export_breakdown(ArtifactStore(str(blocker)), REF, _breakdown())
    assert caught.value.code == "export_failed" and caught.value.retryable


def test_the_schema_is_documented_field_by_field() -> None:
    schema = Breakdown.model_json_schema()
    assert schema["properties"]["schema_version"]["const"] == 1
    for name, definition in schema["$defs"].items():
        for field, spec in definition["properties"].items():
            assert spec.get("description"), f"{name}.{field} has no description"


# --- the stage tasks, end to end on generated footage ------------------------------------------------


def _run_with_tracks(case: GameCase | EpisodeCase, ref: RunRef, tracks: pl.DataFrame) -> Chunk:
    store = ArtifactStore.from_settings()
    probe = probe_video(case.clip.video_path, angle="main")
    store.update_manifest(ref, videos=[probe.model_dump()], params={"screentime": {"preset": "default"}})
    detections = tracks.with_columns(
        chunk=pl.lit(0, pl.Int32), cls=pl.lit(0, pl.Int16), local_track_id=pl.col("track_id").cast(pl.Int32)
    )
    store.write_table(ref, "detections", detections.select(*SCHEMAS[Table.detections].names))
    store.write_table(ref, "tracks", tracks)
    return Chunk(
        index=0,
        angle="main",
        path=str(case.clip.video_path),
        start_s=0.0,
        end_s=probe.duration_s,
        decode_end_s=probe.duration_s,
    )


def test_the_stage_tasks_write_every_artifact_and_a_breakdown(
    identity_game: GameCase, settings_env: Path
) -> None:
    tracks = identity_game.tracks.drop("person_id", "team", "role")
    chunk = _run_with_tracks(identity_game, REF, tracks)
    embed_task.fn(REF, chunk, EmbedParams())
    collect_embeddings_task.fn(REF, [chunk])
    cluster_task.fn(REF, "game", ClusterParams(), [])
    summary = validate_task.fn(REF, "game", ValidateParams())
    written = screentime_task.fn(REF, "default", 5.0)
    url = export_task.fn(
        REF,
        event=EventOut(id=REF.event_id, tenant=REF.tenant, kind="game"),
        run=RunOut(id=REF.run_id, preset="default"),
        models={"appearance": APPEARANCE_MODEL},
    )

    store = ArtifactStore.from_settings()
    assert summary["ok"] and summary["pitch_fraction"] > 0.5 and summary["persons_per_frame"] > 5
    extra = store.read_manifest(REF).model_extra
    assert extra is not None and extra["validation"]["ok"] is True
    assert written[1].endswith("screentime.csv") and store.read_bytes(REF, "screentime_csv").startswith(
        b"scope,"
    )
    breakdown = Breakdown.model_validate_json(Path(url).read_text())
    identities = store.read_table(REF, "identities")
    assert len(breakdown.identities) == identities.num_rows
    assert {t.team for t in breakdown.teams} == {"A", "B"}
    assert breakdown.validation.ok and breakdown.videos[0].width == 640
    assert breakdown.provenance.params == {"screentime": PRESETS["default"].model_dump(mode="json")}
    assert store.read_table(REF, "embeddings").num_rows == identity_game.embeddings.height


def test_footage_without_a_field_is_wrong_video(identity_episode: EpisodeCase, settings_env: Path) -> None:
    _run_with_tracks(identity_episode, REF, identity_episode.tracks.drop("cast_id"))
    with pytest.raises(WrongVideo):
        validate_task.fn(REF, "game", ValidateParams())
    table = ArtifactStore.from_settings().read_table(REF, "validation")
    assert "pitch_fraction" in table.column("check_name").to_pylist()  # the report is written first


def test_a_pitch_with_one_person_is_not_a_game(identity_game: GameCase, settings_env: Path) -> None:
    tracks = identity_game.tracks.filter(pl.col("role") == "referee").drop("person_id", "team", "role")
    _run_with_tracks(identity_game, REF, tracks)
    with pytest.raises(NotAGame):
        validate_task.fn(REF, "game", ValidateParams())
    # an episode has no field and no players to count: nothing is raised
    summary = validate_task.fn(REF, "episode", ValidateParams())
    assert "pitch_fraction" not in summary and "persons_per_frame" in summary
