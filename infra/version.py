"""filmroom's code version and the detector weights' version, recorded on every run and manifest.

The nightly reprocessing flow compares a finished run's versions with these to find outdated runs.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def code_version() -> str:
    try:
        return version("filmroom")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def weights_version(path: Path) -> str:
    """``<file name>@<sha256 prefix>`` of detector weights: changes whenever the weights do."""
    if not path.is_file():
        return f"{path.name}@missing"  # loading them fails later, with the stage's own error
    stat = path.stat()
    return _weights_digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=16)
def _weights_digest(path: str, size: int, mtime_ns: int) -> str:
    # size and mtime are part of the cache key, so replaced weights are hashed again
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"{Path(path).name}@{digest.hexdigest()[:12]}"
