"""Chunks of one run on a Dask cluster, without Prefect: used by the benchmark and the offline demo.

The Prefect flow (``flows/``) submits the same worker function through ``DaskTaskRunner``; this runner
is the bare version, so the benchmark can tell Dask's cost apart from Prefect's.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import polars as pl

from tasks.detect_track import ChunkStats, DetectParams, detect_track_appearance, warm_worker
from tasks.ingest import Chunk
from tasks.stitch import stitch


class LocalRunner:
    """A Dask LocalCluster (or an existing scheduler) whose workers keep the detector loaded."""

    def __init__(self, *, params: DetectParams, n_workers: int = 2, address: str | None = None) -> None:
        self.params = params
        self.n_workers = n_workers
        self.address = address
        self._cluster: Any = None
        self._client: Any = None
        self.stats: list[ChunkStats] = []

    def __enter__(self) -> LocalRunner:
        from dask.distributed import Client, LocalCluster

        if self.address:
            self._client = Client(self.address)
        else:
            self._cluster = LocalCluster(
                n_workers=self.n_workers, threads_per_worker=1, processes=True, dashboard_address=None
            )
            self._client = Client(self._cluster)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()

    def warm_up(self) -> None:
        """Load the model (and the rest of :func:`warm_worker`) in every worker now, so the first
        chunks do not pay for it."""
        self._client.run(warm_worker, self.params)

    def detect_track(self, chunks: list[Chunk]) -> pl.DataFrame:
        """Every chunk on the cluster (longest first, to balance the workers), then stitched.

        As a run's detect_track task does, each chunk also yields its appearance vectors, and stitch
        uses their kit colours to link a player's fragments.
        """
        order = sorted(range(len(chunks)), key=lambda i: chunks[i].start_s - chunks[i].decode_end_s)
        futures = {
            i: self._client.submit(detect_track_appearance, chunks[i], self.params, pure=False) for i in order
        }
        ordered = [futures[i].result() for i in range(len(chunks))]
        self.stats = [r[2] for r in ordered]
        return stitch(chunks, [r[0] for r in ordered], [r[1] for r in ordered])
