"""Fixtures of the queue tests: a stream on the shared NATS (deleted afterwards), a private
nats-server a test may stop and restart, and a private PostgreSQL cluster (one per module)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from queue_helpers import (
    NatsServer,
    PgCluster,
    nats_server_fixture,
    pg_cluster_fixture,
    stream_fixture,
)


@pytest.fixture
def stream(nats_url: str, unique_name: str) -> Iterator[str]:
    yield from stream_fixture(nats_url, unique_name)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    yield from nats_server_fixture(tmp_path)


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[PgCluster]:
    yield from pg_cluster_fixture()
