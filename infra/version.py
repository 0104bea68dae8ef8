"""filmroom's code version, recorded in every manifest and breakdown file."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def code_version() -> str:
    try:
        return version("filmroom")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"
