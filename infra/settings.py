"""filmroom's configuration: one pydantic-settings model, read from ``FILMROOM_*`` environment variables.

Nested sections use a double underscore: ``FILMROOM_DATABASE__URL``, ``FILMROOM_DASK__ADDRESS``,
``FILMROOM_WEBHOOKS__SIGNING_SECRET``. Nothing else in filmroom reads the environment (ruff's
banned-api rule holds that line); everything asks :func:`get_settings`.

The defaults run a laptop demo. Outside the ``dev``/``test`` profiles the model refuses the
development secrets, so a production deployment cannot start with a guessable key.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET = "filmroom-dev-secret-do-not-use-in-production"


class Profile(StrEnum):
    dev = "dev"
    test = "test"
    prod = "prod"


class StorageSettings(BaseModel):
    root: str = Field(
        default="var/artifacts",
        description="fsspec URL (or local folder) under which every run's Parquet artifacts are written, "
        "in the hive layout tenant=<t>/event=<id>/run=<id>/.",
    )
    storage_options: dict[str, str] = Field(
        default_factory=dict,
        description="Extra fsspec options for the artifact root (e.g. endpoint_url, key, secret for S3).",
    )
    footage_dir: str = Field(
        default="var/footage",
        description="Local folder where downloaded or uploaded source footage is kept.",
    )


class DatabaseSettings(BaseModel):
    url: str = Field(
        default="sqlite:///var/filmroom.db",
        description="SQLAlchemy URL of filmroom's database (the system of record for runs); "
        "e.g. postgresql+psycopg://user:pass@host/db.",
    )
    echo: bool = Field(default=False, description="Log every SQL statement (debugging only).")


class DetectSettings(BaseModel):
    weights: str = Field(
        default="",
        description="Path to the YOLO weights (.pt or .onnx). Empty means filmroom's bundled detector.",
    )
    imgsz: int = Field(default=640, ge=32, le=4096, description="Inference image size in pixels.")
    conf: float = Field(default=0.25, ge=0.0, le=1.0, description="Minimum detection confidence.")
    iou: float = Field(default=0.7, ge=0.0, le=1.0, description="NMS IoU threshold.")
    analysis_fps: float = Field(
        default=5.0, gt=0.0, le=120.0, description="Frames per second of footage that are analysed."
    )
    batch: int = Field(
        default=1,
        ge=1,
        le=256,
        description="Frames per inference call (1: on CPUs larger batches were slower per frame).",
    )
    tracker: Literal["bytetrack", "botsort"] = Field(
        default="botsort",
        description="Ultralytics tracker used inside each chunk (BoT-SORT compensates pans).",
    )
    chunk_seconds: float = Field(
        default=60.0,
        gt=1.0,
        description="Target chunk length for detect_track. Longer chunks analyse fewer overlap frames and "
        "run fewer task runs (a 10-min clip's flow: 149 s at 30 s chunks, 138 s at 60 s); a video "
        "shorter than one chunk per Dask worker (dask.n_workers) is cut into one per worker instead.",
    )
    min_chunk_seconds: float = Field(
        default=20.0,
        ge=0.0,
        description="Never cut a video into chunks shorter than this to give every worker one.",
    )
    overlap_seconds: float = Field(
        default=2.0, ge=0.0, description="Overlap between consecutive chunks, used to stitch tracks."
    )


class IngestSettings(BaseModel):
    allowed_roots: list[str] = Field(
        default_factory=lambda: ["var/footage"],
        description="Local folders from which footage may be read; paths outside them are refused.",
    )
    max_duration_s: float = Field(
        default=4 * 3600.0, gt=0, description="Longest accepted video (video_too_long beyond it)."
    )
    max_download_bytes: int = Field(
        default=8 * 1024**3, gt=0, description="Largest video downloaded from an http(s) URL."
    )
    download_timeout_s: float = Field(default=600.0, gt=0, description="Time limit for one download.")
    sync_tolerance_s: float = Field(
        default=0.5, ge=0, description="Largest offset between camera angles still considered in sync."
    )


class DaskSettings(BaseModel):
    address: str | None = Field(
        default=None,
        description="Address of an existing Dask scheduler (tcp://host:8786). Unset: a LocalCluster.",
    )
    n_workers: int = Field(
        default=2,
        ge=1,
        description="Workers of the embedded LocalCluster (with an external scheduler: how many it has); "
        "ingest cuts a short video into at least this many chunks.",
    )
    threads_per_worker: int = Field(default=1, ge=1, description="Threads per LocalCluster worker.")
    dashboard_port: int = Field(default=8787, ge=0, le=65535, description="LocalCluster dashboard port.")


class PrefectSettings(BaseModel):
    api_url: str | None = Field(
        default=None,
        description="URL of an existing Prefect server API. Unset: `filmroom up` starts one on SQLite.",
    )
    server_host: str = Field(default="127.0.0.1", description="Host the embedded Prefect server binds.")
    server_port: int = Field(default=4200, ge=1, le=65535, description="Embedded Prefect server port.")
    work_pool: str = Field(default="filmroom-process", description="Process work pool for deployments.")
    run_deployment: str = Field(
        default="filmroom-run/filmroom-run", description="Deployment that runs one breakdown run."
    )
    reprocess_cron: str = Field(
        default="0 3 * * *",
        description="Cron schedule (UTC) of the reprocessing deployment `filmroom serve-flows` serves.",
    )


class WebhookSettings(BaseModel):
    signing_secret: str = Field(
        default=DEV_SECRET,
        description="Secret used to sign per-tenant webhook deliveries that have no secret of their own.",
    )
    retry_delays_s: list[float] = Field(
        default_factory=lambda: [60.0, 300.0, 1500.0, 7500.0, 37500.0],
        description="Delay before each retry of a failed delivery (1, 5, 25, 125, 625 minutes).",
    )
    time_scale: float = Field(
        default=1.0, gt=0, description="Multiplier applied to retry delays (tests use a tiny one)."
    )
    jitter: float = Field(default=0.1, ge=0, le=1, description="Random +/- fraction added to each delay.")
    timeout_s: float = Field(default=10.0, gt=0, description="Timeout of one delivery attempt.")
    allow_hosts: list[str] = Field(
        default_factory=list,
        description="Callback hosts or CIDRs allowed even though they are loopback/private "
        "(e.g. 127.0.0.1 in tests).",
    )
    dispatch_in_api: bool = Field(
        default=True,
        description="Run the outbox dispatcher as a background thread of the API process; set false "
        "when a standalone `filmroom dispatcher` drains the outbox instead.",
    )
    poll_interval_s: float = Field(
        default=1.0, gt=0, description="How often the dispatcher looks for due deliveries."
    )
    concurrency: int = Field(default=4, ge=1, le=64, description="Deliveries the dispatcher sends at once.")
    retry_after_cap_s: float = Field(
        default=37500.0,
        gt=0,
        description="Longest receiver Retry-After honoured; a longer one is cut to this (not scaled).",
    )


class ApiSettings(BaseModel):
    host: str = Field(default="127.0.0.1", description="Host the API binds.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port the API binds.")
    public_url: str = Field(
        default="http://127.0.0.1:8000", description="Base URL clients use to reach the API (links)."
    )
    jwt_secret: str = Field(default=DEV_SECRET, description="HS256 secret for breakdown-runs JWTs.")
    jwt_public_key_file: str | None = Field(
        default=None, description="PEM public key or JWKS file for RS256 JWTs (read again when it changes)."
    )
    jwt_issuer: str = Field(default="filmroom", description="Required `iss` claim of JWTs.")
    jwt_tenant_claim: str = Field(default="tenant", description="JWT claim that names the tenant.")
    jwt_leeway_s: float = Field(
        default=30.0, ge=0, le=300, description="Clock skew tolerated when checking a JWT's exp/nbf/iat."
    )
    link_secret: str = Field(default=DEV_SECRET, description="Secret that signs short-lived file links.")
    link_ttl_s: int = Field(default=900, gt=0, description="Lifetime of a signed download link.")
    breakdown_file_max_bytes: int = Field(
        default=32 * 1024**2,
        gt=0,
        description="Largest breakdown file an analyst may upload to a manual breakdown run.",
    )
    rate_limit: str = Field(
        default="120/minute", description="Per-API-key rate limit (limits library notation)."
    )
    redis_url: str | None = Field(
        default=None, description="Redis URL for rate-limit counters; unset keeps them in memory."
    )
    submit_rate_limit: str = Field(
        default="30/minute",
        description="Extra, stricter per-API-key limit on submissions (POST /v1/jobs, starting a "
        "breakdown run), counted on top of rate_limit.",
    )
    eta_default_run_s: float = Field(
        default=900.0,
        gt=0,
        description="Assumed wall-clock seconds of one run while no finished run has been measured yet.",
    )
    eta_sample_size: int = Field(
        default=20, ge=1, description="Recent successful runs whose durations estimate the next ones."
    )
    eta_parallel_runs: int = Field(
        default=1, ge=1, description="Runs the deployment processes at once (how fast the queue drains)."
    )


class Settings(BaseSettings):
    """Every setting of filmroom; see the README's configuration table."""

    model_config = SettingsConfigDict(
        env_prefix="FILMROOM_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    profile: Profile = Field(
        default=Profile.dev, description="dev and test allow development secrets; prod refuses them."
    )
    data_dir: Path = Field(default=Path("var"), description="Folder for local state (databases, logs).")
    storage: StorageSettings = Field(default_factory=StorageSettings, description="Artifact store.")
    database: DatabaseSettings = Field(default_factory=DatabaseSettings, description="Database.")
    detect: DetectSettings = Field(default_factory=DetectSettings, description="Detection and tracking.")
    ingest: IngestSettings = Field(default_factory=IngestSettings, description="Footage ingest.")
    dask: DaskSettings = Field(default_factory=DaskSettings, description="Dask cluster.")
    prefect: PrefectSettings = Field(default_factory=PrefectSettings, description="Prefect server.")
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings, description="Webhook delivery.")
    api: ApiSettings = Field(default_factory=ApiSettings, description="HTTP API.")

    @model_validator(mode="after")
    def _refuse_insecure_defaults(self) -> Settings:
        if self.profile in (Profile.dev, Profile.test):
            return self
        insecure = [
            name
            for name, value in (
                ("webhooks.signing_secret", self.webhooks.signing_secret),
                ("api.jwt_secret", self.api.jwt_secret),
                ("api.link_secret", self.api.link_secret),
            )
            if value == DEV_SECRET or len(value) < 32
        ]
        if insecure:
            raise ValueError(
                f"profile {self.profile.value!r} refuses development or short (< 32 chars) secrets: "
                + ", ".join(insecure)
                + "; set them with FILMROOM_<SECTION>__<NAME>"
            )
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once; tests call ``get_settings.cache_clear()``)."""
    return Settings()
