from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest

from infra import errors
from infra.errors import REGISTRY, FilmroomError, all_specs, error_for, spec_for

SPECS = Path(__file__).resolve().parents[2].parent / "shared" / "specs"


def _documented_codes(document: str, pattern: str) -> set[str]:
    text = (SPECS / document).read_text()
    return set(re.findall(pattern, text, flags=re.MULTILINE))


BREAKDOWN_CODES = {
    "internal_server_error",
    "athlete_id_issue",
    "technical_issues",
    "not_synchronized_camera_angles",
    "wrong_sport",
    "wrong_video",
    "not_a_game",
    "incomplete_video",
    "missing_videos",
}
JOBS_CODES = {
    "video_invalid_url",
    "video_unsupported_format",
    "video_too_long",
    "callback_invalid_url",
    "processing_failed",
    "other",
}


def test_registry_holds_every_documented_code() -> None:
    assert set(REGISTRY) >= BREAKDOWN_CODES | JOBS_CODES


@pytest.mark.skipif(not SPECS.exists(), reason="the shared/ specs folder is not beside this checkout")
def test_registry_matches_the_spec_documents() -> None:
    breakdown = _documented_codes("breakdown-runs-api.md", r"^\* ([a-z_]+)\s*$")
    jobs = _documented_codes("jobs-api.md", r"^\| `([a-z_]+)`\s*\|")
    assert breakdown == BREAKDOWN_CODES
    assert jobs == JOBS_CODES


@pytest.mark.parametrize("spec", all_specs(), ids=lambda s: s.code)
def test_every_code_has_status_retry_flag_and_message(spec: errors.ErrorSpec) -> None:
    assert 400 <= spec.http_status < 600
    assert isinstance(spec.retryable, bool)
    assert spec.message.endswith(".")
    assert re.fullmatch(r"[a-z_]+", spec.code)


@pytest.mark.parametrize(
    ("code", "status", "retryable"),
    [
        ("missing_videos", 400, False),
        ("video_invalid_url", 400, False),
        ("not_synchronized_camera_angles", 422, False),
        ("wrong_video", 422, False),
        ("technical_issues", 503, True),
        ("processing_failed", 500, True),
        ("unauthorized", 401, False),
        ("not_found", 404, False),
        ("rate_limited", 429, True),
        ("cancelled", 409, False),
    ],
)
def test_codes_map_to_http_status_and_retry(code: str, status: int, retryable: bool) -> None:
    spec = spec_for(code)
    assert (spec.http_status, spec.retryable) == (status, retryable)


def test_unknown_code_falls_back_to_other() -> None:
    err = error_for("no_such_code", "boom")
    assert err.code == "other"
    assert err.to_dict() == {"code": "other", "details": "boom"}


def test_error_keeps_details_and_context_across_pickling() -> None:
    err = errors.NotSynchronizedCameraAngles("angles differ by 3.2 s", offset_s=3.2)
    clone = pickle.loads(pickle.dumps(err))
    assert isinstance(clone, errors.NotSynchronizedCameraAngles)
    assert clone.details == "angles differ by 3.2 s"
    assert clone.context == {"offset_s": 3.2}


def test_default_details_is_the_human_message() -> None:
    assert errors.MissingVideos().details == errors.MissingVideos.message


def test_a_code_cannot_be_registered_twice() -> None:
    with pytest.raises(TypeError, match="registered twice"):

        class Duplicate(FilmroomError):
            code = "missing_videos"


@pytest.mark.parametrize("code", sorted(REGISTRY), ids=str)
def test_every_code_reads_as_one_of_the_breakdown_documents_nine(code: str) -> None:
    shown, message = errors.breakdown_run_error(code, "the details")
    assert shown in BREAKDOWN_CODES
    if code in BREAKDOWN_CODES:
        assert (shown, message) == (code, "the details")
    else:  # the precise code stays readable in the message
        assert message == f"{code}: the details"
    assert errors.breakdown_run_error(None, None)[0] == "internal_server_error"
