"""The error registry: every error code filmroom can report, in one place.

Hierarchy::

    FilmroomError                     code, http_status, retryable, message; details + context per instance
    ├── InputError                    the footage or request is wrong; a retry with the same input cannot help
    │   ├── MissingVideos             missing_videos
    │   ├── VideoInvalidUrl           video_invalid_url
    │   ├── VideoUnsupportedFormat    video_unsupported_format
    │   ├── VideoTooLong              video_too_long
    │   ├── IncompleteVideo           incomplete_video
    │   ├── NotSynchronizedCameraAngles  not_synchronized_camera_angles
    │   ├── WrongVideo / WrongSport / NotAGame / AthleteIdIssue
    │   └── CallbackInvalidUrl        callback_invalid_url
    ├── TransientError                infrastructure trouble; a retry can help
    │   ├── TechnicalIssues           technical_issues
    │   └── InternalServerError       internal_server_error
    ├── ProcessingFailed / ExportFailed / Cancelled / Other   pipeline outcomes
    └── ApiError                      request-level errors of the HTTP faces (401, 404, 422, 429, ...)

Tasks raise these; the flow records ``code`` and ``details`` on the run; the API renders
``{"error": {"code", "details"}}`` with ``http_status``. ``retryable`` decides Prefect task retries and
which failed runs the nightly reprocessing flow re-runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class ErrorSpec:
    """What the registry knows about one code."""

    code: str
    http_status: int
    retryable: bool
    message: str
    source: str  # the document (or "pipeline"/"api") that defines the code


class FilmroomError(Exception):
    """Base of every error with a registry code."""

    code: ClassVar[str] = "other"
    http_status: ClassVar[int] = 500
    retryable: ClassVar[bool] = False
    message: ClassVar[str] = "Miscellaneous error."
    source: ClassVar[str] = "jobs-api"

    def __init__(self, details: str | None = None, **context: Any) -> None:
        self.details = details or self.message
        self.context = context
        super().__init__(self.details)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:
            if cls.code in REGISTRY and REGISTRY[cls.code] is not cls:
                raise TypeError(f"error code {cls.code!r} registered twice")
            REGISTRY[cls.code] = cls

    @classmethod
    def spec(cls) -> ErrorSpec:
        return ErrorSpec(cls.code, cls.http_status, cls.retryable, cls.message, cls.source)

    def to_dict(self) -> dict[str, Any]:
        """The API envelope's inner object."""
        return {"code": self.code, "details": self.details}

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors cross process boundaries (Dask workers -> flow); keep details and context.
        return (_rebuild, (type(self), self.details, self.context))


def _rebuild(cls: type[FilmroomError], details: str, context: dict[str, Any]) -> FilmroomError:
    return cls(details, **context)


REGISTRY: dict[str, type[FilmroomError]] = {}


class InputError(FilmroomError):
    http_status = 400
    retryable = False


class TransientError(FilmroomError):
    http_status = 503
    retryable = True


# --- breakdown-runs-api.md -------------------------------------------------------------------------


class InternalServerError(TransientError):
    code = "internal_server_error"
    http_status = 500
    message = "An internal error stopped the run; retrying may help."
    source = "breakdown-runs-api"


class TechnicalIssues(TransientError):
    code = "technical_issues"
    message = "A technical problem (storage, network, worker) interrupted the run; retrying may help."
    source = "breakdown-runs-api"


class AthleteIdIssue(InputError):
    code = "athlete_id_issue"
    http_status = 422
    message = "Athletes could not be identified consistently."
    source = "breakdown-runs-api"


class NotSynchronizedCameraAngles(InputError):
    code = "not_synchronized_camera_angles"
    http_status = 422
    message = "The camera angles of the event do not line up in time."
    source = "breakdown-runs-api"


class WrongSport(InputError):
    code = "wrong_sport"
    http_status = 422
    message = "The footage does not show the event's sport."
    source = "breakdown-runs-api"


class WrongVideo(InputError):
    code = "wrong_video"
    http_status = 422
    message = "The video does not show a sports field."
    source = "breakdown-runs-api"


class NotAGame(InputError):
    code = "not_a_game"
    http_status = 422
    message = "The video shows no game: too few players on the field."
    source = "breakdown-runs-api"


class IncompleteVideo(InputError):
    code = "incomplete_video"
    http_status = 422
    message = "The video is truncated or cannot be decoded to its stated end."
    source = "breakdown-runs-api"


class MissingVideos(InputError):
    code = "missing_videos"
    message = "The event has no video, or a video it names does not exist."
    source = "breakdown-runs-api"


# --- jobs-api.md -----------------------------------------------------------------------------------


class VideoInvalidUrl(InputError):
    code = "video_invalid_url"
    message = "Video URL is malformed or inaccessible."


class VideoUnsupportedFormat(InputError):
    code = "video_unsupported_format"
    message = "Video format not supported."


class VideoTooLong(InputError):
    code = "video_too_long"
    message = "Video exceeds maximum duration."


class CallbackInvalidUrl(InputError):
    code = "callback_invalid_url"
    message = "Callback URL is malformed or not allowed."


class ProcessingFailed(FilmroomError):
    code = "processing_failed"
    http_status = 500
    retryable = True
    message = "Internal processing error."


class Other(FilmroomError):
    code = "other"
    http_status = 500
    retryable = False
    message = "Miscellaneous error."


# --- pipeline outcomes -----------------------------------------------------------------------------


class Cancelled(FilmroomError):
    code = "cancelled"
    http_status = 409
    retryable = False
    message = "The run was cancelled."
    source = "pipeline"


class ExportFailed(FilmroomError):
    code = "export_failed"
    http_status = 500
    retryable = True
    message = "The analysis finished but the breakdown file could not be written."
    source = "pipeline"


class SchemaMismatch(FilmroomError):
    code = "schema_mismatch"
    http_status = 500
    retryable = False
    message = "A table does not match its pinned artifact schema."
    source = "pipeline"


# --- request-level errors of the HTTP faces --------------------------------------------------------


class ApiError(FilmroomError):
    source = "api"


class BadRequest(ApiError):
    code = "bad_request"
    http_status = 400
    message = "There was a problem with the request's structure or values."


class Unauthorized(ApiError):
    code = "unauthorized"
    http_status = 401
    message = "No valid API key or token found in the request."


class NotFound(ApiError):
    code = "not_found"
    http_status = 404
    message = "The requested resource was not found."


class ValidationFailed(ApiError):
    code = "validation_error"
    http_status = 422
    message = "The request has the wrong format."


class IdempotencyConflict(ApiError):
    code = "idempotency_conflict"
    http_status = 422
    message = "This Idempotency-Key was already used with a different request body."


class Conflict(ApiError):
    code = "conflict"
    http_status = 409
    message = "The resource is not in a state that allows this operation."


class RateLimited(ApiError):
    code = "rate_limited"
    http_status = 429
    retryable = True
    message = "Too many requests were attempted too quickly."


def is_retryable(exc: BaseException) -> bool:
    """Whether retrying the work that raised ``exc`` can help.

    Registry errors say so themselves (``wrong_video`` never, ``technical_issues`` always); anything
    else (an OSError, a lost worker, a timeout) is an infrastructure fault and worth a retry.
    """
    if isinstance(exc, FilmroomError):
        return exc.retryable
    return not isinstance(exc, ValueError | TypeError | KeyError | AssertionError)


def error_for(code: str, details: str | None = None, **context: Any) -> FilmroomError:
    """An instance of the registered error for ``code`` (``Other`` for an unknown code)."""
    return REGISTRY.get(code, Other)(details, **context)


def spec_for(code: str) -> ErrorSpec:
    """The registry entry for ``code`` (``other``'s entry for an unknown code)."""
    return REGISTRY.get(code, Other).spec()


def all_specs() -> list[ErrorSpec]:
    """Every registered code, for documentation and tests."""
    return [cls.spec() for cls in REGISTRY.values()]


# breakdown-runs-api.md lists nine codes and its clients may switch on them; the codes other
# documents or the pipeline add are shown there as the nearest documented one, and the precise code
# leads the message ("video_too_long: ...").
BREAKDOWN_RUN_CODE_FOR: dict[str, str] = {
    "video_invalid_url": "missing_videos",  # the video cannot be fetched
    "video_unsupported_format": "wrong_video",
    "video_too_long": "wrong_video",
    "cancelled": "technical_issues",  # the run was stopped; starting another one can succeed
    "export_failed": "internal_server_error",
    "schema_mismatch": "internal_server_error",
    "processing_failed": "internal_server_error",
    "other": "internal_server_error",
}


def breakdown_run_error(code: str | None, message: str | None) -> tuple[str, str]:
    """``(code, message)`` in breakdown-runs-api.md's vocabulary (see ``BREAKDOWN_RUN_CODE_FOR``)."""
    code = code or "other"
    message = message or spec_for(code).message
    if REGISTRY.get(code) is not None and REGISTRY[code].source == "breakdown-runs-api":
        return code, message
    return BREAKDOWN_RUN_CODE_FOR.get(code, "internal_server_error"), f"{code}: {message}"
