from __future__ import annotations

import pytest

from flows.dag import DAG, SPECS, Stage, progress_after, topological_order


def test_every_stage_is_declared_once_in_dependency_order() -> None:
    assert [s.stage for s in DAG] == list(Stage)
    assert topological_order() == list(Stage)
    assert set(SPECS) == set(Stage)


def test_the_dag_is_the_documented_pipeline() -> None:
    assert SPECS[Stage.detect_track].upstream == (Stage.ingest,)
    assert SPECS[Stage.detect_track].mapped and SPECS[Stage.embed].mapped
    assert SPECS[Stage.export].artifacts == ("breakdown",)


@pytest.mark.parametrize(("stage", "fraction"), [(Stage.ingest, 0.0), (Stage.export, 1.0)])
def test_progress_runs_from_zero_to_one(stage: Stage, fraction: float) -> None:
    assert progress_after(stage, fraction) == pytest.approx(0.0 if fraction == 0.0 else 1.0)


def test_progress_grows_stage_after_stage() -> None:
    values = [progress_after(s) for s in Stage]
    assert values == sorted(values)
