"""Exactly once, whatever crashes: 100,000 posts ingested with ``ingest`` (2 to a message),
counted by ``process`` while it is killed with SIGKILL at random moments and restarted, and
PostgreSQL (a private cluster) is restarted once under it, end with ``hashtag_counts`` equal, cell
for cell, to an uninterrupted count of the same posts, with sessions on and off.

The long version of this loop is ``make chaos`` (scripts/chaos.py).
"""

from __future__ import annotations

import random
import re
import signal
import time
from collections.abc import Iterator
from datetime import datetime

import pytest
from queue_helpers import (
    Background,
    PgCluster,
    cli_env,
    delete_stream,
    run_cli,
)

from happyhashtags.cli import counter_from_settings
from happyhashtags.config import load_settings
from happyhashtags.formats.x import decode_x
from happyhashtags.model import Post
from happyhashtags.sources.demo import generate_messages
from happyhashtags.storage import Store
from happyhashtags.timeutil import from_epoch
from services import NATS_URL, require_service

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.slow]

MESSAGES = 100_000
SEED = 2026
POSTS_PER_MESSAGE = 2  # several posts per message, and enough messages to kill process mid-way


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A stream holding the demo stream's first 100,000 posts, ingested by the CLI: its queue URL
    and how many messages carry them."""
    require_service("NATS", "127.0.0.1", 4222)
    name = f"HHTEST_EXACTLY_ONCE_{random.randrange(1 << 30):08X}"
    spool = tmp_path_factory.mktemp("spool")
    env = cli_env(HAPPYHASHTAGS_DEMO_COUNT=str(MESSAGES), HAPPYHASHTAGS_DEMO_SEED=str(SEED))
    try:
        result = run_cli(
            "ingest",
            "-s",
            "demo",
            "-q",
            f"{NATS_URL}/{name}",
            "--spool-dir",
            str(spool),
            "--posts-per-message",
            str(POSTS_PER_MESSAGE),
            env=env,
        )
        assert f"read {MESSAGES:,} lines" in result.stdout
        stored = re.search(r"JetStream stored ([\d,]+) messages", result.stdout)
        assert stored is not None, result.stdout
        messages = int(stored.group(1).replace(",", ""))
        assert MESSAGES / POSTS_PER_MESSAGE <= messages < MESSAGES / (POSTS_PER_MESSAGE - 1)
        yield f"{NATS_URL}/{name}", messages
    finally:
        delete_stream(NATS_URL, name)


@pytest.fixture(scope="module")
def posts() -> list[Post]:
    """The same messages, decoded as read now (they all carry an earlier time, which they keep)."""
    decoded = [decode_x(line, time.time()) for line in generate_messages(MESSAGES, seed=SEED)]
    return [post for post in decoded if isinstance(post, Post)]


def reference(posts: list[Post], session_gap: str) -> dict[tuple[datetime, str], tuple[int, int]]:
    """An uninterrupted count of the same messages, with the settings process uses."""
    counter = counter_from_settings(load_settings({"session_gap": session_gap}))
    for post in posts:
        counter.add(post)
    return {(from_epoch(b), tag): (t, h) for (b, tag), (t, h) in counter.drain().items()}


def _position(database: str) -> int:
    try:
        with Store(url=database) as store:
            checkpoint = store.read_position("happyhashtags")
    except Exception:
        return -1
    return checkpoint.position if checkpoint else 0


def _wait_for_progress(database: str, before: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while _position(database) <= before:
        assert time.monotonic() < deadline, "process made no progress"
        time.sleep(0.05)


@pytest.mark.parametrize(("session_gap", "kills"), [("30m", 4), ("0", 2)])
def test_counts_equal_an_uninterrupted_count_despite_kills_and_a_postgres_restart(
    ingested: tuple[str, int],
    posts: list[Post],
    pg_cluster: PgCluster,
    session_gap: str,
    kills: int,
) -> None:
    queue, stored = ingested
    database = pg_cluster.create_database(f"exactly_once_{session_gap.replace('0', 'off')}")
    with Store(url=database) as store:
        store.migrate()
    rng = random.Random(f"{SEED}-{session_gap}")
    args = (
        "process",
        "-q",
        queue,
        "--database",
        database,
        "--session-gap",
        session_gap,
        "--flush-posts",
        "1000",
        "--flush-interval",
        "0.5s",
        "--snapshot-every",
        "1s",
        "--idle-exit",
        "0.5s",
        # Small pulls: the whole stream takes a process a second or two, so each kill and the
        # Postgres restart land while it is counting (with the default pulls the compiled
        # counting drained it before the restart began).
        "--batch",
        "25",
    )
    killed_at: list[int] = []
    logs: list[str] = []
    for attempt in range(kills):
        before = _position(database)
        worker = Background(*args)
        try:
            worker.wait_for("counting", timeout=60)
            if attempt == 1:
                # PostgreSQL goes away under a process that is counting, and comes back.
                _wait_for_progress(database, before)
                time.sleep(rng.uniform(0.0, 0.4))
                pg_cluster.stop("immediate")
                worker.wait_for("retrying", timeout=30)
                pg_cluster.start()
            time.sleep(rng.uniform(0.3, 1.2))
            worker.proc.send_signal(signal.SIGKILL)
            worker.finish(10)
        finally:
            worker.kill()
            logs.append(worker.err)
        killed_at.append(_position(database))
    final = Background(*args)
    assert final.finish(120) == 0, final.err
    logs.append(final.err)

    with Store(url=database) as store:
        got = store.counts()
    assert _position(database) == stored
    # Killed at different points, mid-stream, not all before the first commit.
    assert any(0 < p < stored for p in killed_at), killed_at
    expected = reference(posts, session_gap)
    assert len(got) == len(expected)
    assert got == expected
    if session_gap != "0":
        assert any("restored the counter's state" in log for log in logs), killed_at
