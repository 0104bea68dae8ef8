"""Dask and Prefect connection helpers: where a run's tasks execute and which Prefect API is used."""

from __future__ import annotations

from typing import Any

from prefect_dask import DaskTaskRunner

from infra.settings import Settings, get_settings


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
            "dashboard_address": ":0",  # None still binds :8787 (and warns when it is taken)
        },
    }


class SettingsDaskTaskRunner(DaskTaskRunner):
    """A DaskTaskRunner that reads the settings when a flow run starts, not when its flow is defined.

    Prefect duplicates a flow's task runner for every flow run; the duplicate is built from the
    settings of that moment, so a flow decorated at import time still follows a Dask address set later
    (by ``filmroom up`` for its pieces, or by a test).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**(kwargs or dask_runner_kwargs(get_settings())))

    def duplicate(self) -> SettingsDaskTaskRunner:
        return type(self)(**dask_runner_kwargs(get_settings()))


def make_task_runner(settings: Settings | None = None) -> Any:
    """The task runner of the given settings; without any, one that follows the settings of each run."""
    if settings is None:
        return SettingsDaskTaskRunner()
    return DaskTaskRunner(**dask_runner_kwargs(settings))
