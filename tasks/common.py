"""What every stage's thin Prefect task shares: the retry rule and the store."""

from __future__ import annotations

from typing import Any

import polars as pl
import pyarrow as pa

from infra.errors import is_retryable
from storage.artifacts import ArtifactStore


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry infrastructure faults, never bad footage."""
    try:
        state.result()
    except BaseException as exc:
        return is_retryable(exc)
    return False


def store() -> ArtifactStore:
    """The artifact store as configured in this process (a Dask worker reads its own settings)."""
    return ArtifactStore.from_settings()


def as_frame(table: pa.Table) -> pl.DataFrame:
    """A stored Arrow table as a polars DataFrame (what the pure stage functions take)."""
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame
