"""``process``: counts a stream like ``run`` counts its lines, resumes after its committed position,
dead-letters poison and acknowledges it, survives NATS and PostgreSQL restarts, exits 0 on SIGTERM.

PostgreSQL outages use a private throwaway cluster; NATS restarts a private nats-server: the
shared services are never stopped.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from queue_helpers import (
    Background,
    NatsServer,
    PgCluster,
    free_port,
    run_cli,
)

from happyhashtags.aggregate import PostCounter
from happyhashtags.errors import DecodeError
from happyhashtags.formats.x import decode_x
from happyhashtags.model import Post
from happyhashtags.queue import Ingestor, parse_queue_url
from happyhashtags.sources.base import Batch
from happyhashtags.sources.demo import generate_messages
from happyhashtags.storage import Store
from happyhashtags.timeutil import from_epoch
from services import shared_file

pytestmark = [pytest.mark.nats, pytest.mark.postgres]


class ListSource:
    """Lines as one source batch read at a fixed time."""

    name = "lines"
    format = "x"
    total = None

    def __init__(self, lines: Sequence[bytes], received_at: float = 1_800_000_000.0) -> None:
        self.lines = list(lines)
        self.received_at = received_at

    def batches(self) -> Iterator[Batch]:
        yield Batch(self.lines, self.received_at, "lines")

    def close(self) -> None:
        pass


def ingest(queue: str, lines: Sequence[bytes], spool: Path, posts_per_message: int = 1) -> int:
    """Ingest `lines` as one read of a source; how many messages that made. One post per
    message unless asked: then positions (stream sequences) count posts."""
    return (
        Ingestor(
            source=ListSource(lines),
            url=parse_queue_url(queue),
            spool_dir=spool,
            message_posts=posts_per_message,
        )
        .run()
        .published
    )


def reference(
    lines: Sequence[bytes], *, session_gap: float = 1800.0, received_at: float = 1_800_000_000.0
) -> dict[tuple[datetime, str], tuple[int, int]]:
    """The counts of an uninterrupted count of the same lines, as `Store.counts` shows them."""
    counter = PostCounter(session_gap=session_gap)
    for line in lines:
        try:
            item = decode_x(line, received_at)
        except DecodeError:
            continue
        if isinstance(item, Post):
            counter.add(item)
    return {(from_epoch(b), tag): (t, h) for (b, tag), (t, h) in counter.drain().items()}


def process(queue: str, database: str, *args: str, timeout: float = 60.0) -> str:
    result = run_cli(
        "process",
        "-q",
        queue,
        "--database",
        database,
        "--migrate",
        "--idle-exit",
        "1s",
        *args,
        timeout=timeout,
    )
    return result.stderr


def counts(database: str) -> dict[tuple[datetime, str], tuple[int, int]]:
    with Store(url=database) as store:
        return store.counts()


def position(database: str, consumer: str = "happyhashtags") -> int:
    with Store(url=database) as store:
        checkpoint = store.read_position(consumer)
    return checkpoint.position if checkpoint else 0


async def _consumer_ack_floor(url: str, stream: str, consumer: str) -> int:
    import nats

    nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
    try:
        info = await nc.jetstream().consumer_info(stream, consumer)
        return int(info.ack_floor.stream_seq)
    finally:
        await nc.close()


async def _delivered(url: str, stream: str, consumer: str = "happyhashtags") -> int:
    import nats

    nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
    try:
        info = await nc.jetstream().consumer_info(stream, consumer)
        return int(info.delivered.stream_seq)
    finally:
        await nc.close()


@pytest.mark.parametrize("per_message", [1, 128])
def test_process_counts_like_an_uninterrupted_count_and_resumes_after_its_position(
    nats_url: str, stream: str, postgres_url: str, tmp_path: Path, per_message: int
) -> None:
    queue = f"{nats_url}/{stream}"
    lines = list(generate_messages(4000, seed=11))
    first = ingest(queue, lines[:2500], tmp_path / "spool", per_message)
    assert first == -(-2500 // per_message)
    process(queue, postgres_url, "--flush-posts", "700")
    assert counts(postgres_url) == reference(lines[:2500])
    assert position(postgres_url) == first
    total = first + ingest(queue, lines[2500:], tmp_path / "spool", per_message)
    log = process(queue, postgres_url)
    assert f"replaying messages 1 to {first}" in log  # no snapshot yet: the state is rebuilt
    assert counts(postgres_url) == reference(lines)
    assert position(postgres_url) == total
    assert asyncio.run(_consumer_ack_floor(nats_url, stream, "happyhashtags")) == total


@pytest.mark.parametrize(("per_message", "message"), [(1, 151), (128, 2)])
def test_a_malformed_message_is_a_dead_letter_acknowledged_without_stopping_the_stream(
    nats_url: str, stream: str, postgres_url: str, tmp_path: Path, per_message: int, message: int
) -> None:
    queue = f"{nats_url}/{stream}"
    lines = list(generate_messages(300, seed=12))
    lines.insert(150, b'{"data": {"id": 12, "text":')
    total = ingest(queue, lines, tmp_path / "spool", per_message)
    process(queue, postgres_url)
    assert counts(postgres_url) == reference(lines)
    with Store(url=postgres_url) as store:
        dead = store.dead_letters()
    assert len(dead) == 1
    assert dead[0]["raw"] == '{"data": {"id": 12, "text":'
    assert dead[0]["source"] == f"{stream}:{message}"  # the message that carried it
    assert asyncio.run(_consumer_ack_floor(nats_url, stream, "happyhashtags")) == total


def test_a_limit_inside_a_message_stops_at_its_end_so_nothing_is_counted_twice(
    nats_url: str, stream: str, postgres_url: str, tmp_path: Path
) -> None:
    queue = f"{nats_url}/{stream}"
    lines = list(generate_messages(300, seed=19))
    assert ingest(queue, lines, tmp_path / "spool", posts_per_message=100) == 3
    process(queue, postgres_url, "--limit", "150")  # inside message 2
    assert position(postgres_url) == 2
    assert counts(postgres_url) == reference(lines[:200])
    process(queue, postgres_url)
    assert counts(postgres_url) == reference(lines)


def test_posts_without_a_time_take_the_time_ingest_read_them(
    nats_url: str, stream: str, postgres_url: str, tmp_path: Path
) -> None:
    lines = shared_file("fixtures", "x-api-v2-default-fields.jsonl").read_bytes().splitlines()
    queue = f"{nats_url}/{stream}"
    ingest(queue, lines, tmp_path / "spool")  # read "at" 1_800_000_000
    process(queue, postgres_url, "--session-gap", "0")
    got = counts(postgres_url)
    assert got
    assert got == reference(lines, session_gap=0)
    assert {bucket for bucket, _ in got} == {from_epoch(1_800_000_000 - 1_800_000_000 % 3600)}


def test_a_recreated_stream_is_refused_rather_than_skipped(
    nats_url: str, stream: str, postgres_url: str, tmp_path: Path
) -> None:
    from queue_helpers import delete_stream

    queue = f"{nats_url}/{stream}"
    ingest(queue, list(generate_messages(20, seed=13)), tmp_path / "spool")
    process(queue, postgres_url)
    delete_stream(nats_url, stream)
    ingest(queue, list(generate_messages(20, seed=14)), tmp_path / "spool2")
    result = run_cli(
        "process", "-q", queue, "--database", postgres_url, "--idle-exit", "1s", check=False
    )
    assert result.returncode == 2  # a configuration problem: the operator must choose
    assert "recreated" in result.stderr


def test_sigterm_exits_0_within_10_seconds_while_idle_or_waiting_for_the_database(
    nats_url: str, stream: str, postgres_url: str, tmp_path: Path
) -> None:
    queue = f"{nats_url}/{stream}"
    lines = list(generate_messages(50, seed=15))
    ingest(queue, lines, tmp_path / "spool")
    idle = Background(
        "process", "-q", queue, "--database", postgres_url, "--migrate", "--flush-interval", "1h"
    )
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    waiting = Background("process", "-q", queue, "--database", closed)
    try:
        _wait(lambda: asyncio.run(_delivered(nats_url, stream)) == 50, "the messages read")
        waiting.wait_for("retrying")
        started = time.monotonic()
        idle.proc.send_signal(signal.SIGTERM)
        waiting.proc.send_signal(signal.SIGTERM)
        assert idle.finish(15) == 0, idle.err
        assert waiting.finish(15) == 0, waiting.err
        assert time.monotonic() - started < 10
    finally:
        idle.kill()
        waiting.kill()
    # What was counted was committed on the way out, or abandoned whole and read again now.
    assert position(postgres_url) in (0, 50)
    process(queue, postgres_url)
    assert position(postgres_url) == 50
    assert counts(postgres_url) == reference(lines)


def test_process_reconnects_after_nats_restarts(
    nats_server: NatsServer, postgres_url: str, tmp_path: Path
) -> None:
    nats_server.start()
    queue = f"{nats_server.url}/RESTARTS"
    lines = list(generate_messages(3000, seed=16))
    ingest(queue, lines[:1500], tmp_path / "spool")
    worker = Background(
        "process", "-q", queue, "--database", postgres_url, "--migrate", "--flush-interval", "0.2s"
    )
    try:
        worker.wait_for("counting")
        _wait(lambda: position(postgres_url) == 1500, "the first 1500 messages")
        nats_server.stop(signal.SIGKILL)
        nats_server.start()
        ingest(queue, lines[1500:], tmp_path / "spool")
        _wait(lambda: position(postgres_url) == 3000, "the next 1500 messages", timeout=60)
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.finish(15) == 0, worker.err
    finally:
        worker.kill()
    assert "reconnected to NATS" in worker.err
    assert position(postgres_url) == 3000
    assert counts(postgres_url) == reference(lines)


def _wait(condition: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_process_waits_for_postgres_down_at_start_and_through_an_outage(
    nats_url: str, stream: str, pg_cluster: PgCluster, tmp_path: Path
) -> None:
    queue = f"{nats_url}/{stream}"
    database = pg_cluster.create_database("outage")
    lines = list(generate_messages(6000, seed=17))
    ingest(queue, lines[:3000], tmp_path / "spool")
    pg_cluster.stop()
    worker = Background(
        "process",
        "-q",
        queue,
        "--database",
        database,
        "--migrate",
        "--flush-posts",
        "500",
        "--flush-interval",
        "0.2s",
        "--batch",
        "100",
    )
    try:
        worker.wait_for("retrying", timeout=30)
        pg_cluster.start()
        _wait(lambda: position(database) >= 3000, "the first 3000 messages")
        before = worker.err.count("retrying")
        pg_cluster.stop("immediate")
        ingest(queue, lines[3000:], tmp_path / "spool")
        _wait(lambda: worker.err.count("retrying") >= before + 2, "write retries during the outage")
        pg_cluster.start()
        _wait(lambda: position(database) == 6000, "the rest", timeout=60)
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.finish(15) == 0, worker.err
    finally:
        worker.kill()
        if not pg_cluster.running:
            pg_cluster.start()
    assert position(database) == 6000
    assert counts(database) == reference(lines)


def test_a_second_process_with_the_same_consumer_takes_over_and_the_first_stops(
    nats_url: str, stream: str, postgres_url: str, tmp_path: Path
) -> None:
    queue = f"{nats_url}/{stream}"
    ingest(queue, list(generate_messages(30, seed=18)), tmp_path / "spool")
    first = Background("process", "-q", queue, "--database", postgres_url, "--migrate")
    second = None
    try:
        _wait(lambda: asyncio.run(_delivered(nats_url, stream)) == 30, "the first to read")
        second = Background("process", "-q", queue, "--database", postgres_url)
        assert first.finish(30) == 1
        assert "took over consumer happyhashtags" in first.err
        assert "read 30 lines in" in first.out  # what it did before: 30 posts, committed
        assert second.proc.poll() is None
        second.proc.send_signal(signal.SIGTERM)
        assert second.finish(15) == 0, second.err
    finally:
        first.kill()
        if second is not None:
            second.kill()
    assert position(postgres_url) == 30


def test_two_workers_count_like_one_consumer_resume_and_refuse_another_layout(
    nats_url: str, stream: str, postgres_url: str, tmp_path: Path
) -> None:
    queue = f"{nats_url}/{stream}"
    lines = list(generate_messages(5000, seed=20))
    lines.insert(700, b"{not json")
    first = ingest(queue, lines[:3000], tmp_path / "spool", posts_per_message=16)
    log = process(queue, postgres_url, "--workers", "2", "--flush-posts", "500")
    assert "happyhashtags-1of2: counting" in log
    assert "happyhashtags-2of2: counting" in log
    assert counts(postgres_url) == reference(lines[:3000])
    assert position(postgres_url, "happyhashtags-1of2") == first
    assert position(postgres_url, "happyhashtags-2of2") == first
    with Store(url=postgres_url) as store:
        assert [d["raw"] for d in store.dead_letters()] == ["{not json"]  # one share kept it
    # More posts: each consumer resumes after its position and rebuilds its sessions.
    total = first + ingest(queue, lines[3000:], tmp_path / "spool", posts_per_message=16)
    process(queue, postgres_url, "--workers", "2")
    assert counts(postgres_url) == reference(lines)
    assert position(postgres_url, "happyhashtags-2of2") == total
    # Another layout would start consumers without a position: refused, nothing counted.
    for other in ("1", "3"):
        result = run_cli(
            "process", "-q", queue, "--database", postgres_url, "--idle-exit", "1s",
            "--workers", other, check=False,
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert "counted this database with --workers 2" in result.stderr
    assert counts(postgres_url) == reference(lines)


def test_sigterm_stops_every_worker_which_commits_what_it_counted(
    nats_url: str, stream: str, postgres_url: str, tmp_path: Path
) -> None:
    queue = f"{nats_url}/{stream}"
    lines = list(generate_messages(2000, seed=21))
    total = ingest(queue, lines, tmp_path / "spool", posts_per_message=50)
    workers = Background(
        "process", "-q", queue, "--database", postgres_url, "--migrate", "--workers", "2",
        "--flush-interval", "1h",
    )  # fmt: skip
    try:
        _wait(
            lambda: asyncio.run(_delivered(nats_url, stream, "happyhashtags-2of2")) == total,
            "the second worker to read everything",
        )
        _wait(
            lambda: asyncio.run(_delivered(nats_url, stream, "happyhashtags-1of2")) == total,
            "the first worker to read everything",
        )
        started = time.monotonic()
        workers.proc.send_signal(signal.SIGTERM)
        assert workers.finish(20) == 0, workers.err
        assert time.monotonic() - started < 10
    finally:
        workers.kill()
    # Each committed what it had counted (read but uncounted messages are read again now).
    assert "happyhashtags-1of2: signal 15: stopping" in workers.err
    assert "happyhashtags-2of2: signal 15: stopping" in workers.err
    process(queue, postgres_url, "--workers", "2")
    assert position(postgres_url, "happyhashtags-1of2") == total
    assert position(postgres_url, "happyhashtags-2of2") == total
    assert counts(postgres_url) == reference(lines)


def test_the_summary_rate_leaves_out_the_idle_wait_before_idle_exit(
    nats_url: str, stream: str, postgres_url: str, tmp_path: Path
) -> None:
    queue = f"{nats_url}/{stream}"
    ingest(queue, list(generate_messages(20_000, seed=14)), tmp_path / "spool", 64)
    result = run_cli(
        "process", "-q", queue, "--database", postgres_url, "--migrate", "--idle-exit", "1.5s"
    )
    found = re.search(
        r"read ([\d,]+) lines in ([\d.]+) s \(([\d,]+) posts/s over ([\d.]+) s busy\)",
        result.stdout,
    )
    assert found is not None, result.stdout
    posts, elapsed, rate, busy = (float(g.replace(",", "")) for g in found.groups())
    assert elapsed - busy >= 1.5  # the quiet spell before stopping
    # busy is printed rounded to 0.01 s, and counting 20,000 posts takes about that long: the
    # rate must lie within what the rounding allows (posts / elapsed would be far below it).
    assert busy >= 0.01
    assert posts / (busy + 0.005) <= rate <= posts / (busy - 0.005)
