"""Dask and Prefect connection helpers: where a run's tasks execute and which Prefect API is used."""

from __future__ import annotations

from typing import Any

from infra.settings import Settings


def dask_runner_kwargs(settings: Settings) -> dict[str, Any]:
    """Arguments for ``prefect_dask.DaskTaskRunner``: an existing scheduler, or a LocalCluster.

    LocalCluster workers are processes with one thread each: the detector and the decoder each use
    one core, so two workers keep both cores of a laptop busy without oversubscription.
    """
    if settings.dask.address:
        return {"address": settings.dask.address}
    return {
        "cluster_class": "distributed.LocalCluster",
        "cluster_kwargs": {
            "n_workers": settings.dask.n_workers,
            "threads_per_worker": settings.dask.threads_per_worker,
            "processes": True,
            "dashboard_address": None,
        },
    }


def make_task_runner(settings: Settings) -> Any:
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(**dask_runner_kwargs(settings))
