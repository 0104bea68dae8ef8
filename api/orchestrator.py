"""How the API hands a run to the analysis flow: one small interface, one Prefect implementation.

The API never analyses inside a request. Submitting a job creates the event and run rows (status
``queued``) and calls :meth:`Orchestrator.submit`; the flow, in another process, moves the run on by
writing through ``storage.repo.transition_run``. The app gets its orchestrator from a FastAPI
dependency (``api.deps.get_orchestrator``), so tests substitute a recording one.

:class:`PrefectOrchestrator` creates a flow run of ``settings.prefect.run_deployment`` with
``run_deployment(..., timeout=0)`` (returns at once), the run's id as Prefect's idempotency key (a
retried submit never starts two flows) and a readable flow-run name, through ``flows.submit`` (which
the nightly reprocessing flow shares). Prefect is imported lazily: the API starts, and answers reads,
without it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol
from uuid import UUID

from flows.submit import flow_run_name, flow_run_tags, submit_run
from infra.settings import Settings
from storage.models import Event, Run

__all__ = ["Orchestrator", "PrefectOrchestrator", "flow_run_name", "flow_run_tags"]

logger = logging.getLogger("filmroom.api.orchestrator")


class Orchestrator(Protocol):
    """Starts and stops the analysis of runs."""

    def submit(self, run: Run, event: Event) -> str | None:
        """Start the analysis of a committed, queued ``run``; the flow run's id if there is one.

        Must be idempotent per run: submitting the same run again never starts a second analysis.
        """
        ...

    def cancel(self, run: Run) -> bool:
        """Ask for ``run``'s analysis to stop. True when it is certain that it will never run
        (it had not started, or it already stopped); False when the flow will confirm later."""
        ...


class PrefectOrchestrator:
    """Flow runs of ``settings.prefect.run_deployment`` on the configured Prefect server.

    ``run_deployment`` and ``client_factory`` default to Prefect's own (tests pass fakes).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        run_deployment: Callable[..., Any] | None = None,
        client_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.settings = settings
        self._run_deployment = run_deployment
        self._client_factory = client_factory

    @property
    def api_url(self) -> str:
        prefect = self.settings.prefect
        return prefect.api_url or f"http://{prefect.server_host}:{prefect.server_port}/api"

    @contextmanager
    def _prefect(self) -> Iterator[None]:
        if self._run_deployment is not None and self._client_factory is not None:
            yield
            return
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: self.api_url}):
            yield

    def submit(self, run: Run, event: Event) -> str | None:
        with self._prefect():
            return submit_run(
                run,
                event,
                deployment=self.settings.prefect.run_deployment,
                run_deployment=self._run_deployment,
            )

    def cancel(self, run: Run) -> bool:
        if run.flow_run_id is None:
            return True
        with self._prefect():
            from prefect.client.schemas.objects import StateType
            from prefect.states import Cancelled, Cancelling

            factory = self._client_factory
            if factory is None:
                from prefect.client.orchestration import get_client

                def factory() -> Any:
                    return get_client(sync_client=True)

            with factory() as client:
                flow_run_id = UUID(run.flow_run_id)
                flow_run = client.read_flow_run(flow_run_id)
                state_type = flow_run.state.type if flow_run.state is not None else None
                if state_type in (None, StateType.SCHEDULED, StateType.PENDING):
                    # not on a worker yet: cancel outright, nothing needs to be told to stop
                    client.set_flow_run_state(
                        flow_run_id, Cancelled(message="cancelled by the client"), force=True
                    )
                    return True
                if state_type in (StateType.CANCELLED, StateType.FAILED, StateType.CRASHED):
                    return True
                if state_type == StateType.COMPLETED:
                    return False  # finished; the flow's own status write settles the run
                client.set_flow_run_state(flow_run_id, Cancelling(message="cancelled by the client"))
                logger.info("asked flow run %s of run %s to cancel", flow_run_id, run.id)
                return False
