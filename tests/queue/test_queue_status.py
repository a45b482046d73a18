"""``status``: stream size, the committed position of each consumer, lag in messages and seconds,
dead letters; a clear error when NATS cannot be reached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from queue_helpers import free_port, run_cli

from happyhashtags.queue import Ingestor, parse_queue_url
from happyhashtags.sources.demo import DemoSource, generate_messages
from happyhashtags.sources.files import FileSource

pytestmark = [pytest.mark.nats, pytest.mark.postgres]


def test_status_shows_the_stream_the_position_the_lag_and_the_dead_letters(
    nats_url: str, stream: str, postgres_url: str, tmp_path: Path
) -> None:
    queue = f"{nats_url}/{stream}"
    lines = list(generate_messages(500, seed=21))
    lines[10] = b"{broken"
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    Ingestor(
        source=FileSource([str(path)]),
        url=parse_queue_url(queue),
        spool_dir=tmp_path,
        message_posts=1,  # positions and lag in messages are then posts
    ).run()
    # 300 posts: the messages up to 301 (one is a dead letter).
    run_cli("process", "-q", queue, "--database", postgres_url, "--migrate", "--limit", "300")

    result = run_cli("status", "-q", queue, "--database", postgres_url, "--format", "json")
    report = json.loads(result.stdout)
    assert (report["messages"], report["first_seq"], report["last_seq"]) == (500, 1, 500)
    assert report["bytes"] > 0
    assert report["format"] == "x"
    assert report["storage"] == "file"
    assert report["dead_letters"] == 1
    [consumer] = report["consumers"]
    assert consumer["name"] == "happyhashtags"
    assert consumer["position"] == 301
    assert consumer["lag_messages"] == 199
    assert 0 <= consumer["lag_seconds"] < 120
    assert consumer["acked_upto"] == 301

    table = run_cli("status", "-q", queue, "--database", postgres_url).stdout
    assert "500 messages" in table
    assert "counted up to message 301" in table
    assert "behind by 199 messages" in table
    assert "1 dead letters" in table


def test_status_of_a_stream_nobody_counted_yet(nats_url: str, stream: str, tmp_path: Path) -> None:
    queue = f"{nats_url}/{stream}"
    Ingestor(
        source=DemoSource(count=5), url=parse_queue_url(queue), spool_dir=tmp_path, message_posts=1
    ).run()
    database = f"sqlite:///{tmp_path / 'empty.db'}"
    run_cli("migrate", "--database", database)
    report = json.loads(
        run_cli("status", "-q", queue, "--database", database, "--format", "json").stdout
    )
    assert report["messages"] == 5
    assert report["consumers"] == []
    assert report["dead_letters"] == 0


def test_status_says_when_nats_cannot_be_reached(tmp_path: Path) -> None:
    queue = f"nats://127.0.0.1:{free_port()}/NOWHERE"
    database = f"sqlite:///{tmp_path / 'x.db'}"
    result = run_cli("status", "-q", queue, "--database", database, check=False)
    assert result.returncode == 1
    assert "cannot reach NATS" in result.stderr
