"""The Jobs API's logic, shared by its router and the webhook dispatcher (which renders job documents).

Status mapping (ARCHITECTURE.md, "Statuses"): a run's status is the system of record; the jobs view is
derived from it — queued → queued; processing, completed (export running) → processing; file_ready →
completed; failed, file_failed → failed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import sqlalchemy as sa
from pydantic import ValidationError
from sqlmodel import Session, col, func, select

from api.jobs.schemas import (
    BreakdownJob,
    Delivery,
    DeliveryAttempt,
    JobCreate,
    JobCreated,
    JobError,
    JobResults,
    JobStatus,
    JobStatusValue,
    JobSummary,
    ScreentimeJob,
    ScreenTimeSummary,
    VideoInput,
)
from api.orchestrator import Orchestrator
from api.webhooks.urls import Resolver, check_callback_url
from infra.errors import Conflict, NotFound, TechnicalIssues, VideoInvalidUrl
from infra.settings import Settings
from storage import repo
from storage.artifacts import ARTIFACT_FILES, ArtifactStore, RunRef
from storage.models import (
    DeliveryStatus,
    Event,
    EventKind,
    JobType,
    Run,
    RunStatus,
    WebhookDelivery,
    WebhookDeliveryAttempt,
    WebhookSubscription,
    utc_now,
)

logger = logging.getLogger("filmroom.api.jobs")

S = RunStatus
JOB_STATUS: Mapping[RunStatus, JobStatusValue] = {
    S.queued: "queued",
    S.processing: "processing",
    S.completed: "processing",
    S.file_ready: "completed",
    S.failed: "failed",
    S.file_failed: "failed",
}
RUN_STATUSES: Mapping[JobStatusValue, tuple[RunStatus, ...]] = {
    "queued": (S.queued,),
    "processing": (S.processing, S.completed),
    "completed": (S.file_ready,),
    "failed": (S.failed, S.file_failed),
}
ACTIVE = (S.queued, S.processing, S.completed)
# pipeline codes shown under the jobs contract's own name
JOB_ERROR_CODES: Mapping[str, str] = {"export_failed": "processing_failed"}
SCREENTIME_SPORT = "broadcast"


# --- the job document ------------------------------------------------------------------------------


def _parse_time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


@dataclass(frozen=True)
class RunView:
    """What a job document is rendered from: a run row, or an outbox snapshot of one."""

    run_id: str
    job_id: str
    tenant_id: str
    event_id: str
    job_type: JobType
    status: RunStatus
    errors: list[dict[str, Any]]
    created_at: datetime
    updated_at: datetime
    estimated_completion: datetime | None
    finished_at: datetime | None

    @classmethod
    def of_run(cls, run: Run) -> RunView:
        return cls(
            run_id=run.id,
            job_id=run.job_id,
            tenant_id=run.tenant_id,
            event_id=run.event_id,
            job_type=JobType(run.job_type),
            status=RunStatus(run.status),
            errors=list(run.errors),
            created_at=run.created_at,
            updated_at=run.updated_at,
            estimated_completion=run.estimated_completion,
            finished_at=run.finished_at,
        )

    @classmethod
    def of_snapshot(cls, snapshot: Mapping[str, Any]) -> RunView:
        """From ``storage.repo.run_snapshot`` (a delivery's payload): the run as of the change."""
        status = RunStatus(snapshot["status"])
        updated = _parse_time(snapshot["updated_at"])
        created = _parse_time(snapshot["created_at"])
        assert updated is not None and created is not None
        return cls(
            run_id=snapshot["run_id"],
            job_id=snapshot["job_id"],
            tenant_id=snapshot["tenant_id"],
            event_id=snapshot["event_id"],
            job_type=JobType(snapshot["job_type"]),
            status=status,
            errors=list(snapshot.get("errors") or []),
            created_at=created,
            updated_at=updated,
            estimated_completion=_parse_time(snapshot.get("estimated_completion")),
            finished_at=updated if status in repo.FINISHED else None,
        )

    @property
    def ref(self) -> RunRef:
        return RunRef(self.tenant_id, self.event_id, self.run_id)


def job_status_of(status: RunStatus) -> JobStatusValue:
    return JOB_STATUS[status]


def job_errors(view: RunView) -> list[JobError] | None:
    """The run's errors in the contract's shape; a failed run always names at least one."""
    errors = [
        JobError(
            code=JOB_ERROR_CODES.get(str(entry.get("code")), str(entry.get("code", "other"))),
            timestamp=_parse_time(entry.get("timestamp")) or view.updated_at,
            details=str(entry.get("message") or ""),
        )
        for entry in view.errors
    ]
    if not errors and job_status_of(view.status) == "failed":
        errors = [
            JobError(
                code="processing_failed", timestamp=view.updated_at, details="Internal processing error."
            )
        ]
    return errors or None


def estimated_completion_of(view: RunView, settings: Settings) -> datetime:
    """When the job finished, else the stored estimate, else created_at + the default run time."""
    if view.finished_at is not None:
        return view.finished_at
    if view.estimated_completion is not None:
        return view.estimated_completion
    return view.created_at + timedelta(seconds=settings.api.eta_default_run_s)


def job_summary(view: RunView, settings: Settings) -> JobSummary:
    return JobSummary(
        job_id=view.job_id,
        job_type=view.job_type.value,
        status=job_status_of(view.status),
        created_at=view.created_at,
        updated_at=view.updated_at,
        estimated_completion=estimated_completion_of(view, settings),
    )


def job_document(view: RunView, settings: Settings, store: ArtifactStore) -> JobStatus:
    """The ``GET /v1/jobs/{job_id}`` document (and the body of a job webhook, less its timestamp)."""
    completed = job_status_of(view.status) == "completed"
    return JobStatus(
        **job_summary(view, settings).model_dump(),
        errors=job_errors(view),
        results=read_results(view, settings, store) if completed else None,
    )


# --- results ---------------------------------------------------------------------------------------


def artifact_url(settings: Settings, job_id: str, file_name: str) -> str:
    return f"{settings.api.public_url.rstrip('/')}/v1/jobs/{job_id}/artifacts/{file_name}"


def present_artifacts(store: ArtifactStore, ref: RunRef) -> list[str]:
    """File names of the run's artifacts that exist (one listing of the run's folder)."""
    try:
        listed = store.fs.ls(store.run_dir(ref), detail=False)
    except FileNotFoundError:
        return []
    known = set(ARTIFACT_FILES.values())
    return sorted(name for name in (posixpath.basename(str(p)) for p in listed) if name in known)


def read_screentime_summary(store: ArtifactStore, ref: RunRef) -> ScreenTimeSummary | None:
    """The screen-time summary of a finished run, read from its ``breakdown.json``.

    The export stage (``tasks.export.Breakdown``) writes ``duration_s``, ``identities[]`` and ``teams[]``
    with ``seconds_on_screen``/``share``; the summary keeps those figures and leaves the intervals to
    the file. None when the file is absent or unreadable.
    """
    try:
        document = store.read_json(ref, "breakdown")
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        logger.warning("breakdown.json of run %s is unreadable", ref.run_id, exc_info=True)
        return None
    try:
        return ScreenTimeSummary.model_validate(
            {
                "duration_s": document["duration_s"],
                "identities": document.get("identities") or [],
                "teams": document.get("teams") or [],
            }
        )
    except (TypeError, KeyError, ValidationError):
        logger.warning("breakdown.json of run %s has no readable screen-time figures", ref.run_id)
        return None


def read_results(view: RunView, settings: Settings, store: ArtifactStore) -> JobResults:
    files = present_artifacts(store, view.ref)
    breakdown = ARTIFACT_FILES["breakdown"]
    return JobResults(
        breakdown_url=artifact_url(settings, view.job_id, breakdown) if breakdown in files else None,
        artifacts={
            name.rsplit(".", 1)[0] if name.endswith(".parquet") else name: artifact_url(
                settings, view.job_id, name
            )
            for name in files
        },
        screentime=read_screentime_summary(store, view.ref) if breakdown in files else None,
    )


# --- submit ----------------------------------------------------------------------------------------


def request_hash(body: JobCreate) -> str:
    """Hash of the validated body: bodies that mean the same (key order, defaults) hash the same."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _local_path(url: str) -> Path | None:
    """The local path a video ``url`` names, or None for an http(s) URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return None
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise VideoInvalidUrl(f"file URL {url!r} names a remote host")
        return Path(unquote(parts.path))
    if scheme and len(scheme) > 1:  # "c:" would be a drive letter, but filmroom runs on POSIX
        raise VideoInvalidUrl(f"video URL scheme {scheme!r} is not supported; use http(s) or a local path")
    return Path(url)


def check_video_url(url: str, allowed_roots: Sequence[str]) -> str:
    """The URI stored for a video: the URL itself, or the resolved path of an allowed local file."""
    if any(ch.isspace() or ord(ch) < 0x20 for ch in url):
        raise VideoInvalidUrl("video URL must not contain whitespace or control characters")
    path = _local_path(url)
    if path is None:
        try:
            parts = urlsplit(url)
            _ = parts.port
        except ValueError:
            raise VideoInvalidUrl(f"video URL {url!r} is malformed") from None
        if not parts.hostname:
            raise VideoInvalidUrl(f"video URL {url!r} has no host")
        return url
    if not path.is_absolute():
        raise VideoInvalidUrl(f"local video path {url!r} must be absolute")
    resolved = path.resolve()
    roots = [Path(root).resolve() for root in allowed_roots]
    if not any(resolved.is_relative_to(root) for root in roots):
        raise VideoInvalidUrl(f"local video path {url!r} is outside the allowed footage folders")
    if not resolved.is_file():
        raise VideoInvalidUrl(f"local video {url!r} does not exist")
    return str(resolved)


def event_sources(videos: Sequence[VideoInput], allowed_roots: Sequence[str]) -> list[dict[str, Any]]:
    taken = {video.angle for video in videos if video.angle}
    sources = []
    for index, video in enumerate(videos, start=1):
        angle = video.angle
        if angle is None:
            angle = "main" if index == 1 and "main" not in taken else f"angle_{index}"
            while angle in taken:
                angle += "_"
            taken.add(angle)
        sources.append({"angle": angle, "uri": check_video_url(video.url, allowed_roots)})
    return sources


# the API's option names -> the flow's parameter names (tasks.detect_track.DetectParams fields)
PARAM_NAMES: Mapping[str, str] = {"min_confidence": "conf"}


def run_params(spec: BreakdownJob | ScreentimeJob) -> dict[str, Any]:
    """``runs.params``: what the flow reads — analysis options under its own names, flat, plus the
    job type's own fields (cast hints, episode id). Unset options are left to the server's settings."""
    options = spec.options.model_dump(mode="json", exclude_none=True)
    params: dict[str, Any] = {PARAM_NAMES.get(name, name): value for name, value in options.items()}
    if isinstance(spec, ScreentimeJob):
        if spec.cast:
            params["cast"] = [member.model_dump(exclude_none=True) for member in spec.cast]
        if spec.episode_id:
            params["episode_id"] = spec.episode_id
    return params


def estimate_completion(
    now: datetime, *, ahead: int, recent_run_s: Sequence[float], default_run_s: float, parallel: int
) -> datetime:
    """When a job submitted ``now`` should finish: the runs ``ahead`` of it drain ``parallel`` at a
    time, then it takes one run's time; a run's time is the mean of ``recent_run_s`` (wall-clock
    seconds of recent successful runs), or ``default_run_s`` until one has been measured."""
    per_run = sum(recent_run_s) / len(recent_run_s) if recent_run_s else default_run_s
    return now + timedelta(seconds=(ahead / parallel + 1) * per_run)


def measured_eta(session: Session, settings: Settings, now: datetime) -> datetime:
    ahead = session.exec(select(func.count()).select_from(Run).where(col(Run.status).in_(ACTIVE))).one()
    recent = session.exec(
        select(Run.started_at, Run.finished_at)
        .where(Run.status == S.file_ready, col(Run.started_at).is_not(None))
        .order_by(col(Run.finished_at).desc())
        .limit(settings.api.eta_sample_size)
    ).all()
    durations = [(end - start).total_seconds() for start, end in recent if start and end and end >= start]
    return estimate_completion(
        now,
        ahead=int(ahead),
        recent_run_s=durations,
        default_run_s=settings.api.eta_default_run_s,
        parallel=settings.api.eta_parallel_runs,
    )


@dataclass(frozen=True)
class Submitted:
    created: JobCreated
    replayed: bool


def create_job(
    session: Session,
    *,
    tenant_id: str,
    body: JobCreate,
    idempotency_key: str | None,
    settings: Settings,
    orchestrator: Orchestrator,
    resolve: Resolver,
) -> Submitted:
    """Create the event, the queued run and its webhook subscriptions, commit, then hand the run to
    the orchestrator. With ``idempotency_key``, a replay answers with the first job (and retries its
    hand-over if that failed); the same key with another body is ``IdempotencyConflict``."""
    for hook in body.webhooks:
        check_callback_url(hook.url, allow_hosts=settings.webhooks.allow_hosts, resolve=resolve)
    spec = body.job
    sources = event_sources(spec.videos, settings.ingest.allowed_roots)
    digest = request_hash(body)
    now = utc_now()
    savepoint = session.begin_nested()  # a replay rolls back the event it would have created
    try:
        event = repo.create_event(
            session,
            tenant_id=tenant_id,
            kind=EventKind.game if isinstance(spec, BreakdownJob) else EventKind.episode,
            sport=spec.sport if isinstance(spec, BreakdownJob) else SCREENTIME_SPORT,
            title=spec.title or "",
            sources=sources,
            meta={"job_type": spec.type},
        )
        creation = repo.create_run(
            session,
            tenant_id=tenant_id,
            event_id=event.id,
            job_type=JobType(spec.type),
            params=run_params(spec),
            estimated_completion=measured_eta(session, settings, now),
            idempotency_key=idempotency_key,
            request_hash=digest if idempotency_key is not None else None,
            now=now,
        )
    except BaseException:
        savepoint.rollback()
        raise
    run = creation.run
    if creation.created:
        for hook in body.webhooks:
            repo.create_webhook_subscription(
                session,
                tenant_id=tenant_id,
                run_id=run.id,
                url=hook.url,
                events=list(dict.fromkeys(hook.events)),
                secret=hook.secret,
            )
        savepoint.commit()
    else:
        run_id = run.id
        savepoint.rollback()
        reread = repo.get_run(session, tenant_id=tenant_id, run_id=run_id)
        assert reread is not None
        run = reread
        earlier_event = repo.get_event(session, tenant_id=tenant_id, event_id=run.event_id)
        assert earlier_event is not None
        event = earlier_event
    session.commit()
    if run.flow_run_id is None and run.status == S.queued:
        hand_over(session, run=run, event=event, orchestrator=orchestrator)
    return Submitted(
        created=JobCreated(
            job_id=run.job_id,
            created_at=run.created_at,
            estimated_completion=run.estimated_completion
            or run.created_at + timedelta(seconds=settings.api.eta_default_run_s),
        ),
        replayed=not creation.created,
    )


def hand_over(session: Session, *, run: Run, event: Event, orchestrator: Orchestrator) -> None:
    """Submit a committed run to the orchestrator and remember its flow run id.

    A failure is logged, not raised: the job is durable and queued, and a replay of the request
    (same Idempotency-Key) or the reconciler submits it again (the orchestrator is idempotent per run).
    The UPDATE is the first statement of its transaction, so on SQLite it waits for the write lock.
    """
    try:
        flow_run_id = orchestrator.submit(run, event)
    except Exception:
        logger.exception("could not hand run %s to the orchestrator; it stays queued", run.id)
        return
    if flow_run_id is None:
        return
    session.exec(
        sa.update(Run)
        .where(col(Run.id) == run.id, col(Run.flow_run_id).is_(None))
        .values(flow_run_id=flow_run_id)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    run.flow_run_id = flow_run_id


# --- reads -----------------------------------------------------------------------------------------


def get_job(session: Session, *, tenant_id: str, job_id: str) -> Run:
    run = repo.get_run_by_job_id(session, tenant_id=tenant_id, job_id=job_id)
    if run is None:
        raise NotFound(f"job {job_id} not found")
    return run


def list_jobs(
    session: Session,
    *,
    tenant_id: str,
    status: JobStatusValue | None,
    limit: int,
    offset: int,
    settings: Settings,
) -> list[JobSummary]:
    """The tenant's jobs, oldest first: queued and processing ones, or those of one jobs status."""
    statuses = RUN_STATUSES[status] if status is not None else ACTIVE
    runs = repo.list_runs(
        session, tenant_id=tenant_id, status=statuses, order_by="created_at", limit=limit, offset=offset
    )
    return [job_summary(RunView.of_run(run), settings) for run in runs]


# --- cancel ----------------------------------------------------------------------------------------


def cancel_job(
    session: Session, *, tenant_id: str, job_id: str, orchestrator: Orchestrator
) -> tuple[Run, bool]:
    """Ask the orchestrator to stop the job; ``(run, confirmed)``.

    A finished job is a ``Conflict``. When the orchestrator confirms at once (the flow had not
    started) the run is marked failed with code ``cancelled`` now; otherwise the flow does that when
    it stops, and the job stays as it is until then.
    """
    run = get_job(session, tenant_id=tenant_id, job_id=job_id)
    if run.status in repo.FINISHED:
        raise Conflict(f"job {job_id} is already {job_status_of(RunStatus(run.status))}")
    session.commit()  # hold no lock while the orchestrator is asked
    try:
        confirmed = orchestrator.cancel(run)
    except Exception:
        logger.exception("could not ask the orchestrator to cancel run %s", run.id)
        raise TechnicalIssues("the job could not be cancelled right now; try again") from None
    if not confirmed:
        return run, False
    try:
        transition = repo.transition_run(
            session,
            run_id=run.id,
            status=S.failed,
            error_code="cancelled",
            error_message="The job was cancelled by the client.",
        )
    except Conflict:  # the flow finished it in the meantime
        session.rollback()
        raise Conflict(f"job {job_id} finished before it could be cancelled") from None
    session.commit()
    return transition.run, True


# --- deliveries ------------------------------------------------------------------------------------


def _delivery_out(
    delivery: WebhookDelivery, url: str, attempts: Sequence[WebhookDeliveryAttempt]
) -> Delivery:
    return Delivery(
        delivery_id=delivery.id,
        event=delivery.event_type,
        url=url,
        status=DeliveryStatus(delivery.status).value,
        attempts=delivery.attempts,
        created_at=delivery.created_at,
        next_attempt_at=delivery.next_attempt_at,
        delivered_at=delivery.delivered_at,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        log=[
            DeliveryAttempt(
                attempt=a.attempt,
                at=a.at,
                status_code=a.status_code,
                error=a.error,
                duration_ms=a.duration_ms,
            )
            for a in attempts
        ],
    )


def list_deliveries(session: Session, *, run: Run, delivery_id: str | None = None) -> list[Delivery]:
    """The job's webhook deliveries (oldest first), each with its attempt log."""
    query = (
        select(WebhookDelivery, WebhookSubscription.url)
        .join(WebhookSubscription, col(WebhookSubscription.id) == col(WebhookDelivery.subscription_id))
        .where(WebhookDelivery.run_id == run.id, WebhookSubscription.tenant_id == run.tenant_id)
        .order_by(col(WebhookDelivery.created_at), col(WebhookDelivery.id))
    )
    if delivery_id is not None:
        query = query.where(WebhookDelivery.id == delivery_id)
    rows = session.exec(query).all()
    attempts = repo.delivery_attempts(session, [delivery.id for delivery, _ in rows])
    return [_delivery_out(delivery, url, attempts[delivery.id]) for delivery, url in rows]


def redeliver(session: Session, *, run: Run, delivery_id: str) -> Delivery:
    """Queue one more attempt of a delivery, due now (a delivered or dead one is sent once more)."""
    delivery = session.exec(
        select(WebhookDelivery).where(WebhookDelivery.id == delivery_id, WebhookDelivery.run_id == run.id)
    ).first()
    if delivery is None:
        raise NotFound(f"delivery {delivery_id} not found")
    repo.requeue_delivery(session, delivery)
    session.commit()
    return list_deliveries(session, run=run, delivery_id=delivery_id)[0]
