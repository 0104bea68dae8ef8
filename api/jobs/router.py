"""The Jobs API (jobs-api.md): submit, poll, list and cancel jobs; their webhook deliveries and files.

Every route needs ``Authorization: Bearer <API key>``; a job of another tenant is a 404.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Response, status
from fastapi.responses import StreamingResponse

from api.deps import (
    ArtifactsDep,
    OrchestratorDep,
    PrincipalDep,
    ResolverDep,
    SessionDep,
    SettingsDep,
    WriteSessionDep,
)
from api.errors import error_responses
from api.jobs import service
from api.jobs.schemas import Delivery, JobCreate, JobCreated, JobStatus, JobStatusValue, JobSummary
from infra.errors import NotFound
from storage.artifacts import ARTIFACT_FILES

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

JobId = Annotated[str, Path(description="The job's UUIDv4 `job_id`.", max_length=64)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        min_length=1,
        max_length=255,
        description="Makes a submission safe to retry: the same key with the same body answers with "
        "the first job; with another body it is a 422 `idempotency_conflict`.",
    ),
]
REPLAYED_HEADER = "Idempotent-Replayed"
MEDIA_TYPES = {".parquet": "application/vnd.apache.parquet", ".json": "application/json", ".csv": "text/csv"}


@router.post(
    "",
    response_model=JobCreated,
    summary="Submit a job",
    responses={
        200: {
            "description": "The job was created (or, for a replayed Idempotency-Key, found).",
            "headers": {
                REPLAYED_HEADER: {
                    "description": "`true` when this answers an earlier request.",
                    "schema": {"type": "string"},
                }
            },
        },
        **error_responses(400),
    },
)
def submit_job(
    body: JobCreate,
    principal: PrincipalDep,
    session: WriteSessionDep,
    settings: SettingsDep,
    orchestrator: OrchestratorDep,
    resolver: ResolverDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> JobCreated:
    """Create a job; its analysis starts in the background (never inside this request)."""
    submitted = service.create_job(
        session,
        tenant_id=principal.tenant_id,
        body=body,
        idempotency_key=idempotency_key,
        settings=settings,
        orchestrator=orchestrator,
        resolve=resolver,
    )
    if submitted.replayed:
        response.headers[REPLAYED_HEADER] = "true"
    return submitted.created


@router.get("", response_model=list[JobSummary], summary="List jobs", responses=error_responses())
def list_jobs(
    principal: PrincipalDep,
    session: SessionDep,
    settings: SettingsDep,
    status_filter: Annotated[
        JobStatusValue | None,
        Query(alias="status", description="Only jobs with this status (default: queued and processing)."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Most jobs returned.")] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000, description="Jobs skipped.")] = 0,
) -> list[JobSummary]:
    """The caller's queued and processing jobs, oldest first (or those with ``status``)."""
    return service.list_jobs(
        session,
        tenant_id=principal.tenant_id,
        status=status_filter,
        limit=limit,
        offset=offset,
        settings=settings,
    )


@router.get(
    "/{job_id}", response_model=JobStatus, summary="Check a job's status", responses=error_responses(404)
)
def get_job(
    job_id: JobId, principal: PrincipalDep, session: SessionDep, settings: SettingsDep, store: ArtifactsDep
) -> JobStatus:
    """The job's status, errors and, once completed, its results."""
    run = service.get_job(session, tenant_id=principal.tenant_id, job_id=job_id)
    return service.job_document(service.RunView.of_run(run), settings, store)


@router.post(
    "/{job_id}/cancel",
    response_model=JobStatus,
    summary="Cancel a job",
    responses={
        200: {"description": "Cancelled: the job is now failed with the error code `cancelled`."},
        202: {
            "model": JobStatus,
            "description": "Cancellation requested; the job fails with code "
            "`cancelled` once its analysis has stopped.",
        },
        **error_responses(404, 409, 503),
    },
)
def cancel_job(
    job_id: JobId,
    principal: PrincipalDep,
    session: WriteSessionDep,
    settings: SettingsDep,
    store: ArtifactsDep,
    orchestrator: OrchestratorDep,
    response: Response,
) -> JobStatus:
    """Stop a queued or processing job; a finished one is a 409 ``conflict``."""
    run, confirmed = service.cancel_job(
        session, tenant_id=principal.tenant_id, job_id=job_id, orchestrator=orchestrator
    )
    if not confirmed:
        response.status_code = status.HTTP_202_ACCEPTED
    return service.job_document(service.RunView.of_run(run), settings, store)


@router.get(
    "/{job_id}/deliveries",
    response_model=list[Delivery],
    summary="The job's webhook deliveries",
    responses=error_responses(404),
)
def list_deliveries(job_id: JobId, principal: PrincipalDep, session: SessionDep) -> list[Delivery]:
    """Every webhook delivery of the job with its attempts, oldest first."""
    run = service.get_job(session, tenant_id=principal.tenant_id, job_id=job_id)
    return service.list_deliveries(session, run=run)


@router.post(
    "/{job_id}/deliveries/{delivery_id}/redeliver",
    response_model=Delivery,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Send a webhook delivery again",
    responses=error_responses(404),
)
def redeliver(
    job_id: JobId,
    delivery_id: Annotated[str, Path(description="The delivery's id.", max_length=64)],
    principal: PrincipalDep,
    session: WriteSessionDep,
) -> Delivery:
    """Queue another attempt of a delivery, due now."""
    run = service.get_job(session, tenant_id=principal.tenant_id, job_id=job_id)
    return service.redeliver(session, run=run, delivery_id=delivery_id)


@router.get(
    "/{job_id}/artifacts/{name}",
    response_class=Response,
    summary="Download one of the job's result files",
    responses={
        200: {
            "description": "The file.",
            "content": {
                media: {"schema": {"type": "string", "format": "binary"}} for media in MEDIA_TYPES.values()
            },
        },
        **error_responses(404),
    },
)
def download_artifact(
    job_id: JobId,
    name: Annotated[
        str, Path(description="File name, e.g. breakdown.json or tracks.parquet.", max_length=64)
    ],
    principal: PrincipalDep,
    session: SessionDep,
    store: ArtifactsDep,
) -> Response:
    """A result file linked from the job's ``results``."""
    run = service.get_job(session, tenant_id=principal.tenant_id, job_id=job_id)
    ref = service.RunView.of_run(run).ref
    if name not in ARTIFACT_FILES.values() or name not in service.present_artifacts(store, ref):
        raise NotFound(f"job {job_id} has no file {name!r}")
    media_type = MEDIA_TYPES.get("." + name.rsplit(".", 1)[-1], "application/octet-stream")
    location = store.path(ref, name)

    def chunks() -> Iterator[bytes]:
        with store.fs.open(location, "rb") as f:
            while chunk := f.read(1 << 20):
                yield chunk

    return StreamingResponse(
        chunks(), media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )
