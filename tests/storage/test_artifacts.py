"""The artifact store: layout, pinned schemas, atomic writes, manifests, and the analyst contract."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq
import pytest

import storage.artifacts as artifacts_module
from infra.errors import SchemaMismatch
from infra.settings import Settings
from storage.artifacts import ARTIFACT_FILES, ArtifactStore, Manifest, RunRef
from storage.schemas import (
    ARTIFACT_SCHEMA_VERSION,
    PART_ONLY_TABLES,
    PARTITION_COLUMNS,
    SCHEMAS,
    TABLE_VERSIONS,
    Table,
    empty_table,
    validate_table,
)

REF = RunRef("acme", "507f1f77bcf86cd799439011", "6f1c2d3e8a9b4c5d9e0f1a2b")
REPO = Path(__file__).resolve().parents[2]


# --- sample tables, in the types polars produces naturally (int64, float64, large strings) --------


def sample(name: str, n: int = 3, tag: int = 0) -> pl.DataFrame:
    """A valid ``name`` table of ``n`` rows; ``tag`` goes into an id column to tell versions apart."""
    box = {"x1": [10.0] * n, "y1": [20.0] * n, "x2": [30.0] * n, "y2": [60.0] * n}
    frames = list(range(n))
    if name == "detections":
        return pl.DataFrame(
            {
                "angle": ["left"] * n,
                "chunk": [0] * n,
                "frame": frames,
                "time_s": [f / 5 for f in frames],
                **box,
                "conf": [0.9] * n,
                "cls": [0] * n,
                "track_id": [tag] * (n - 1) + [None],
                "local_track_id": [1] * (n - 1) + [None],
            }
        )
    if name == "tracks":
        return pl.DataFrame(
            {
                "angle": ["left"] * n,
                "track_id": [tag] * n,
                "frame": frames,
                "time_s": [f / 5 for f in frames],
                **box,
                "conf": [0.8] * n,
            }
        )
    if name == "embeddings":
        kinds = ["appearance" if i % 2 == 0 else "face" for i in range(n)]
        face = [None if k == "appearance" else 12.5 for k in kinds]
        return pl.DataFrame(
            {
                "angle": ["left"] * n,
                "track_id": [tag] * n,
                "frame": frames,
                "kind": kinds,
                "vector": [[0.1] * (8 if k == "appearance" else 4) for k in kinds],
                "face_x1": face,
                "face_y1": face,
                "face_x2": face,
                "face_y2": face,
            }
        )
    if name == "identities":
        return pl.DataFrame(
            {
                "identity_id": [tag + i for i in range(n)],
                "kind": ["player"] * (n - 1) + ["referee"],
                "label": ["No. 7"] + [None] * (n - 1),
                "team": ["home"] * (n - 1) + [None],
                "track_ids": [[i, i + 100] for i in range(n)],
                "confidence": [0.75] * n,
                "corrected": [False] * (n - 1) + [True],
            }
        )
    if name == "screentime":
        return pl.DataFrame(
            {
                "identity_id": [tag + i for i in range(n)],
                "label": ["No. 7"] + [None] * (n - 1),
                "team": ["home"] * n,
                "kind": ["player"] * n,
                "seconds_on_screen": [12.5] * n,
                "first_seen_s": [0.0] * (n - 1) + [None],
                "last_seen_s": [40.0] * (n - 1) + [None],
                "share": [0.25] * n,
                "intervals": [[{"start_s": 0.0, "end_s": 10.0}, {"start_s": 37.5, "end_s": 40.0}]] * (n - 1)
                + [[]],
                "preset": ["default"] * n,
            }
        )
    if name == "appearance":
        return pl.DataFrame(
            {
                "angle": ["left"] * n,
                "frame": frames,
                **box,
                "vector": [[0.1 * tag] * 29] * (n - 1) + [[]],  # empty: a box too small to embed
            }
        )
    if name == "validation":
        return pl.DataFrame(
            {
                "check_name": [f"check_{i}" for i in range(n)],
                "status": (["pass", "warn", "fail"] * n)[:n],
                "value": [float(tag)] * n,
                "threshold": [0.5] + [None] * (n - 1),
                "message": ["ok"] * n,
            }
        )
    raise AssertionError(name)


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts"))


@pytest.fixture
def memory_store() -> Iterator[ArtifactStore]:
    root = f"memory://filmroom-test-{uuid.uuid4().hex}"
    mem = ArtifactStore(root)
    yield mem
    if mem.fs.exists(mem.root):
        mem.fs.rm(mem.root, recursive=True)


def visible_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --- layout ------------------------------------------------------------------------------------------


def test_run_directory_follows_the_hive_layout(settings: Settings) -> None:
    store = ArtifactStore.from_settings(settings)
    root = Path(settings.storage.root).resolve()
    run_dir = root / "tenant=acme" / "event=507f1f77bcf86cd799439011" / "run=6f1c2d3e8a9b4c5d9e0f1a2b"

    assert store.root == str(root)
    assert store.run_dir(REF) == str(run_dir)
    for name, file_name in ARTIFACT_FILES.items():
        assert store.path(REF, name) == str(run_dir / file_name)
        assert store.path(REF, file_name) == str(run_dir / file_name)
    assert store.path(REF, "screentime.csv").endswith("/screentime.csv")
    assert store.table_glob("tracks") == f"{root}/**/tracks.parquet"
    assert store.table_glob("tracks", tenant="acme") == f"{root}/tenant=acme/**/tracks.parquet"


def test_file_url_and_plain_path_roots_are_the_same_store(tmp_path: Path) -> None:
    by_path = ArtifactStore(str(tmp_path))
    by_url = ArtifactStore(f"file://{tmp_path}")
    by_path.write_table(REF, "tracks", sample("tracks"))

    assert by_url.path(REF, "tracks") == by_path.path(REF, "tracks")
    assert by_url.read_table(REF, "tracks").equals(by_path.read_table(REF, "tracks"))


def test_unknown_artifact_names_are_refused(store: ArtifactStore) -> None:
    with pytest.raises(ValueError, match="unknown artifact 'trakcs'"):
        store.path(REF, "trakcs")
    with pytest.raises(SchemaMismatch, match="no artifact schema named 'trakcs'"):
        store.write_table(REF, "trakcs", sample("tracks"))
    with pytest.raises(ValueError, match="write it with write_table"):
        store.write_bytes(REF, "tracks", b"not parquet")


@pytest.mark.parametrize(
    "tenant, event_id, run_id",
    [
        ("../etc", "e", "r"),
        ("a/b", "e", "r"),
        ("", "e", "r"),
        ("t", "event=x", "r"),
        ("t", "e", ".hidden"),
        ("t", "e", "has space"),
        ("t", "e", "x" * 129),
    ],
)
def test_run_ref_refuses_unsafe_path_segments(tenant: str, event_id: str, run_id: str) -> None:
    with pytest.raises(ValueError, match="must be 1-128 characters"):
        RunRef(tenant, event_id, run_id)


def test_run_ref_is_small_hashable_and_picklable() -> None:
    import pickle

    assert pickle.loads(pickle.dumps(REF)) == REF
    assert len({REF, RunRef(REF.tenant, REF.event_id, REF.run_id)}) == 1
    assert str(REF) == "acme/507f1f77bcf86cd799439011/6f1c2d3e8a9b4c5d9e0f1a2b"


def test_files_carry_schema_metadata_and_zstd_but_no_partition_columns(store: ArtifactStore) -> None:
    ref = store.write_table(REF, "detections", sample("detections"))
    parquet = pq.ParquetFile(ref.path)
    meta = parquet.schema_arrow.metadata

    assert meta[b"filmroom.schema_version"] == str(ARTIFACT_SCHEMA_VERSION).encode()
    assert meta[b"filmroom.artifact"] == b"detections"
    assert meta[b"filmroom.artifact_version"] == str(TABLE_VERSIONS[Table.detections]).encode()
    assert parquet.metadata.row_group(0).column(0).compression == "ZSTD"
    assert not set(PARTITION_COLUMNS) & set(parquet.schema_arrow.names)
    assert (ref.rows, ref.version, ref.artifact) == (3, 1, "detections")


def test_no_pinned_schema_holds_a_partition_column() -> None:
    for schema in SCHEMAS.values():
        assert not set(PARTITION_COLUMNS) & set(schema.names)


# --- round-trips ---------------------------------------------------------------------------------


RUN_TABLES = [t for t in Table if t not in PART_ONLY_TABLES]


@pytest.mark.parametrize("name", [t.value for t in RUN_TABLES])
@pytest.mark.parametrize("flavour", ["polars", "pyarrow"])
def test_every_table_round_trips_with_its_pinned_schema(
    store: ArtifactStore, name: str, flavour: str
) -> None:
    frame = sample(name, n=5, tag=7)
    data = frame if flavour == "polars" else frame.to_arrow()

    written = store.write_table(REF, name, data)
    back = store.read_table(REF, name)

    assert written.rows == 5
    assert back.schema.equals(SCHEMAS[Table(name)], check_metadata=True)
    assert pl.from_arrow(back).equals(frame.cast(dict(pl.from_arrow(back).schema)))  # type: ignore[union-attr,arg-type]


@pytest.mark.parametrize("name", [t.value for t in RUN_TABLES])
def test_an_empty_table_round_trips(store: ArtifactStore, name: str) -> None:
    store.write_table(REF, name, empty_table(name))
    assert store.read_table(REF, name).num_rows == 0


def test_the_appearance_table_lives_only_as_pinned_per_chunk_parts(store: ArtifactStore) -> None:
    frame = sample("appearance", n=4, tag=3)

    written = store.write_part(REF, "appearance", 2, frame)
    back = store.read_part(REF, "appearance", 2)

    assert written.rows == 4 and written.version == TABLE_VERSIONS[Table.appearance]
    assert back.schema.equals(SCHEMAS[Table.appearance], check_metadata=True)
    assert back.column("vector").to_pylist()[-1] == []
    assert store.part_ref(REF, "appearance", 2).path == written.path
    assert "appearance" not in ARTIFACT_FILES  # not a run's file: no listing or download offers it
    with pytest.raises(SchemaMismatch, match="per chunk"):
        store.write_table(REF, "appearance", frame)
    assert not store.exists(REF, "detections")
    store.delete_parts(REF, "appearance")
    assert not store.has_part(REF, "appearance", 2)


def test_a_table_can_be_written_from_batches(store: ArtifactStore) -> None:
    ref = store.write_table(REF, "tracks", (sample("tracks", n=4, tag=i) for i in range(3)))

    back = store.read_table(REF, "tracks")
    assert ref.rows == back.num_rows == 12
    assert sorted(set(back.column("track_id").to_pylist())) == [0, 1, 2]


def test_safe_differences_are_cast() -> None:
    frame = sample("embeddings", n=4).with_columns(
        pl.col("angle").cast(pl.Categorical),
        pl.col("kind").cast(pl.Enum(["appearance", "face"])),
        pl.col("frame").cast(pl.UInt16),
        pl.lit(None).alias("face_x1"),  # all-null column (polars Null dtype)
        pl.Series("vector", [[0.5, 0.25]] * 4, dtype=pl.Array(pl.Float64, 2)),
    )
    shuffled = frame.select(list(reversed(frame.columns)))

    checked = validate_table("embeddings", shuffled)

    assert checked.schema.equals(SCHEMAS[Table.embeddings])
    assert checked.column("vector").to_pylist()[0] == [0.5, 0.25]
    assert checked.column("angle").to_pylist() == ["left"] * 4


# --- schema checks ------------------------------------------------------------------------------------


def _with(name: str, **columns: Any) -> pl.DataFrame:
    return sample(name).with_columns(
        **{k: v if isinstance(v, pl.Expr | pl.Series) else pl.lit(v) for k, v in columns.items()}
    )


REJECTIONS: list[tuple[str, str, Callable[[], object], str]] = [
    ("missing column", "tracks", lambda: sample("tracks").drop("conf"), "missing columns ['conf']"),
    ("extra column", "tracks", lambda: _with("tracks", speed=1.0), "unexpected columns ['speed']"),
    (
        "hive column stored in the file",
        "tracks",
        lambda: _with("tracks", tenant="acme"),
        "hive partition columns ['tenant'] must not be stored",
    ),
    (
        "text where a number belongs",
        "tracks",
        lambda: _with("tracks", frame=pl.col("frame").cast(pl.String)),
        "column 'frame': expected int32, found large_string (no safe cast)",
    ),
    (
        "float where an integer belongs",
        "detections",
        lambda: _with("detections", track_id=pl.col("track_id").cast(pl.Float64)),
        "column 'track_id': expected int64, found double (no safe cast)",
    ),
    (
        "integer that does not fit",
        "tracks",
        lambda: _with("tracks", frame=2**40),
        "column 'frame': expected int32, found int64; values do not fit",
    ),
    (
        "float that overflows float32",
        "tracks",
        lambda: _with("tracks", x1=1e300),
        "column 'x1': expected float, found double; 3 value(s) overflow",
    ),
    (
        "null in a non-nullable column",
        "tracks",
        lambda: _with("tracks", conf=pl.Series([0.5, None, 0.5])),
        "column 'conf': 1 null(s) but the column is non-nullable",
    ),
    (
        "null inside a list",
        "embeddings",
        lambda: _with("embeddings", vector=pl.Series([[0.1, None], [0.2], [0.3]])),
        "column 'vector[]': 1 null item(s)",
    ),
    (
        "null inside a struct",
        "screentime",
        lambda: _with(
            "screentime",
            intervals=pl.Series(
                [[{"start_s": 0.0, "end_s": None}], [], []],
                dtype=pl.List(pl.Struct({"start_s": pl.Float64, "end_s": pl.Float64})),
            ),
        ),
        "column 'intervals[].end_s': 1 null(s)",
    ),
    (
        "struct with other fields",
        "screentime",
        lambda: _with("screentime", intervals=pl.Series([[{"a": 0.0, "b": 1.0}]] * 3)),
        "column 'intervals': expected list<item: struct<start_s",
    ),
    (
        "list of the wrong items",
        "identities",
        lambda: _with("identities", track_ids=pl.Series([["a"], ["b"], ["c"]])),
        "column 'track_ids': expected list<item: int64 not null>, found large_list<item: large_string>",
    ),
    (
        "value outside a closed set",
        "embeddings",
        lambda: _with("embeddings", kind="body"),
        "column 'kind': values ['body'] not in ['appearance', 'face']",
    ),
    (
        "status outside pass/warn/fail",
        "validation",
        lambda: _with("validation", status="ok"),
        "column 'status': values ['ok'] not in ['fail', 'pass', 'warn']",
    ),
    (
        "not a table",
        "tracks",
        lambda: {"angle": ["left"]},
        "expected a pyarrow Table/RecordBatch or a polars",
    ),
]


@pytest.mark.parametrize(
    "case, name, make_table, fragment", REJECTIONS, ids=[case for case, *_ in REJECTIONS]
)
def test_wrong_tables_are_rejected_with_a_clear_message(
    case: str, name: str, make_table: Callable[[], object], fragment: str
) -> None:
    with pytest.raises(SchemaMismatch) as caught:
        validate_table(name, make_table())

    message = str(caught.value)
    assert message.startswith(name), message
    assert fragment in message, message
    assert caught.value.code == "schema_mismatch"


def test_every_problem_is_reported_at_once() -> None:
    bad = _with("tracks", tenant="acme", frame="x").drop("conf")
    with pytest.raises(SchemaMismatch) as caught:
        validate_table("tracks", bad)
    assert len(caught.value.context["problems"]) == 3


def test_reading_a_file_of_another_artifact_is_refused(store: ArtifactStore) -> None:
    written = store.write_table(REF, "tracks", sample("tracks"))
    Path(store.path(REF, "validation")).write_bytes(Path(written.path).read_bytes())

    with pytest.raises(SchemaMismatch, match="validation: the file holds the 'tracks' artifact"):
        store.read_table(REF, "validation")


def test_reading_a_newer_table_version_is_refused(store: ArtifactStore) -> None:
    table = validate_table("tracks", sample("tracks"))
    newer = table.replace_schema_metadata({**table.schema.metadata, b"filmroom.artifact_version": b"99"})
    Path(store.run_dir(REF)).mkdir(parents=True)
    pq.write_table(newer, store.path(REF, "tracks"))

    with pytest.raises(SchemaMismatch, match="tracks: the file has schema v99, newer than"):
        store.read_table(REF, "tracks")


def test_a_missing_table_raises_file_not_found(store: ArtifactStore) -> None:
    with pytest.raises(FileNotFoundError):
        store.read_table(REF, "tracks")


# --- atomic writes -----------------------------------------------------------------------------------


def _failing_batches(good: pl.DataFrame) -> Iterator[pl.DataFrame]:
    yield good
    raise RuntimeError("worker died mid-write")


@pytest.mark.parametrize("backend", ["local", "memory"])
def test_a_writer_failing_midway_leaves_the_previous_version(
    store: ArtifactStore, memory_store: ArtifactStore, backend: str
) -> None:
    target = store if backend == "local" else memory_store
    target.write_table(REF, "tracks", sample("tracks", tag=1))

    with pytest.raises(RuntimeError, match="worker died mid-write"):
        target.write_table(REF, "tracks", _failing_batches(sample("tracks", n=50, tag=2)))

    assert target.read_table(REF, "tracks").column("track_id").to_pylist() == [1, 1, 1]
    assert [p.rsplit("/", 1)[1] for p in target.fs.ls(target.run_dir(REF), detail=False)] == [
        "tracks.parquet"
    ]


def test_a_failing_rename_leaves_the_previous_version(
    store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.write_table(REF, "tracks", sample("tracks", tag=1))
    store.write_json(REF, "breakdown", {"version": 1})

    def refuse(self: Path, target: Any) -> Path:
        raise OSError("disk full at the last moment")

    monkeypatch.setattr(Path, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        store.write_table(REF, "tracks", sample("tracks", tag=2))
    with pytest.raises(OSError, match="disk full"):
        store.write_json(REF, "breakdown", {"version": 2})
    monkeypatch.undo()

    assert store.read_table(REF, "tracks").column("track_id").to_pylist() == [1, 1, 1]
    assert store.read_json(REF, "breakdown") == {"version": 1}
    assert visible_files(Path(store.run_dir(REF))) == ["breakdown.json", "tracks.parquet"]


def test_a_failing_move_on_an_object_store_leaves_the_previous_version(
    memory_store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory_store.write_table(REF, "tracks", sample("tracks", tag=1))

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError("copy failed")

    monkeypatch.setattr(memory_store.fs, "mv", refuse)
    with pytest.raises(OSError, match="copy failed"):
        memory_store.write_table(REF, "tracks", sample("tracks", tag=2))

    assert memory_store.read_table(REF, "tracks").column("track_id").to_pylist() == [1, 1, 1]
    assert memory_store.fs.ls(memory_store.run_dir(REF), detail=False) == [
        memory_store.path(REF, "tracks").removeprefix("memory://")
    ]


def test_a_wrong_table_fails_before_storage_is_touched(store: ArtifactStore) -> None:
    store.write_table(REF, "tracks", sample("tracks", tag=1))
    before = Path(store.path(REF, "tracks")).stat().st_mtime_ns

    with pytest.raises(SchemaMismatch):
        store.write_table(REF, "tracks", sample("tracks").drop("conf"))

    assert Path(store.path(REF, "tracks")).stat().st_mtime_ns == before
    assert visible_files(Path(store.run_dir(REF))) == ["tracks.parquet"]


KILL_WRITER = """
import sys
import numpy as np
import pyarrow as pa
from storage.artifacts import ArtifactStore, RunRef

store = ArtifactStore(sys.argv[1])
ref = RunRef("acme", "507f1f77bcf86cd799439011", "6f1c2d3e8a9b4c5d9e0f1a2b")
n = 1_000_000
rng = np.random.default_rng(0)
columns = {
    "angle": pa.array(np.where(rng.random(n) < 0.5, "left", "right")),
    "frame": np.arange(n, dtype=np.int32),
    "time_s": np.arange(n) / 25.0,
    **{c: rng.random(n, dtype=np.float32) for c in ("x1", "y1", "x2", "y2", "conf")},
}
version = 0
while True:
    table = pa.table({"track_id": np.full(n, version, dtype=np.int64), **columns})
    store.write_table(ref, "tracks", table)
    print("wrote", version, flush=True)
    version += 1
"""


def test_sigkill_during_a_big_write_leaves_the_previous_version_readable(store: ArtifactStore) -> None:
    run_dir = Path(store.run_dir(REF))
    child = subprocess.Popen(
        [sys.executable, "-c", KILL_WRITER, store.root],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "wrote 0"  # a complete previous version exists
        deadline = time.monotonic() + 60
        while not [p for p in run_dir.iterdir() if p.name.startswith(".tracks.parquet.tmp-")]:
            assert time.monotonic() < deadline, "the writer never started its second write"
            time.sleep(0.001)
        os.kill(child.pid, signal.SIGKILL)  # mid-write: the temp file exists, the rename has not happened
    finally:
        child.kill()
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    back = store.read_table(REF, "tracks")  # validates the schema too
    versions = set(back.column("track_id").to_pylist())
    assert back.num_rows == 1_000_000
    assert len(versions) == 1 and versions <= {0, 1}
    assert visible_files(run_dir)[-1] == "tracks.parquet"
    assert [p.name for p in run_dir.glob("*.parquet")] == ["tracks.parquet"]
    assert pl.scan_parquet(store.table_glob("tracks")).select(pl.len()).collect().item() == 1_000_000

    assert store.sweep_temp_files(REF) >= 1
    assert visible_files(run_dir) == ["tracks.parquet"]


# --- runs ---------------------------------------------------------------------------------------------


def test_list_runs_filters_by_tenant_and_event_and_ignores_other_entries(store: ArtifactStore) -> None:
    refs = [
        RunRef("acme", "e1", "r1"),
        RunRef("acme", "e1", "r2"),
        RunRef("acme", "e2", "r1"),
        RunRef("0042", "e9", "r1"),
    ]
    for ref in refs:
        store.write_json(ref, "manifest", Manifest.for_run(ref))
    Path(store.root, "README.txt").write_text("not a run")
    Path(store.root, "tenant=acme", "event=e1", "notes").mkdir()

    assert store.list_runs() == sorted(refs, key=lambda r: (r.tenant, r.event_id, r.run_id))
    assert store.list_runs(tenant="acme") == refs[:3]
    assert store.list_runs(tenant="acme", event="e1") == refs[:2]
    assert store.list_runs(tenant="nobody") == []


def test_list_runs_of_an_empty_root_is_empty(tmp_path: Path) -> None:
    assert ArtifactStore(str(tmp_path / "not-yet-created")).list_runs() == []


def test_delete_run_removes_partial_artifacts_and_is_idempotent(store: ArtifactStore) -> None:
    other = RunRef(REF.tenant, REF.event_id, "other")
    store.write_table(REF, "detections", sample("detections"))
    store.write_table(other, "tracks", sample("tracks"))

    assert store.delete_run(REF) is True
    assert store.delete_run(REF) is False
    assert not store.exists(REF)
    assert store.exists(other, "tracks")
    assert store.list_runs() == [other]


# --- manifests ---------------------------------------------------------------------------------------


def test_update_manifest_creates_then_merges(store: ArtifactStore) -> None:
    first = store.update_manifest(
        REF,
        model_name="yolo11n",
        model_version="8.3.0",
        params={"analysis_fps": 5.0},
        timings={"ingest": 1.5},
    )
    ref = store.write_table(REF, "tracks", sample("tracks"))
    second = store.update_manifest(
        REF, timings={"detect_track": 40.0}, row_counts={ref.artifact: ref.rows}, error_code=None
    )

    on_disk = store.read_manifest(REF)
    assert on_disk == second
    assert second.timings == {"ingest": 1.5, "detect_track": 40.0}
    assert second.row_counts == {"tracks": 3}
    assert second.params == {"analysis_fps": 5.0}
    assert (second.model_name, second.model_version) == ("yolo11n", "8.3.0")
    assert second.created_at == first.created_at
    assert second.updated_at >= first.updated_at
    assert second.code_version == metadata.version("filmroom")
    assert second.schema_version == ARTIFACT_SCHEMA_VERSION
    assert second.table_versions == {t.value: v for t, v in TABLE_VERSIONS.items()}
    assert (second.tenant, second.event_id, second.run_id) == (REF.tenant, REF.event_id, REF.run_id)

    raw = json.loads(Path(store.path(REF, "manifest")).read_text())
    assert raw["error_code"] is None and raw["schema_version"] == ARTIFACT_SCHEMA_VERSION


def test_update_manifest_records_an_error_code_and_keeps_unknown_keys(store: ArtifactStore) -> None:
    newer = {**Manifest.for_run(REF).model_dump(mode="json"), "written_by_a_newer_filmroom": [1, 2]}
    store.write_json(REF, "manifest", newer)

    updated = store.update_manifest(REF, error_code="missing_videos")

    assert updated.error_code == "missing_videos"
    assert store.read_json(REF, "manifest")["written_by_a_newer_filmroom"] == [1, 2]


def test_update_manifest_refuses_unknown_and_fixed_fields(store: ArtifactStore) -> None:
    with pytest.raises(ValueError, match=r"unknown fields \['timing'\]"):
        store.update_manifest(REF, timing={"x": 1.0})
    with pytest.raises(ValueError, match=r"fixed fields \['run_id'\]"):
        store.update_manifest(REF, run_id="other")
    assert not store.exists(REF, "manifest")


# --- memory:// backend -------------------------------------------------------------------------------


def test_memory_backend_does_the_whole_cycle(memory_store: ArtifactStore) -> None:
    for name in RUN_TABLES:
        memory_store.write_table(REF, name, sample(name.value))
    memory_store.write_json(REF, "breakdown", {"players": 22})
    memory_store.write_bytes(REF, "screentime.csv", b"identity_id,seconds\n1,12.5\n")
    memory_store.update_manifest(REF, row_counts={"tracks": 3})

    assert memory_store.path(REF, "tracks").startswith("memory://")
    assert memory_store.list_runs() == [REF]
    assert memory_store.read_table(REF, "screentime").num_rows == 3
    assert memory_store.read_json(REF, "breakdown") == {"players": 22}
    assert memory_store.read_bytes(REF, "screentime_csv").startswith(b"identity_id")
    assert memory_store.read_manifest(REF).row_counts == {"tracks": 3}
    names = sorted(p.rsplit("/", 1)[1] for p in memory_store.fs.ls(memory_store.run_dir(REF), detail=False))
    assert names == sorted(ARTIFACT_FILES.values())

    assert memory_store.delete_run(REF)
    assert memory_store.list_runs() == []


# --- the analyst contract: plain polars / duckdb, no filmroom ---------------------------------------

POLARS_SNIPPET = """\
import polars as pl
tracks = pl.scan_parquet(
    root + "/**/tracks.parquet",
    hive_partitioning=True,
    hive_schema={"tenant": pl.String, "event": pl.String, "run": pl.String},
).collect()
"""

DUCKDB_SNIPPET = """\
import duckdb
tracks = duckdb.sql(
    f"SELECT * FROM read_parquet('{root}/**/tracks.parquet', hive_partitioning = true, "
    "hive_types = {'tenant': 'VARCHAR', 'event': 'VARCHAR', 'run': 'VARCHAR'})"
)
"""

POLARS_CHECK = """
rows = tracks.group_by("tenant", "event", "run").agg(pl.len().alias("n"), pl.col("track_id").first())
result = {
    "types": [str(tracks.schema[c]) for c in ("tenant", "event", "run")],
    "rows": sorted([r["tenant"], r["event"], r["run"], r["n"], r["track_id"]] for r in rows.to_dicts()),
}
"""

DUCKDB_CHECK = """
grouped = tracks.aggregate("tenant, event, run, count(*), first(track_id)", "tenant, event, run")
types = dict(zip(tracks.columns, [str(t) for t in tracks.types]))
result = {
    "types": [types[c] for c in ("tenant", "event", "run")],
    "rows": sorted(list(r) for r in grouped.fetchall()),
}
"""

NO_FILMROOM = """
import json
ours = sorted({m.split(".")[0] for m in sys.modules} & {"storage", "infra", "api", "flows", "tasks"})
print(json.dumps({**result, "imported": ours}))
"""

# Partition values that type inference turns into numbers: without the pinned types polars reads
# tenant 0042 as 42 and the events as i128, duckdb reads the runs as BIGINT.
ANALYST_RUNS = [
    RunRef(tenant, event, run)
    for tenant in ("0042", "0107")
    for event in ("123456789012345678901234", "000000000000000000000777")
    for run in ("1001", "2024")
]


@pytest.fixture
def analyst_root(tmp_path: Path) -> str:
    store = ArtifactStore(str(tmp_path / "analyst"))
    for i, ref in enumerate(ANALYST_RUNS):
        store.write_table(ref, "tracks", sample("tracks", n=i + 1, tag=i))
        store.write_table(ref, "detections", sample("detections"))
        store.update_manifest(ref, row_counts={"tracks": i + 1})
    # a stale temp file of an interrupted write must not be read
    Path(store.run_dir(ANALYST_RUNS[0]), ".tracks.parquet.tmp-0123456789abcdef").write_bytes(b"partial")
    return store.root


def _run_analyst_script(snippet: str, check: str, root: str, cwd: Path) -> dict[str, Any]:
    script = "import sys\nroot = sys.argv[1]\n" + snippet + check + NO_FILMROOM
    done = subprocess.run(
        [sys.executable, "-c", script, root], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


EXPECTED_ANALYST_ROWS = sorted([r.tenant, r.event_id, r.run_id, i + 1, i] for i, r in enumerate(ANALYST_RUNS))


def test_polars_alone_reads_every_run_with_string_partitions(analyst_root: str, tmp_path: Path) -> None:
    result = _run_analyst_script(POLARS_SNIPPET, POLARS_CHECK, analyst_root, tmp_path)

    assert result["imported"] == []
    assert result["types"] == ["String", "String", "String"]
    assert result["rows"] == EXPECTED_ANALYST_ROWS


def test_duckdb_alone_reads_every_run_with_string_partitions(analyst_root: str, tmp_path: Path) -> None:
    result = _run_analyst_script(DUCKDB_SNIPPET, DUCKDB_CHECK, analyst_root, tmp_path)

    assert result["imported"] == []
    assert result["types"] == ["VARCHAR", "VARCHAR", "VARCHAR"]
    assert result["rows"] == EXPECTED_ANALYST_ROWS


@pytest.mark.parametrize("snippet", [POLARS_SNIPPET, DUCKDB_SNIPPET], ids=["polars", "duckdb"])
def test_the_documented_snippets_are_the_tested_ones(snippet: str) -> None:
    doc = artifacts_module.__doc__ or ""
    assert textwrap.indent(snippet, "    ") in doc
