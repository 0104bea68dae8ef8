"""schemathesis against the breakdown-runs routes (and the file links), authenticated with a JWT: no 5xx,
no response outside the documented schema. Same settings as tests/api/test_openapi_fuzz.py (which fuzzes
every route with an API key); ``positive_data_acceptance`` is excluded for the same reason: a
schema-valid body may still name a video URL the server refuses with a documented 400.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.fixtures.api import ApiServer, mint_jwt, sqlite_only


@sqlite_only
def test_schemathesis_finds_no_server_errors_on_the_breakdown_runs_routes_with_a_jwt(
    api_server: ApiServer, jwt_token: str, tmp_path: Path
) -> None:
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("st")
    assert st, "the schemathesis CLI (st) is not installed"
    token = mint_jwt(api_server.settings, "acme", ttl_s=900)  # outlives the run
    result = subprocess.run(
        [
            st, "run", f"{api_server.url}/openapi.json",
            "--header", f"Authorization: Bearer {token}",
            "--include-path-regex", "^/v1/(events|files)",
            "--checks", "all",
            "--exclude-checks", "positive_data_acceptance",
            "--max-examples", "30",
            "--phases", "examples,coverage,fuzzing,stateful",
            "--workers", "1",  # hypothesis' lambda introspection is not thread-safe on CPython 3.11
            "--seed", "20251129",
            "--generation-database", "none",
            "--no-color",
            "--report-dir", str(tmp_path),
        ],
        capture_output=True, text=True, timeout=420, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    assert "Runtime Error" not in result.stdout and "not_a_server_error" not in result.stdout
    tested = re.search(r"Tested: (\d+)", result.stdout)
    assert tested and int(tested[1]) >= 8, result.stdout[-3000:]  # 7 event operations and the file link
