"""The Prefect orchestrator's calls, checked against fakes and against Prefect's real signatures."""

from __future__ import annotations

import inspect
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from prefect.client.schemas.objects import StateType
from prefect.deployments import run_deployment

from api.orchestrator import PrefectOrchestrator, flow_run_name
from infra.settings import Settings
from storage.models import Event, EventKind, Run, RunMode


def _run(**kwargs: Any) -> Run:
    return Run(id="6a1f00000000000000000001", tenant_id="acme", event_id="6a1f00000000000000000002", **kwargs)


EVENT = Event(
    id="6a1f00000000000000000002",
    tenant_id="acme",
    kind=EventKind.game,
    sport="soccer",
    title="Derby: Home v Away",
)


def test_submit_creates_an_idempotent_named_tagged_flow_run_without_waiting(settings: Settings) -> None:
    calls: list[dict[str, Any]] = []

    @dataclass
    class FlowRun:
        id: uuid.UUID = field(default_factory=uuid.uuid4)

    def fake_run_deployment(**kwargs: Any) -> FlowRun:
        calls.append(kwargs)
        return FlowRun()

    orchestrator = PrefectOrchestrator(settings, run_deployment=fake_run_deployment, client_factory=object)
    run = _run(mode=RunMode.ai)
    flow_run_id = orchestrator.submit(run, EVENT)
    assert flow_run_id is not None and uuid.UUID(flow_run_id)
    assert calls == [
        {
            "name": settings.prefect.run_deployment,
            "parameters": {"run_id": run.id},
            "timeout": 0,
            "idempotency_key": run.id,
            "flow_run_name": f"derby-home-v-away-{run.id}",
            "tags": ["tenant:acme", "kind:game", "mode:ai"],
            "as_subflow": False,
        }
    ]
    assert set(calls[0]) <= set(inspect.signature(run_deployment).parameters)  # Prefect takes them all
    untitled = Event(id=EVENT.id, tenant_id="acme", kind=EventKind.game, sport="soccer", title="")
    assert flow_run_name(run, untitled) == f"{EVENT.id}-{run.id}"


@dataclass
class FakeClient:
    state: StateType | None
    set_states: list[tuple[str, bool]] = field(default_factory=list)

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def read_flow_run(self, flow_run_id: uuid.UUID) -> Any:
        @dataclass
        class State:
            type: StateType

        @dataclass
        class FlowRun:
            state: State | None

        return FlowRun(State(self.state) if self.state is not None else None)

    def set_flow_run_state(self, flow_run_id: uuid.UUID, state: Any, force: bool = False) -> None:
        self.set_states.append((state.type.value, force))


@pytest.mark.parametrize(
    ("state", "confirmed", "set_states"),
    [
        (StateType.SCHEDULED, True, [("CANCELLED", True)]),
        (StateType.PENDING, True, [("CANCELLED", True)]),
        (StateType.RUNNING, False, [("CANCELLING", False)]),
        (StateType.PAUSED, False, [("CANCELLING", False)]),
        (StateType.CRASHED, True, []),
        (StateType.COMPLETED, False, []),
    ],
)
def test_cancel_stops_a_waiting_flow_run_at_once_and_asks_a_running_one_to_cancel(
    settings: Settings, state: StateType, confirmed: bool, set_states: list[tuple[str, bool]]
) -> None:
    client = FakeClient(state)
    orchestrator = PrefectOrchestrator(
        settings, run_deployment=lambda **_: None, client_factory=lambda: client
    )
    assert orchestrator.cancel(_run(flow_run_id=str(uuid.uuid4()))) is confirmed
    assert client.set_states == set_states


def test_a_run_never_handed_over_is_cancelled_without_asking_prefect(settings: Settings) -> None:
    def no_client() -> Any:
        raise AssertionError("Prefect must not be called")

    orchestrator = PrefectOrchestrator(settings, run_deployment=lambda **_: None, client_factory=no_client)
    assert orchestrator.cancel(_run()) is True
