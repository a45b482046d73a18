"""What tests import (not fixtures): where the services and the shared test data are, and how a
test asks for a service. A module of its own, not conftest.py: the tests/queue fixtures live in a
second conftest.py, and ``from conftest import ...`` would then find whichever was imported last.

When a service is down the tests that need it are skipped locally, and FAIL under CI=true: CI must
never pass by skipping silently.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

__all__ = ["IN_CI", "NATS_URL", "PG_ADMIN_URL", "SHARED", "require_service", "shared_file"]

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PG_ADMIN_URL = os.environ.get(
    "HAPPYHASHTAGS_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
NATS_URL = os.environ.get("HAPPYHASHTAGS_TEST_NATS_URL", "nats://127.0.0.1:4222")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip (locally) or fail (in CI) when a service the test needs is not listening."""
    if _port_open(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if IN_CI:
        pytest.fail(f"{message}: CI must start it (see .ci/run)", pytrace=False)
    pytest.skip(message)


def shared_file(*parts: str) -> Path:
    """A file from ../shared, failing (never skipping) when it is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"missing shared test data: {path}", pytrace=False)
    return path
