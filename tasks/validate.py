"""validate: the run's integrity report, and the content checks that refuse footage that is no game.

Integrity checks (rows of the ``validation`` table; ``fail`` means the artifacts contradict each other):

============================  =====================================================  ====================
check                         value                                                  status
============================  =====================================================  ====================
artifact_present:<table>      1 if the upstream table exists, else 0                 fail when 0
detections_reference_tracks   detections whose track_id is not in tracks             fail when > 0
embeddings_reference_tracks   embedding rows whose track_id is not in tracks         fail when > 0
identities_reference_tracks   identity members that are not in tracks                fail when > 0
tracks_in_one_identity        tracks listed by more than one identity                fail when > 0
tracks_inside_frame           track boxes outside their video (± ``box_tolerance``)  fail when > 0
tracks_inside_duration        track rows outside ``[0, duration]`` of their angle    fail when > 0
coverage                      analysed frames with ≥ 1 person / analysed frames      warn below 0.5
short_track_fraction          tracks shorter than ``short_track_s`` / tracks         warn above 0.5
identities_per_minute         identities / analysed minutes                          informational
============================  =====================================================  ====================

Content checks (games only), measured here and raised by :func:`raise_for_content`:

* ``pitch_fraction`` — median share of grass pixels in the lower 60 % of up to ``pitch_samples``
  frames per angle (a match camera looks down at the pitch; stands, boards and sky are at the top).
  Grass: hue 30-90 on OpenCV's 0-180 scale, saturation ≥ 90, value ≥ 50 — saturated enough that
  olive studio walls and grey floors do not count. Measured: synthetic match clips 0.95-0.98 at
  every camera setting, synthetic episodes (random studio colours) 0.00-0.14. Under **0.35** the
  video shows no field: :class:`~infra.errors.WrongVideo`.
* ``persons_per_frame`` — tracked people per analysed frame, averaged over every analysed frame
  (empty frames count as 0). A main camera sees 8-20 players and the tight rig 3-8; an empty
  pitch, a warm-up with two people or a talking head averages under one. Under **2.0** there is no
  game to analyse: :class:`~infra.errors.NotAGame`. The field is checked first, so footage with
  neither gets ``wrong_video``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import av
import cv2
import numpy as np
import polars as pl
from prefect import task
from pydantic import BaseModel, ConfigDict, Field

from infra.errors import NotAGame, WrongVideo
from storage.artifacts import ArtifactStore, Manifest, RunRef
from storage.schemas import polars_schema, validate_table
from tasks.common import retry_transient, store

Status = Literal["pass", "warn", "fail"]


class VideoInfo(BaseModel):
    """What validate, screentime and export need to know about one angle (from ingest's VideoProbe)."""

    model_config = ConfigDict(frozen=True)

    angle: str
    width: int
    height: int
    fps: float
    duration_s: float
    uri: str | None = None
    offset_s: float = 0.0

    @property
    def end_s(self) -> float:
        return self.offset_s + self.duration_s


class ValidateParams(BaseModel):
    """Thresholds of the integrity report and of the content checks (see the module docstring)."""

    model_config = ConfigDict(frozen=True)

    analysis_fps: float = Field(default=5.0, gt=0, description="Rate at which detect_track sampled frames.")
    box_tolerance_px: float = Field(default=2.0, ge=0, description="Slack for boxes at the frame edge.")
    short_track_s: float = Field(default=1.0, ge=0, description="Tracks shorter than this are 'short'.")
    short_track_warn: float = Field(default=0.5, ge=0, le=1, description="Warn above this short fraction.")
    coverage_warn: float = Field(default=0.5, ge=0, le=1, description="Warn below this coverage.")
    min_pitch_fraction: float = Field(default=0.35, ge=0, le=1, description="wrong_video below this.")
    min_persons_per_frame: float = Field(default=2.0, ge=0, description="not_a_game below this.")
    pitch_samples: int = Field(default=12, ge=1, description="Frames per angle sampled for the pitch check.")


@dataclass(frozen=True)
class ValidationReport:
    table: pl.DataFrame  # the pinned ``validation`` schema
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.summary.get("ok", False))


@dataclass
class _Rows:
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, name: str, status: Status, value: float, threshold: float | None, message: str) -> None:
        self.rows.append(
            {
                "check_name": name,
                "status": status,
                "value": float(value),
                "threshold": threshold,
                "message": message,
            }
        )

    def count(self, name: str, bad: int, what: str) -> None:
        self.add(name, "fail" if bad else "pass", bad, 0.0, f"{bad} {what}" if bad else f"no {what}")


def analysed_frames(videos: Sequence[VideoInfo], analysis_fps: float) -> int:
    """How many frames detect_track sampled over every angle (every ``stride``-th frame)."""
    total = 0
    for video in videos:
        stride = max(1, round(video.fps / analysis_fps))
        frames = max(1, round(video.duration_s * video.fps))
        total += -(-frames // stride)
    return total


def _outside_frame(tracks: pl.DataFrame, videos: Sequence[VideoInfo], tol: float) -> int:
    sizes = pl.DataFrame(
        {
            "angle": [v.angle for v in videos],
            "_w": [v.width for v in videos],
            "_h": [v.height for v in videos],
        },
        schema={"angle": pl.Utf8, "_w": pl.Float64, "_h": pl.Float64},
    )
    joined = tracks.join(sizes, on="angle", how="left")
    bad = joined.filter(
        pl.col("_w").is_null()
        | (pl.col("x1") < -tol)
        | (pl.col("y1") < -tol)
        | (pl.col("x2") > pl.col("_w") + tol)
        | (pl.col("y2") > pl.col("_h") + tol)
        | (pl.col("x2") <= pl.col("x1"))
        | (pl.col("y2") <= pl.col("y1"))
    )
    return bad.height


def _outside_duration(tracks: pl.DataFrame, videos: Sequence[VideoInfo]) -> int:
    ends = pl.DataFrame(
        {
            "angle": [v.angle for v in videos],
            "_lo": [v.offset_s - 0.5 / v.fps for v in videos],
            "_hi": [v.end_s + 0.5 / v.fps for v in videos],
        },
        schema={"angle": pl.Utf8, "_lo": pl.Float64, "_hi": pl.Float64},
    )
    joined = tracks.join(ends, on="angle", how="left")
    return joined.filter(
        pl.col("_lo").is_null() | (pl.col("time_s") < pl.col("_lo")) | (pl.col("time_s") > pl.col("_hi"))
    ).height


def _unknown_tracks(table: pl.DataFrame, known: pl.Series) -> int:
    ids = table["track_id"].drop_nulls()
    return int((~ids.is_in(known.implode())).sum()) if ids.len() else 0


def integrity_rows(
    *,
    detections: pl.DataFrame | None,
    tracks: pl.DataFrame | None,
    embeddings: pl.DataFrame | None,
    identities: pl.DataFrame | None,
    videos: Sequence[VideoInfo],
    params: ValidateParams,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The integrity checks as validation rows, and the figures for the summary."""
    out = _Rows()
    tables = {"detections": detections, "tracks": tracks, "embeddings": embeddings, "identities": identities}
    for name, table in tables.items():
        present = table is not None
        out.add(
            f"artifact_present:{name}",
            "pass" if present else "fail",
            float(present),
            1.0,
            f"{name} present" if present else f"{name} is missing",
        )
    figures: dict[str, Any] = {}
    if tracks is None:
        return out.rows, figures
    known = tracks["track_id"].unique()
    if detections is not None:
        out.count(
            "detections_reference_tracks",
            _unknown_tracks(detections, known),
            "detections point at missing tracks",
        )
    if embeddings is not None:
        out.count(
            "embeddings_reference_tracks",
            _unknown_tracks(embeddings, known),
            "embeddings point at missing tracks",
        )
    if identities is not None:
        members = identities.select(pl.col("track_ids").explode().alias("track_id")).drop_nulls()
        out.count(
            "identities_reference_tracks", _unknown_tracks(members, known), "identity members are not tracks"
        )
        shared = int((members["track_id"].value_counts().filter(pl.col("count") > 1)).height)
        out.count("tracks_in_one_identity", shared, "tracks belong to more than one identity")
    out.count(
        "tracks_inside_frame",
        _outside_frame(tracks, videos, params.box_tolerance_px),
        "track boxes outside the video frame",
    )
    out.count(
        "tracks_inside_duration", _outside_duration(tracks, videos), "track rows outside the video duration"
    )

    n_frames = analysed_frames(videos, params.analysis_fps) if videos else 0
    with_person = tracks.select("angle", "frame").unique().height
    coverage = with_person / n_frames if n_frames else 0.0
    out.add(
        "coverage",
        "pass" if coverage >= params.coverage_warn else "warn",
        coverage,
        params.coverage_warn,
        f"{with_person} of {n_frames} analysed frames show at least one person",
    )
    spans = tracks.group_by("track_id").agg((pl.col("time_s").max() - pl.col("time_s").min()).alias("span"))
    short = int((spans["span"] < params.short_track_s).sum()) if spans.height else 0
    short_fraction = short / spans.height if spans.height else 0.0
    out.add(
        "short_track_fraction",
        "pass" if short_fraction <= params.short_track_warn else "warn",
        short_fraction,
        params.short_track_warn,
        f"{short} of {spans.height} tracks last under {params.short_track_s:g} s",
    )
    minutes = max((v.duration_s for v in videos), default=0.0) / 60
    n_identities = identities.height if identities is not None else 0
    per_minute = n_identities / minutes if minutes > 0 else 0.0
    out.add(
        "identities_per_minute", "pass", per_minute, None, f"{n_identities} identities over {minutes:.2f} min"
    )
    persons = tracks.height / n_frames if n_frames else 0.0
    figures.update(
        analysed_frames=n_frames,
        coverage=coverage,
        short_track_fraction=short_fraction,
        identities=n_identities,
        identities_per_minute=per_minute,
        tracks=spans.height,
        persons_per_frame=persons,
    )
    return out.rows, figures


def content_rows(
    *, persons_per_frame: float, pitch_fractions: Sequence[float], params: ValidateParams
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The game content checks (pitch visible, players present) as validation rows."""
    out = _Rows()
    pitch = float(np.median(pitch_fractions)) if len(pitch_fractions) else 0.0
    ok_pitch = pitch >= params.min_pitch_fraction
    out.add(
        "pitch_fraction",
        "pass" if ok_pitch else "fail",
        pitch,
        params.min_pitch_fraction,
        f"median {pitch:.0%} of sampled pixels are pitch green" + ("" if ok_pitch else ": no field in view"),
    )
    ok_persons = persons_per_frame >= params.min_persons_per_frame
    out.add(
        "persons_per_frame",
        "pass" if ok_persons else "fail",
        persons_per_frame,
        params.min_persons_per_frame,
        f"{persons_per_frame:.1f} people per analysed frame on average" + ("" if ok_persons else ": no game"),
    )
    return out.rows, {"pitch_fraction": pitch, "persons_per_frame": persons_per_frame}


def validate_run(
    *,
    detections: pl.DataFrame | None,
    tracks: pl.DataFrame | None,
    embeddings: pl.DataFrame | None,
    identities: pl.DataFrame | None,
    videos: Sequence[VideoInfo],
    params: ValidateParams | None = None,
    pitch_fractions: Sequence[float] | None = None,
) -> ValidationReport:
    """The integrity report (pure). Pass ``pitch_fractions`` for games: that adds the content checks."""
    p = params or ValidateParams()
    rows, figures = integrity_rows(
        detections=detections,
        tracks=tracks,
        embeddings=embeddings,
        identities=identities,
        videos=videos,
        params=p,
    )
    if pitch_fractions is not None:
        more, content = content_rows(
            persons_per_frame=float(figures.get("persons_per_frame", 0.0)),
            pitch_fractions=pitch_fractions,
            params=p,
        )
        rows += more
        figures.update(content)
    table = pl.DataFrame(rows, schema=polars_schema("validation"))
    validate_table("validation", table)
    failed = [r["check_name"] for r in rows if r["status"] == "fail"]
    summary = {
        "ok": not failed,
        "checks": len(rows),
        "failed": failed,
        "warnings": [r["check_name"] for r in rows if r["status"] == "warn"],
        **figures,
    }
    return ValidationReport(table=table, summary=summary)


def raise_for_content(report: ValidationReport) -> None:
    """Raise ``wrong_video`` (no field) or ``not_a_game`` (too few players) when those checks failed."""
    status: Mapping[str, Any] = {r["check_name"]: r for r in report.table.iter_rows(named=True)}
    pitch, persons = status.get("pitch_fraction"), status.get("persons_per_frame")
    if pitch is not None and pitch["status"] == "fail":
        raise WrongVideo(pitch["message"], pitch_fraction=pitch["value"], threshold=pitch["threshold"])
    if persons is not None and persons["status"] == "fail":
        raise NotAGame(persons["message"], persons_per_frame=persons["value"], threshold=persons["threshold"])


# --- the one piece that reads footage ----------------------------------------------------------------


PITCH_HUE: Final = (30, 90)
PITCH_MIN_SATURATION: Final = 90
PITCH_MIN_VALUE: Final = 50
PITCH_TOP: Final = 0.4  # the pitch is measured below this fraction of the frame height


def pitch_fraction(image_bgr: np.ndarray) -> float:
    """Share of grass pixels in the lower part of a BGR frame (see the module docstring)."""
    lower = image_bgr[int(PITCH_TOP * image_bgr.shape[0]) :]
    if lower.size == 0:
        return 0.0
    hsv = cv2.cvtColor(lower, cv2.COLOR_BGR2HSV)
    h, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    grass = (
        (h >= PITCH_HUE[0]) & (h <= PITCH_HUE[1]) & (sat >= PITCH_MIN_SATURATION) & (val >= PITCH_MIN_VALUE)
    )
    return float(grass.mean())


def sample_pitch_fractions(path: str, samples: int, width: int = 320) -> list[float]:
    """Pitch fraction of up to ``samples`` keyframes spread over the video (a cheap decode)."""
    return [pitch_fraction(image) for image in _spread_keyframes(path, samples, width)]


def _spread_keyframes(path: str, samples: int, width: int) -> Iterator[np.ndarray]:
    """The keyframe at or before each of ``samples`` evenly spread times, each once.

    Only keyframes are decoded (``skip_frame = NONKEY``), so this costs a few milliseconds per sample
    however long the video; a short clip with few keyframes gives fewer, distinct samples.
    """
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.skip_frame = "NONKEY"
        tb = float(stream.time_base or 0)
        duration = float(stream.duration * tb) if stream.duration else (container.duration or 0) / 1e6
        origin = float(stream.start_time * tb) if stream.start_time is not None else 0.0
        height = max(2, round(stream.codec_context.height * width / stream.codec_context.width / 2) * 2)
        seen: set[int] = set()
        for k in range(samples):
            if tb:
                target = origin + duration * (k + 0.5) / samples
                container.seek(int(target / tb), stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.pts is not None and frame.pts not in seen:
                    seen.add(frame.pts)
                    yield frame.reformat(width=width, height=height, format="bgr24").to_ndarray()
                break


# --- the stage -------------------------------------------------------------------------------------


def videos_from_manifest(entries: Sequence[Mapping[str, Any]]) -> list[VideoInfo]:
    """What ingest recorded (``VideoProbe`` dumps in the manifest) as :class:`VideoInfo`."""
    return [
        VideoInfo(
            angle=str(e["angle"]),
            width=int(e["width"]),
            height=int(e["height"]),
            fps=float(e["fps"]),
            duration_s=float(e["duration_s"]),
            uri=e.get("uri"),
            offset_s=float(e.get("offset_s", 0.0) or 0.0),
        )
        for e in entries
    ]


def _optional(artifacts: ArtifactStore, ref: RunRef, name: str) -> pl.DataFrame | None:
    try:
        frame = pl.from_arrow(artifacts.read_table(ref, name))
    except FileNotFoundError:
        return None
    assert isinstance(frame, pl.DataFrame)
    return frame


def record_summary(artifacts: ArtifactStore, ref: RunRef, summary: Mapping[str, Any]) -> None:
    """Put the validation summary into ``manifest.json`` (key ``validation``)."""
    manifest = artifacts.read_manifest(ref)
    data = manifest.model_dump()
    data["validation"] = dict(summary)
    artifacts.write_manifest(ref, Manifest.model_validate(data))


@task(name="validate", retries=2, retry_delay_seconds=1, retry_condition_fn=retry_transient)
def validate_task(ref: RunRef, event_kind: str, params: ValidateParams) -> dict[str, Any]:
    """The run's artifacts → validation.parquet + manifest summary; raises wrong_video/not_a_game."""
    artifacts = store()
    entries = artifacts.read_manifest(ref).videos
    videos = videos_from_manifest(entries)
    pitch = None
    if event_kind == "game":
        pitch = [f for e in entries for f in sample_pitch_fractions(str(e["path"]), params.pitch_samples)]
    report = validate_run(
        detections=_optional(artifacts, ref, "detections"),
        tracks=_optional(artifacts, ref, "tracks"),
        embeddings=_optional(artifacts, ref, "embeddings"),
        identities=_optional(artifacts, ref, "identities"),
        videos=videos,
        params=params,
        pitch_fractions=pitch,
    )
    artifacts.write_table(ref, "validation", report.table)
    record_summary(artifacts, ref, report.summary)
    raise_for_content(report)
    return report.summary
