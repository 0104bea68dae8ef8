"""Where every run's artifacts live: one :class:`ArtifactStore` owns every path.

Layout (hive style, one directory per run)::

    <root>/tenant=<tenant>/event=<event id>/run=<run id>/
        detections.parquet  tracks.parquet  embeddings.parquet
        identities.parquet  screentime.parquet  validation.parquet
        breakdown.json  manifest.json  screentime.csv

``<root>`` is ``settings.storage.root``: a local folder, ``file://``, ``memory://`` or an object
store URL (``s3://bucket/prefix`` with ``settings.storage.storage_options``). Tables follow the
pinned schemas of :mod:`storage.schemas`; ``tenant``/``event``/``run`` are never stored in a file,
readers take them from the path.

Reading every run at once (analysts)
------------------------------------
Pin the partition columns to strings. Left to infer (polars 2.1, duckdb 2.0), polars turns
``tenant=0042`` into the integer 42 and a 24-digit event id into an ``i128``, and duckdb turns
all-digit ids such as ``run=2024`` into ``BIGINT``: leading zeros are lost, and a column's type
depends on which ids happen to be in the glob. Ids are strings; say so::

    import polars as pl
    tracks = pl.scan_parquet(
        root + "/**/tracks.parquet",
        hive_partitioning=True,
        hive_schema={"tenant": pl.String, "event": pl.String, "run": pl.String},
    ).collect()

    import duckdb
    tracks = duckdb.sql(
        f"SELECT * FROM read_parquet('{root}/**/tracks.parquet', hive_partitioning = true, "
        "hive_types = {'tenant': 'VARCHAR', 'event': 'VARCHAR', 'run': 'VARCHAR'})"
    )

For object storage add ``storage_options=...`` (polars) or a duckdb secret. Narrow the glob to
one tenant/event with ``root + "/tenant=acme/**/tracks.parquet"``.

Atomic writes, per backend
--------------------------
Every write goes to a temporary name in the run's directory, ``.<file>.tmp-<uuid hex>``, and only
a complete file is moved to its final name. Temporary names start with a dot and do not end in
``.parquet``/``.json``, so ``*.parquet`` globs, polars, duckdb and pyarrow datasets never see them.

* **local folders / file://**: the temp file is fsynced, renamed over the final name with
  ``os.replace`` (atomic on POSIX within one filesystem) and the directory is fsynced. A reader sees the old
  file or the new one, never a mix; a crash or SIGKILL at any point leaves the previous version
  readable (at worst a stale hidden temp file, removed by :meth:`ArtifactStore.sweep_temp_files`
  or :meth:`ArtifactStore.delete_run`).
* **object stores (s3://, gs://)**: the temp key is uploaded completely (a multipart upload
  becomes visible only when completed; a failed write is discarded), then ``fs.mv`` copies it
  server-side to the final key and deletes the temp key. S3 and GCS replace an object atomically
  on PUT/COPY and are strongly read-after-write consistent, so readers see the old or the new
  object, never a partial one. A crash between copy and delete leaves a stale temp key. (Not
  exercised by the tests; for other fsspec backends the guarantee is whatever their ``mv`` gives:
  a rename on sftp/hdfs, possibly an asynchronous copy on Azure.)
* On every backend there is no multi-file commit: the manifest says which artifacts a run completed.
* **memory://** (tests): the same temp-then-move; within one process.

:meth:`ArtifactStore.update_manifest` is an atomic read-modify-write (never a half-written
manifest) but not isolated: two concurrent updaters can lose one's change. The flow, one process
per run, is the only writer; tasks return :class:`ArtifactRef` (with row counts) to it.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final, TypeAlias

import fsspec
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem
from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_jsonable_python

from infra.errors import SchemaMismatch
from infra.settings import Settings, get_settings
from infra.version import code_version
from storage.schemas import (
    ARTIFACT_SCHEMA_VERSION,
    PART_ONLY_TABLES,
    SCHEMAS,
    TABLE_VERSIONS,
    Table,
    TableLike,
    check_metadata,
    table_name,
    validate_table,
)

PARQUET_COMPRESSION: Final = "zstd"

DOCUMENT_FILES: Final[Mapping[str, str]] = {
    "breakdown": "breakdown.json",
    "manifest": "manifest.json",
    "screentime_csv": "screentime.csv",
}
"""Non-table artifacts: logical name -> file name."""

ARTIFACT_FILES: Final[Mapping[str, str]] = {
    **{t.value: f"{t.value}.parquet" for t in Table if t not in PART_ONLY_TABLES},
    **DOCUMENT_FILES,
}
"""Every artifact of a run: logical name -> file name (either spelling is accepted); part-only tables
live under ``parts/`` and are not a run's files."""

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_RUN_DIR = re.compile(r"tenant=([^/]+)/event=([^/]+)/run=([^/]+)$")
_TEMP_MARK: Final = ".tmp-"


# --- references ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunRef:
    """Which run: small, hashable, picklable; what Prefect tasks pass to each other.

    Each part is 1-128 characters of ``[A-Za-z0-9_.-]`` starting with a letter or digit, so it is
    a safe path segment and a hive value that needs no escaping (ObjectIds and UUIDs qualify).
    """

    tenant: str
    event_id: str
    run_id: str

    def __post_init__(self) -> None:
        for part in ("tenant", "event_id", "run_id"):
            value = getattr(self, part)
            if not isinstance(value, str) or not _SEGMENT.fullmatch(value):
                raise ValueError(
                    f"RunRef.{part} must be 1-128 characters of [A-Za-z0-9_.-] starting with a "
                    f"letter or digit, got {value!r}"
                )

    def __str__(self) -> str:
        return f"{self.tenant}/{self.event_id}/{self.run_id}"


@dataclass(frozen=True, slots=True)
class ArtifactRef:
    """A written table: where it is and how many rows it holds (returned instead of the table)."""

    run: RunRef
    artifact: str
    path: str
    rows: int
    version: int


# --- manifest --------------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


class Manifest(BaseModel):
    """``manifest.json``: what produced a run's artifacts and how it went.

    Unknown keys (written by a newer filmroom) are kept, so an older process's update never
    drops them.
    """

    model_config = ConfigDict(extra="allow")

    tenant: str = Field(description="Tenant of the run.")
    event_id: str = Field(description="Event the run analysed.")
    run_id: str = Field(description="The run's id.")
    schema_version: int = Field(
        default=ARTIFACT_SCHEMA_VERSION, description="Layout version the artifacts were written with."
    )
    table_versions: dict[str, int] = Field(
        default_factory=lambda: {t.value: v for t, v in TABLE_VERSIONS.items()},
        description="Per-table schema versions.",
    )
    code_version: str = Field(default_factory=code_version, description="filmroom package version.")
    model_name: str | None = Field(default=None, description="Detector/embedding model name.")
    model_version: str | None = Field(default=None, description="Model version or weights digest.")
    params: dict[str, Any] = Field(default_factory=dict, description="Parameters the run used.")
    timings: dict[str, float] = Field(default_factory=dict, description="Seconds spent per stage.")
    row_counts: dict[str, int] = Field(default_factory=dict, description="Rows per written table.")
    error_code: str | None = Field(default=None, description="Error registry code if the run failed.")
    videos: list[dict[str, Any]] = Field(
        default_factory=list, description="What ingest probed: one entry per camera angle."
    )
    stage_keys: dict[str, str] = Field(
        default_factory=dict,
        description="Cache key (inputs + params + code version) each finished stage ran with; "
        "a re-run skips a stage whose key still matches.",
    )
    created_at: datetime = Field(default_factory=_now, description="When the manifest was created (UTC).")
    updated_at: datetime = Field(default_factory=_now, description="Last update (UTC).")

    @classmethod
    def for_run(cls, ref: RunRef) -> Manifest:
        return cls(tenant=ref.tenant, event_id=ref.event_id, run_id=ref.run_id)


_MERGED_FIELDS: Final = frozenset({"params", "timings", "row_counts", "table_versions", "stage_keys"})
_FIXED_FIELDS: Final = frozenset({"tenant", "event_id", "run_id", "created_at"})


# --- the store -------------------------------------------------------------------------------------

Sink: TypeAlias = str | IO[bytes]
"""Where a writer callback writes: a local path (local backend) or an open binary file."""


class ArtifactStore:
    """Every artifact path of every run, and atomic reads and writes of them.

    Build it with :meth:`from_settings` (the normal way) or from a root URL and fsspec
    ``storage_options``. Safe to share between threads; cheap to rebuild in each process.
    """

    def __init__(self, root: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self.storage_options: dict[str, Any] = dict(storage_options or {})
        fs, path = fsspec.core.url_to_fs(root, **self.storage_options)
        self.fs: fsspec.AbstractFileSystem = fs
        self._root: str = path.rstrip("/")
        self._local = isinstance(fs, LocalFileSystem)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> ArtifactStore:
        """The store at ``settings.storage.root`` (default: the process settings)."""
        storage = (settings or get_settings()).storage
        return cls(storage.root, storage.storage_options)

    def __repr__(self) -> str:
        return f"ArtifactStore({self.root!r})"

    # --- paths ---

    @property
    def root(self) -> str:
        """The root as analysts pass it to polars/duckdb: a local path, or a protocol URL."""
        return self._url(self._root)

    def run_dir(self, ref: RunRef) -> str:
        """``<root>/tenant=<t>/event=<e>/run=<r>``."""
        return self._url(self._run_dir(ref))

    def path(self, ref: RunRef, artifact: str) -> str:
        """The URL (local path for local roots) of one artifact of a run."""
        return self._url(self._path(ref, artifact))

    def table_glob(self, name: str, tenant: str | None = None) -> str:
        """``<root>/**/<name>.parquet`` (or under one tenant): the glob that reads every run."""
        base = self._root if tenant is None else f"{self._root}/tenant={tenant}"
        return self._url(f"{base}/**/{table_name(name).value}.parquet")

    def _url(self, path: str) -> str:
        return path if self._local else str(self.fs.unstrip_protocol(path))

    def _run_dir(self, ref: RunRef) -> str:
        return f"{self._root}/tenant={ref.tenant}/event={ref.event_id}/run={ref.run_id}"

    def _path(self, ref: RunRef, artifact: str) -> str:
        return f"{self._run_dir(ref)}/{_file_name(artifact)}"

    # --- tables ---

    def write_table(self, ref: RunRef, name: str, data: TableLike | Iterable[TableLike]) -> ArtifactRef:
        """Validate and write one table atomically (zstd Parquet with the schema metadata).

        ``data`` is a table (pyarrow or polars) or an iterable of them (e.g. a generator of
        record batches, for tables too big to hold at once); each part is validated before it is
        written. If anything fails the previous file, if any, is untouched.
        """
        table = table_name(name)
        if table in PART_ONLY_TABLES:
            raise SchemaMismatch(
                f"{table.value} is an intermediate table: it is written per chunk (write_part), "
                "never as a run's file",
                artifact=table.value,
            )
        checked: Iterable[pa.Table]
        if isinstance(data, pa.Table | pa.RecordBatch | pl.DataFrame):
            checked = [validate_table(table, data)]  # a wrong table fails before storage is touched
        else:
            checked = (validate_table(table, part) for part in data)
        rows = 0

        def write(sink: Sink) -> None:
            nonlocal rows
            with pq.ParquetWriter(sink, SCHEMAS[table], compression=PARQUET_COMPRESSION) as writer:
                for part in checked:
                    writer.write_table(part)
                    rows += part.num_rows

        path = self._path(ref, table)
        self._write_atomic(path, write)
        return ArtifactRef(ref, table.value, self._url(path), rows, TABLE_VERSIONS[table])

    def read_table(self, ref: RunRef, name: str) -> pa.Table:
        """One table of a run, validated against its pinned schema (FileNotFoundError if absent)."""
        table = table_name(name)
        path = self._path(ref, table)
        if self._local:
            with pq.ParquetFile(path) as parquet:
                data = parquet.read()
        else:
            with self.fs.open(path, "rb") as f, pq.ParquetFile(f) as parquet:
                data = parquet.read()
        check_metadata(table, data.schema.metadata)
        return validate_table(table, data)

    # --- per-chunk parts (intermediate results of mapped stages) ---

    def _part_path(self, ref: RunRef, name: str, index: int) -> str:
        return f"{self._run_dir(ref)}/parts/{table_name(name).value}/part-{index:05d}.parquet"

    def write_part(self, ref: RunRef, name: str, index: int, data: TableLike) -> ArtifactRef:
        """One chunk's share of a table, validated against the table's schema, written atomically.

        Parts live under ``<run>/parts/<table>/part-NNNNN.parquet``: the analysts' ``**/<table>.parquet``
        glob never sees them, and a re-run finds the chunks it already finished.
        """
        table = table_name(name)
        checked = validate_table(table, data)

        def write(sink: Sink) -> None:
            pq.write_table(checked, sink, compression=PARQUET_COMPRESSION)

        path = self._part_path(ref, table, index)
        self._write_atomic(path, write)
        return ArtifactRef(
            ref, f"{table.value}[{index}]", self._url(path), checked.num_rows, TABLE_VERSIONS[table]
        )

    def read_part(self, ref: RunRef, name: str, index: int) -> pa.Table:
        """One chunk's part (FileNotFoundError if that chunk has not finished)."""
        table = table_name(name)
        with self.fs.open(self._part_path(ref, table, index), "rb") as f, pq.ParquetFile(f) as parquet:
            data = parquet.read()
        check_metadata(table, data.schema.metadata)
        return validate_table(table, data)

    def part_ref(self, ref: RunRef, name: str, index: int) -> ArtifactRef:
        """The reference of a part already written (rows read from the Parquet footer)."""
        table = table_name(name)
        path = self._part_path(ref, table, index)
        with self.fs.open(path, "rb") as f:
            rows = pq.ParquetFile(f).metadata.num_rows
        return ArtifactRef(ref, f"{table.value}[{index}]", self._url(path), rows, TABLE_VERSIONS[table])

    def delete_parts(self, ref: RunRef, name: str) -> None:
        """Forget every part of a table (their inputs or params changed)."""
        folder = f"{self._run_dir(ref)}/parts/{table_name(name).value}"
        if self.fs.exists(folder):
            self.fs.rm(folder, recursive=True)

    def has_part(self, ref: RunRef, name: str, index: int) -> bool:
        return bool(self.fs.exists(self._part_path(ref, table_name(name), index)))

    # --- documents ---

    def write_json(self, ref: RunRef, name: str, obj: Any) -> str:
        """Write ``obj`` (JSON-able: dicts, lists, pydantic models, datetimes...) atomically."""
        _require_suffix(name, ".json")
        payload = json.dumps(to_jsonable_python(obj), ensure_ascii=False, indent=2).encode()
        return self.write_bytes(ref, name, payload)

    def read_json(self, ref: RunRef, name: str) -> Any:
        _require_suffix(name, ".json")
        return json.loads(self.read_bytes(ref, name))

    def write_bytes(self, ref: RunRef, name: str, data: bytes) -> str:
        """Write a non-table artifact (``breakdown.json``, ``screentime.csv``...) atomically."""
        if _file_name(name).endswith(".parquet"):
            raise ValueError(f"{name!r} is a table; write it with write_table so it is validated")
        path = self._path(ref, name)

        def write(sink: Sink) -> None:
            if isinstance(sink, str):
                Path(sink).write_bytes(data)
            else:
                sink.write(data)

        self._write_atomic(path, write)
        return self._url(path)

    def read_bytes(self, ref: RunRef, name: str) -> bytes:
        return bytes(self.fs.cat_file(self._path(ref, name)))

    # --- runs ---

    def exists(self, ref: RunRef, artifact: str | None = None) -> bool:
        """Whether the run's directory (or one of its artifacts) exists."""
        path = self._run_dir(ref) if artifact is None else self._path(ref, artifact)
        return bool(self.fs.exists(path))

    def list_runs(self, tenant: str | None = None, event: str | None = None) -> list[RunRef]:
        """Every run directory under the root (optionally one tenant's, one event's), sorted."""
        for value in (tenant, event):
            if value is not None and not _SEGMENT.fullmatch(value):
                raise ValueError(f"list_runs: {value!r} is not a tenant or event id")
        pattern = f"{self._root}/tenant={tenant or '*'}/event={event or '*'}/run=*"
        found = self.fs.glob(pattern, detail=True)
        refs: list[RunRef] = []
        for path, info in found.items():
            match = _RUN_DIR.search(path)
            if info.get("type") != "directory" or match is None:
                continue
            with suppress(ValueError):
                refs.append(RunRef(*match.groups()))
        return sorted(refs, key=lambda r: (r.tenant, r.event_id, r.run_id))

    def delete_run(self, ref: RunRef) -> bool:
        """Remove a run's directory and everything in it (partial artifacts of a failed run).

        Returns whether there was anything to delete; deleting twice is fine.
        """
        path = self._run_dir(ref)
        if not self.fs.exists(path):
            return False
        self.fs.rm(path, recursive=True)
        return True

    def sweep_temp_files(self, ref: RunRef) -> int:
        """Delete temp files that interrupted writes left in a run's directory; how many.

        Call it when no write to the run is in progress (e.g. at the start of a retry).
        """
        run_dir = self._run_dir(ref)
        if not self.fs.exists(run_dir):
            return 0
        stale = [p for p in self.fs.ls(run_dir, detail=False) if _is_temp(posixpath.basename(p))]
        for path in stale:
            with suppress(FileNotFoundError):
                self.fs.rm_file(path)
        return len(stale)

    # --- manifest ---

    def read_manifest(self, ref: RunRef) -> Manifest:
        return Manifest.model_validate_json(self.read_bytes(ref, "manifest"))

    def write_manifest(self, ref: RunRef, manifest: Manifest) -> None:
        self.write_bytes(ref, "manifest", manifest.model_dump_json(indent=2).encode())

    def update_manifest(self, ref: RunRef, **changes: Any) -> Manifest:
        """Atomic read-modify-write of ``manifest.json`` (created on first use); the new manifest.

        ``params``, ``timings``, ``row_counts``, ``table_versions`` and ``stage_keys`` are merged key by key
        (``timings={"cluster": 3.2}`` adds one stage); other fields are replaced.
        ``updated_at`` is set to now.
        """
        unknown = sorted(set(changes) - set(Manifest.model_fields))
        fixed = sorted(set(changes) & _FIXED_FIELDS)
        if unknown or fixed:
            raise ValueError(f"update_manifest: unknown fields {unknown}, fixed fields {fixed}")
        try:
            current = self.read_manifest(ref)
        except FileNotFoundError:
            current = Manifest.for_run(ref)
        data = current.model_dump()
        for key, value in changes.items():
            data[key] = {**data[key], **value} if key in _MERGED_FIELDS and value is not None else value
        data["updated_at"] = _now()
        manifest = Manifest.model_validate(data)
        self.write_manifest(ref, manifest)
        return manifest

    # --- the one atomic write ---

    def _write_atomic(self, path: str, write: Callable[[Sink], None]) -> None:
        directory, filename = posixpath.split(path)
        temp = f"{directory}/.{filename}{_TEMP_MARK}{uuid.uuid4().hex}"
        if self._local:
            Path(directory).mkdir(parents=True, exist_ok=True)
            try:
                write(temp)
                _fsync_path(temp)
                Path(temp).replace(path)  # os.replace: atomic within one filesystem
            except BaseException:
                with suppress(OSError):
                    Path(temp).unlink()
                raise
            _fsync_path(directory)
            return

        self.fs.makedirs(directory, exist_ok=True)
        f = self.fs.open(temp, "wb")
        try:
            write(f)
            f.close()
            self.fs.mv(temp, path)
        except BaseException:
            _abandon(f)
            with suppress(Exception):
                self.fs.rm_file(temp)
            raise


def _file_name(artifact: str) -> str:
    value = str(artifact)
    if value in ARTIFACT_FILES:
        return ARTIFACT_FILES[value]
    if value in ARTIFACT_FILES.values():
        return value
    raise ValueError(f"unknown artifact {value!r}; known: {', '.join(ARTIFACT_FILES.values())}")


def _require_suffix(name: str, suffix: str) -> None:
    if not _file_name(name).endswith(suffix):
        raise ValueError(f"{name!r} is not a {suffix} artifact")


def _is_temp(filename: str) -> bool:
    return filename.startswith(".") and _TEMP_MARK in filename


def _fsync_path(path: str) -> None:
    """Flush a file's (or a directory's entries') data to disk, so a rename survives a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _abandon(f: Any) -> None:
    """Drop a partly written remote file without committing it (and without ``__del__`` doing so)."""
    discard = getattr(f, "discard", None)
    if callable(discard):
        with suppress(Exception):
            discard()
    with suppress(Exception):
        f.closed = True


__all__ = [
    "ARTIFACT_FILES",
    "ArtifactRef",
    "ArtifactStore",
    "Manifest",
    "RunRef",
    "code_version",
]
