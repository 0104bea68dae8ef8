"""Identifiers: 24-hex ObjectIds (breakdown-runs API) and UUIDv4 job ids (jobs API)."""

from __future__ import annotations

import os
import re
import threading
import time
import uuid

OBJECT_ID_RE = re.compile(r"^[0-9a-fA-F]{24}$")

_counter_lock = threading.Lock()
_counter = int.from_bytes(os.urandom(3), "big")
_process_random = os.urandom(5)


def new_object_id() -> str:
    """A MongoDB-style ObjectId: 4-byte seconds, 5 random bytes per process, 3-byte counter.

    Sorting by id sorts by creation second, like MongoDB's, which keeps listings stable.
    """
    global _counter
    with _counter_lock:
        _counter = (_counter + 1) % 0xFFFFFF
        count = _counter
    return (int(time.time()).to_bytes(4, "big") + _process_random + count.to_bytes(3, "big")).hex()


def is_object_id(value: str) -> bool:
    return bool(OBJECT_ID_RE.fullmatch(value))


def new_job_id() -> str:
    """A UUIDv4, as jobs-api.md promises."""
    return str(uuid.uuid4())


def is_job_id(value: str) -> bool:
    try:
        return uuid.UUID(value).version == 4
    except ValueError:
        return False
