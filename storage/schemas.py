"""The pinned Arrow schema of every Parquet artifact, and the one check that holds tables to it.

Six tables, one file each per run (``<root>/tenant=<t>/event=<id>/run=<id>/<name>.parquet``), and
one intermediate table that only exists as per-chunk parts (:data:`PART_ONLY_TABLES`,
``<run>/parts/<name>/part-NNNNN.parquet``):

========== =============================================================================
detections one row per detected person per analysed frame (before and after stitching)
tracks     one row per (global track, analysed frame): the tracked box
embeddings one row per embedded sample: an appearance vector or a face vector (+ face box)
identities one row per identity (player, referee, cast member, ...) with its tracks
screentime one row per identity: seconds on screen, first/last seen, share, intervals
validation one row per integrity check of the run
appearance (parts only) one row per detection of a game chunk: its appearance vector, computed
           by detect_track while the frame is decoded, so embed need not decode the video again
========== =============================================================================

Conventions every table follows:

* ``tenant``, ``event`` and ``run`` are **never stored in a file**: they are hive partition
  columns that readers take from the path. A table carrying them is rejected.
* Strings are ``string`` (32-bit offsets), lists are ``list`` (not ``large_list``): the smallest
  types polars, duckdb and pyarrow all read. Polars' ``large_string``/``string_view``,
  ``large_list`` and ``Categorical``/``Enum`` columns are cast on the way in.
* ``embeddings.vector`` is ``list<float32>`` (variable length), not ``fixed_size_list``: the
  appearance and face models produce vectors of different lengths (e.g. 512 and 128) and both
  live in one table. Polars reads it as ``List(Float32)`` (``.list.to_array(n)`` after filtering
  one ``kind`` gives an ``Array``), duckdb as ``FLOAT[]`` (``vector::FLOAT[128]`` for array
  functions such as ``array_cosine_similarity``).
* Nullability is part of the schema: the Parquet columns of non-nullable fields are REQUIRED,
  and :func:`validate_table` refuses nulls in them (also inside lists and structs).
* Boxes are ``x1, y1, x2, y2`` in pixels of the source video; times are seconds from the
  start of the event (``float64``); ``frame`` is the frame index in the angle's source video.
* The Parquet key-value metadata carries ``filmroom.schema_version``
  (:data:`ARTIFACT_SCHEMA_VERSION`, the version of the whole layout), ``filmroom.artifact``
  (the table name) and ``filmroom.artifact_version`` (that table's own version,
  :data:`TABLE_VERSIONS`). Change a table: bump its version; change the layout: bump both.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final, TypeAlias

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from infra.errors import SchemaMismatch

ARTIFACT_SCHEMA_VERSION: Final = 1
"""Version of the artifact layout as a whole (recorded in every file and in the manifest)."""

PARTITION_COLUMNS: Final = ("tenant", "event", "run")
"""Hive partition columns: they come from the path and must not be stored inside a file."""

META_SCHEMA_VERSION: Final = b"filmroom.schema_version"
META_ARTIFACT: Final = b"filmroom.artifact"
META_ARTIFACT_VERSION: Final = b"filmroom.artifact_version"

TableLike: TypeAlias = pa.Table | pa.RecordBatch | pl.DataFrame
"""What :func:`validate_table` accepts."""


class Table(StrEnum):
    """The name of each Parquet artifact (also its file stem)."""

    detections = "detections"
    tracks = "tracks"
    embeddings = "embeddings"
    identities = "identities"
    screentime = "screentime"
    validation = "validation"
    appearance = "appearance"


def _f(name: str, type_: pa.DataType, nullable: bool, doc: str) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"description": doc})


def _box(prefix: str = "", nullable: bool = False, what: str = "box") -> list[pa.Field]:
    return [
        _f(f"{prefix}x1", pa.float32(), nullable, f"{what} left edge, pixels"),
        _f(f"{prefix}y1", pa.float32(), nullable, f"{what} top edge, pixels"),
        _f(f"{prefix}x2", pa.float32(), nullable, f"{what} right edge, pixels"),
        _f(f"{prefix}y2", pa.float32(), nullable, f"{what} bottom edge, pixels"),
    ]


_ANGLE = _f("angle", pa.string(), False, "camera angle (source video) name")
_FRAME = _f("frame", pa.int32(), False, "frame index in the angle's source video")
_TIME = _f("time_s", pa.float64(), False, "seconds from the start of the event")
_CONF = _f("conf", pa.float32(), False, "detector confidence, 0..1")
_IDENTITY = _f("identity_id", pa.int64(), False, "identity id, unique within the run")
_LABEL = _f("label", pa.string(), True, "display name (player name, cast member); null if unknown")
_TEAM = _f("team", pa.string(), True, "team name or key; null if none")
_IDENTITY_KIND = _f("kind", pa.string(), False, "player | referee | cast | other")

_INTERVAL = pa.struct(
    [
        pa.field("start_s", pa.float64(), nullable=False),
        pa.field("end_s", pa.float64(), nullable=False),
    ]
)

_FIELDS: Final[dict[Table, list[pa.Field]]] = {
    Table.detections: [
        _ANGLE,
        _f("chunk", pa.int32(), False, "index of the detect_track chunk that produced the row"),
        _FRAME,
        _TIME,
        *_box(),
        _CONF,
        _f("cls", pa.int16(), False, "detector class id"),
        _f("track_id", pa.int64(), True, "global track id after stitching; null before"),
        _f(
            "local_track_id",
            pa.int32(),
            True,
            "tracker id within the chunk; null when the tracker kept no track for the detection",
        ),
    ],
    Table.tracks: [
        _ANGLE,
        _f("track_id", pa.int64(), False, "global track id, unique within the run"),
        _FRAME,
        _TIME,
        *_box(),
        _CONF,
    ],
    Table.embeddings: [
        _ANGLE,
        _f("track_id", pa.int64(), False, "global track id the sample belongs to"),
        _FRAME,
        _f("kind", pa.string(), False, "appearance | face"),
        _f(
            "vector",
            pa.list_(pa.field("item", pa.float32(), nullable=False)),
            False,
            "embedding; length depends on kind (one model per kind)",
        ),
        *_box("face_", nullable=True, what="face box (kind=face only)"),
    ],
    Table.identities: [
        _IDENTITY,
        _IDENTITY_KIND,
        _LABEL,
        _TEAM,
        _f(
            "track_ids",
            pa.list_(pa.field("item", pa.int64(), nullable=False)),
            False,
            "global track ids grouped into the identity",
        ),
        _f("confidence", pa.float32(), False, "clustering confidence, 0..1"),
        _f("corrected", pa.bool_(), False, "true when a human correction decided the identity"),
    ],
    Table.screentime: [
        _IDENTITY,
        _LABEL,
        _TEAM,
        _IDENTITY_KIND,
        _f("seconds_on_screen", pa.float64(), False, "total seconds visible (intervals merged)"),
        _f("first_seen_s", pa.float64(), True, "first time visible; null if never"),
        _f("last_seen_s", pa.float64(), True, "last time visible; null if never"),
        _f("share", pa.float64(), False, "seconds_on_screen / analysed duration, 0..1"),
        _f("intervals", pa.list_(pa.field("item", _INTERVAL, nullable=False)), False, "on-screen spans"),
        _f("preset", pa.string(), False, "screentime preset (parameter set) used"),
    ],
    Table.validation: [
        _f("check_name", pa.string(), False, "name of the integrity check"),
        _f("status", pa.string(), False, "pass | warn | fail"),
        _f("value", pa.float64(), False, "measured value"),
        _f("threshold", pa.float64(), True, "threshold the value was held to; null if none"),
        _f("message", pa.string(), False, "human-readable outcome"),
    ],
    Table.appearance: [
        _ANGLE,
        _FRAME,
        *_box(what="detection box (as in detections)"),
        _f(
            "vector",
            pa.list_(pa.field("item", pa.float32(), nullable=False)),
            False,
            "embed's appearance vector of the box; empty when the box is too small to embed",
        ),
    ],
}

PART_ONLY_TABLES: Final = frozenset({Table.appearance})
"""Intermediate tables written only as per-chunk parts, never as a run's file (not in the run's listings)."""

TABLE_VERSIONS: Final[Mapping[Table, int]] = {t: 1 for t in Table}
"""Each table's own schema version (bump one when its columns change)."""

ALLOWED_VALUES: Final[Mapping[Table, Mapping[str, frozenset[str]]]] = {
    Table.embeddings: {"kind": frozenset({"appearance", "face"})},
    Table.identities: {"kind": frozenset({"player", "referee", "cast", "other"})},
    Table.screentime: {"kind": frozenset({"player", "referee", "cast", "other"})},
    Table.validation: {"status": frozenset({"pass", "warn", "fail"})},
}
"""String columns that hold one of a closed set of values."""


def _metadata(table: Table) -> dict[bytes, bytes]:
    return {
        META_SCHEMA_VERSION: str(ARTIFACT_SCHEMA_VERSION).encode(),
        META_ARTIFACT: table.value.encode(),
        META_ARTIFACT_VERSION: str(TABLE_VERSIONS[table]).encode(),
    }


SCHEMAS: Final[Mapping[Table, pa.Schema]] = {
    t: pa.schema(fields, metadata=_metadata(t)) for t, fields in _FIELDS.items()
}
"""The pinned schema of each table, with its key-value metadata."""


def table_name(name: str) -> Table:
    """``name`` as a :class:`Table`, or :class:`SchemaMismatch` naming the known tables."""
    try:
        return Table(name)
    except ValueError:
        known = ", ".join(t.value for t in Table)
        raise SchemaMismatch(f"no artifact schema named {name!r}; known: {known}", artifact=name) from None


def schema_for(name: str) -> pa.Schema:
    """The pinned Arrow schema of ``name`` (with its metadata)."""
    return SCHEMAS[table_name(name)]


def empty_table(name: str) -> pa.Table:
    """A zero-row table with the pinned schema (what a stage writes when it found nothing)."""
    return schema_for(name).empty_table()


def polars_schema(name: str) -> pl.Schema:
    """The polars dtypes of ``name``'s columns, for stages that build frames column by column."""
    frame = pl.from_arrow(empty_table(name))
    assert isinstance(frame, pl.DataFrame)
    return frame.schema


# --- validation ------------------------------------------------------------------------------------

_INTS = frozenset({pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32()})
_INTS_WIDE = _INTS | {pa.uint64()}
_FLOATS = frozenset({pa.float16(), pa.float32(), pa.float64()})


def _is_list(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_list(t)
        or pa.types.is_large_list(t)
        or pa.types.is_fixed_size_list(t)
        or pa.types.is_list_view(t)
        or pa.types.is_large_list_view(t)
    )


def _is_string(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t))


def _castable(found: pa.DataType, expected: pa.DataType) -> bool:
    """Whether ``found`` belongs to ``expected``'s family, so a checked (safe) cast may convert it.

    Integers widen or narrow (the cast checks the range), floats change width, integers become
    floats (the cast checks exactness), string and list encodings convert; nothing crosses
    between text, numbers and booleans.
    """
    if found.equals(expected) or pa.types.is_null(found):
        return True
    if pa.types.is_dictionary(found):
        return _castable(found.value_type, expected)
    if pa.types.is_integer(expected):
        return found in _INTS_WIDE
    if pa.types.is_floating(expected):
        return found in _FLOATS or found in _INTS_WIDE
    if pa.types.is_string(expected):
        return _is_string(found)
    if pa.types.is_list(expected):
        return _is_list(found) and _castable(found.value_type, expected.value_type)
    if pa.types.is_struct(expected):
        if not pa.types.is_struct(found):
            return False
        names = [found.field(i).name for i in range(found.num_fields)]
        if names != [expected.field(i).name for i in range(expected.num_fields)]:
            return False
        return all(_castable(found.field(i).type, expected.field(i).type) for i in range(found.num_fields))
    return False


def _nested_nulls(array: pa.Array, type_: pa.DataType, path: str) -> list[str]:
    """Nulls inside lists and structs where the schema's child fields forbid them."""
    problems: list[str] = []
    if pa.types.is_list(type_):
        values = array.flatten()  # null list slots contribute nothing
        child = type_.value_field
        if not child.nullable and values.null_count:
            problems.append(f"column '{path}[]': {values.null_count} null item(s) but items are non-nullable")
        problems += _nested_nulls(values, child.type, f"{path}[]")
    elif pa.types.is_struct(type_):
        valid = array.filter(array.is_valid()) if array.null_count else array
        for i, values in enumerate(valid.flatten()):  # flatten() honours slicing offsets
            child = type_.field(i)
            if not child.nullable and values.null_count:
                problems.append(
                    f"column '{path}.{child.name}': {values.null_count} null(s) but it is non-nullable"
                )
            problems += _nested_nulls(values, child.type, f"{path}.{child.name}")
    return problems


def _relaxed(type_: pa.DataType) -> pa.DataType:
    """``type_`` with every nested field nullable."""
    if pa.types.is_list(type_):
        child = type_.value_field
        return pa.list_(pa.field(child.name, _relaxed(child.type), nullable=True))
    if pa.types.is_struct(type_):
        fields = [type_.field(i) for i in range(type_.num_fields)]
        return pa.struct([pa.field(f.name, _relaxed(f.type), nullable=True) for f in fields])
    return type_


def _has_nested_non_null(type_: pa.DataType) -> bool:
    if pa.types.is_list(type_):
        child = type_.value_field
        return not child.nullable or _has_nested_non_null(child.type)
    if pa.types.is_struct(type_):
        return any(
            not type_.field(i).nullable or _has_nested_non_null(type_.field(i).type)
            for i in range(type_.num_fields)
        )
    return False


def _to_arrow(table: object, artifact: str) -> pa.Table:
    if isinstance(table, pa.Table):
        return table
    if isinstance(table, pa.RecordBatch):
        return pa.Table.from_batches([table])
    if isinstance(table, pl.DataFrame):
        return table.to_arrow()
    raise SchemaMismatch(
        f"{artifact}: expected a pyarrow Table/RecordBatch or a polars DataFrame, "
        f"found {type(table).__name__}",
        artifact=artifact,
    )


def _convert_column(
    artifact: Table, field: pa.Field, column: pa.ChunkedArray, problems: list[str]
) -> pa.ChunkedArray | None:
    """``column`` cast to ``field``'s type and checked for nulls and allowed values; None on failure."""
    name, expected, found = field.name, field.type, column.type
    if not _castable(found, expected):
        problems.append(f"column {name!r}: expected {expected}, found {found} (no safe cast)")
        return None
    # Cast to the type with every nested field nullable first: arrow's casts check nested nulls
    # only sometimes (struct children yes, list items no), so they are counted here instead.
    relaxed = _relaxed(expected)
    if not found.equals(expected) and not found.equals(relaxed):
        try:
            cast = column.cast(relaxed, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            problems.append(f"column {name!r}: expected {expected}, found {found}; values do not fit: {exc}")
            return None
        if pa.types.is_floating(expected):  # float64 -> float32 turns big values into inf silently
            lost = _count_inf(cast) - _count_inf(column)
            if lost > 0:
                problems.append(
                    f"column {name!r}: expected {expected}, found {found}; {lost} value(s) overflow it"
                )
                return None
        column = cast
    if not field.nullable and column.null_count:
        problems.append(f"column {name!r}: {column.null_count} null(s) but the column is non-nullable")
        return None
    if _has_nested_non_null(expected):
        nested = [p for chunk in column.chunks for p in _nested_nulls(chunk, expected, name)]
        if nested:
            problems.extend(dict.fromkeys(nested))  # one line per path, even over many chunks
            return None
    if not column.type.equals(expected):
        column = column.cast(expected)  # only nested nullability changes; nulls were counted above
    allowed = ALLOWED_VALUES.get(artifact, {}).get(name)
    if allowed is not None:
        bad = pc.unique(column.filter(pc.invert(pc.is_in(column, pa.array(sorted(allowed)))))).to_pylist()
        bad = [v for v in bad if v is not None]
        if bad:
            problems.append(f"column {name!r}: values {sorted(bad)[:5]} not in {sorted(allowed)}")
            return None
    return column


def _count_inf(column: pa.ChunkedArray) -> int:
    if not pa.types.is_floating(column.type):
        return 0
    return int(pc.sum(pc.is_inf(column)).as_py() or 0)


def validate_table(name: str, table: TableLike) -> pa.Table:
    """``table`` held to the pinned schema of artifact ``name``: the table to write (or hand on).

    Accepts a pyarrow Table/RecordBatch or a polars DataFrame. Safe differences are fixed:
    column order, integer width when every value fits, float width when no value overflows,
    string/list encodings (``large_string``, ``string_view``, ``large_list``,
    ``fixed_size_list``, dictionaries), all-null columns of nullable fields. Everything else
    raises :class:`SchemaMismatch` listing every problem (artifact, column, expected vs found):
    missing or extra columns (the hive columns tenant/event/run included), types that cannot
    be cast safely, nulls in non-nullable columns (also inside lists/structs), values outside
    a closed set (``kind``, ``status``). The result carries the schema's key-value metadata.
    """
    artifact = table_name(name)
    schema = SCHEMAS[artifact]
    data = _to_arrow(table, artifact.value)
    problems: list[str] = []

    present = set(data.column_names)
    duplicated = sorted({c for c in data.column_names if data.column_names.count(c) > 1})
    if duplicated:
        problems.append(f"duplicated columns {duplicated}")
    missing = [f.name for f in schema if f.name not in present]
    if missing:
        problems.append(f"missing columns {missing}")
    hive = [c for c in data.column_names if c in PARTITION_COLUMNS]
    if hive:
        problems.append(
            f"hive partition columns {hive} must not be stored in the file (readers take them from the path)"
        )
    extra = [c for c in data.column_names if c not in schema.names and c not in PARTITION_COLUMNS]
    if extra:
        problems.append(f"unexpected columns {extra}")

    columns: list[pa.ChunkedArray] = []
    if not duplicated:
        for field in schema:
            if field.name in present:
                converted = _convert_column(artifact, field, data.column(field.name), problems)
                if converted is not None:
                    columns.append(converted)

    if problems:
        version = TABLE_VERSIONS[artifact]
        raise SchemaMismatch(
            f"{artifact.value} (schema v{version}) does not match: " + "; ".join(problems),
            artifact=artifact.value,
            problems=problems,
        )
    return pa.Table.from_arrays(columns, schema=schema)


def check_metadata(name: str, metadata: Mapping[bytes, bytes] | None) -> None:
    """Refuse a file whose metadata names another artifact or a newer table version.

    Files without filmroom metadata (written by other tools) pass; their columns are still
    checked by :func:`validate_table`. Older versions pass if their columns still validate.
    """
    artifact = table_name(name)
    if not metadata:
        return
    stored = metadata.get(META_ARTIFACT)
    if stored is not None and stored.decode() != artifact.value:
        raise SchemaMismatch(
            f"{artifact.value}: the file holds the {stored.decode()!r} artifact", artifact=artifact.value
        )
    raw = metadata.get(META_ARTIFACT_VERSION)
    version = int(raw) if raw is not None and raw.isdigit() else None
    if version is not None and version > TABLE_VERSIONS[artifact]:
        raise SchemaMismatch(
            f"{artifact.value}: the file has schema v{version}, newer than this code's "
            f"v{TABLE_VERSIONS[artifact]}; upgrade filmroom to read it",
            artifact=artifact.value,
        )


__all__ = [
    "ALLOWED_VALUES",
    "ARTIFACT_SCHEMA_VERSION",
    "PARTITION_COLUMNS",
    "PART_ONLY_TABLES",
    "SCHEMAS",
    "TABLE_VERSIONS",
    "Table",
    "TableLike",
    "check_metadata",
    "empty_table",
    "polars_schema",
    "schema_for",
    "table_name",
    "validate_table",
]
