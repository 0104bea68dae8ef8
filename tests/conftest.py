"""Shared fixtures live once, in plugin modules under tests/fixtures/ (never copied into test files)."""

from __future__ import annotations

import os

# Tests never touch the network or a developer's real state.
os.environ.setdefault("FILMROOM_PROFILE", "test")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "0")

pytest_plugins = [
    "tests.fixtures.settings",
    "tests.fixtures.footage",
    "tests.fixtures.database",
    "tests.fixtures.api",
    "tests.fixtures.prefect",
    "tests.fixtures.identities",
]
