"""The run's DAG, declared once, as data: each stage, what it waits for, what it writes.

One spelling per stage. The flow wires tasks in this order, progress is weighted by ``weight``, the
Prefect UI shows one task run per stage (per chunk for mapped stages), and the resume logic asks
which artifacts a stage must find to be skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Stage(StrEnum):
    ingest = "ingest"
    detect_track = "detect_track"
    stitch = "stitch"
    embed = "embed"
    cluster = "cluster"
    validate = "validate"
    screentime = "screentime"
    export = "export"


@dataclass(frozen=True)
class StageSpec:
    stage: Stage
    upstream: tuple[Stage, ...]
    artifacts: tuple[str, ...]  # what the stage writes (artifact names of storage.artifacts)
    mapped: bool = False  # one task run per chunk
    weight: float = 1.0  # share of a run's compute, for progress and ETA


DAG: tuple[StageSpec, ...] = (
    StageSpec(Stage.ingest, (), ("manifest",), weight=0.02),
    StageSpec(Stage.detect_track, (Stage.ingest,), ("detections[chunk]",), mapped=True, weight=0.85),
    StageSpec(Stage.stitch, (Stage.detect_track,), ("detections", "tracks"), weight=0.02),
    StageSpec(Stage.embed, (Stage.stitch,), ("embeddings[chunk]",), mapped=True, weight=0.06),
    StageSpec(Stage.cluster, (Stage.embed,), ("identities",), weight=0.01),
    StageSpec(Stage.validate, (Stage.cluster,), ("validation",), weight=0.01),
    StageSpec(Stage.screentime, (Stage.validate,), ("screentime", "screentime_csv"), weight=0.02),
    StageSpec(Stage.export, (Stage.screentime,), ("breakdown",), weight=0.01),
)

SPECS: dict[Stage, StageSpec] = {spec.stage: spec for spec in DAG}


def topological_order() -> list[Stage]:
    """The stages in an order that respects ``upstream`` (checked, so an edit cannot break it)."""
    done: list[Stage] = []
    pending = list(DAG)
    while pending:
        ready = [s for s in pending if all(u in done for u in s.upstream)]
        if not ready:
            raise ValueError(f"the DAG has a cycle among {[s.stage for s in pending]}")
        for spec in ready:
            done.append(spec.stage)
            pending.remove(spec)
    return done


def progress_after(stage: Stage, fraction_of_stage: float = 1.0) -> float:
    """Fraction of the whole run done once ``stage`` is ``fraction_of_stage`` complete."""
    total = sum(s.weight for s in DAG)
    before = 0.0
    for spec in DAG:
        if spec.stage == stage:
            return min(1.0, (before + spec.weight * fraction_of_stage) / total)
        before += spec.weight
    raise KeyError(stage)
