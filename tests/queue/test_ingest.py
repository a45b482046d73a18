"""``ingest``: every line reaches the stream once, in order, with its read time, format and post id
as Nats-Msg-Id (or, several lines to a message, a hash of them); repeats are dropped; NATS down or
restarted loses nothing; SIGTERM exits 0.

The tests of the publisher's order machinery use one post per message (``message_posts=1``), so
that thousands of messages are in flight; the framing has tests of its own."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from queue_helpers import (
    NatsServer,
    cli_env,
    happyhashtags,
    run_cli,
)

from happyhashtags.errors import ConfigError
from happyhashtags.queue import Ingestor, IngestSummary, parse_queue_url
from happyhashtags.sources.demo import generate_messages
from happyhashtags.sources.files import FileSource, StdinSource

pytestmark = pytest.mark.nats


async def _read_stream(url: str, name: str) -> tuple[Any, list[tuple[int, bytes, dict[str, str]]]]:
    import json

    import nats
    from nats.js.api import AckPolicy, ConsumerConfig

    nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
    try:
        js = nc.jetstream()
        info = await js.stream_info(name)
        total = info.state.messages
        consumer = await js.add_consumer(name, ConsumerConfig(ack_policy=AckPolicy.NONE))
        inbox = nc.new_inbox()
        got: list[Any] = []
        done = asyncio.Event()

        async def collect(msg: Any) -> None:
            if msg.data or not (msg.headers or {}).get("Status"):
                got.append(msg)
            if len(got) >= total:
                done.set()

        await nc.subscribe(inbox, cb=collect)
        if total:
            request = json.dumps({"batch": total, "expires": 20_000_000_000}).encode()
            await nc.publish(
                f"$JS.API.CONSUMER.MSG.NEXT.{name}.{consumer.name}", request, reply=inbox
            )
            await asyncio.wait_for(done.wait(), 20)
        messages = [
            (int(m.reply.split(".")[-4]), bytes(m.data), dict(m.headers or {})) for m in got
        ]
        return info, messages
    finally:
        await nc.close()


def read_stream(url: str, name: str) -> tuple[Any, list[tuple[int, bytes, dict[str, str]]]]:
    """The stream's info and every message: (sequence, payload, headers)."""
    return asyncio.run(_read_stream(url, name))


def lines_of(messages: list[tuple[int, bytes, dict[str, str]]]) -> list[bytes]:
    """The lines the messages carry, in order."""
    return [line for _, data, _ in messages for line in data.split(b"\n")]


def _write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def _ingest(source: Any, url: str, spool: Path, **options: Any) -> IngestSummary:
    return Ingestor(source=source, url=parse_queue_url(url), spool_dir=spool, **options).run()


def test_every_line_is_published_in_order_with_its_read_time_format_and_post_id(
    nats_url: str, stream: str, tmp_path: Path
) -> None:
    posts = list(generate_messages(200, seed=3))
    lines = [*posts[:100], b"", b"{not json", *posts[100:]]
    path = _write_lines(tmp_path / "in.jsonl", lines)
    before = time.time()
    result = run_cli(
        "ingest",
        "-s",
        str(path),
        "-q",
        f"{nats_url}/{stream}",
        "--spool-dir",
        str(tmp_path / "spool"),
        "--max-age",
        "2d",
        "--duplicate-window",
        "5m",
        "--posts-per-message",
        "1",
    )
    assert "JetStream stored 201 messages and dropped 0 repeated ones" in result.stdout
    info, messages = read_stream(nats_url, stream)
    assert [data for _, data, _ in messages] == [*posts[:100], b"{not json", *posts[100:]]
    assert [seq for seq, _, _ in messages] == list(range(1, 202))
    _, first, headers = messages[0]

    assert headers["Nats-Msg-Id"] == msgspec.json.decode(first)["data"]["id"]
    assert headers["Happyhashtags-Format"] == "x"
    assert before <= float(headers["Happyhashtags-Received-At"]) <= time.time()
    assert messages[100][2]["Nats-Msg-Id"].startswith("sha:")
    config = info.config
    assert config.storage == "file"
    assert config.max_age == 2 * 86400
    assert config.duplicate_window == 300
    assert config.num_replicas == 1
    assert "format=x" in (config.description or "")


def test_publishing_the_same_posts_again_stores_nothing_new(
    nats_url: str, stream: str, tmp_path: Path
) -> None:
    posts = list(generate_messages(300, seed=4))
    path = _write_lines(tmp_path / "in.jsonl", [*posts, posts[5], posts[7]])
    queue = f"{nats_url}/{stream}"
    first = _ingest(FileSource([str(path)]), queue, tmp_path / "spool", message_posts=1)
    assert (first.published, first.duplicates) == (300, 2)
    again = _ingest(FileSource([str(path)]), queue, tmp_path / "spool", message_posts=1)
    assert (again.published, again.duplicates) == (0, 302)
    _, messages = read_stream(nats_url, stream)
    assert [data for _, data, _ in messages] == posts


def test_lines_read_together_travel_together_and_a_repeated_message_is_dropped(
    nats_url: str, stream: str, tmp_path: Path
) -> None:
    posts = list(generate_messages(300, seed=4))
    lines = [*posts, posts[5]]  # a repeat inside a message is process's to drop, by post id
    path = _write_lines(tmp_path / "in.jsonl", lines)
    queue = f"{nats_url}/{stream}"
    first = _ingest(FileSource([str(path)]), queue, tmp_path / "spool", message_posts=128)
    assert (first.lines, first.published, first.duplicates) == (301, 3, 0)
    again = _ingest(FileSource([str(path)]), queue, tmp_path / "spool", message_posts=128)
    assert (again.published, again.duplicates) == (0, 3)
    _, messages = read_stream(nats_url, stream)
    assert lines_of(messages) == lines
    assert [data.count(b"\n") + 1 for _, data, _ in messages] == [128, 128, 45]
    ids = [headers["Nats-Msg-Id"] for _, _, headers in messages]
    assert all(i.startswith("lines:") for i in ids)
    assert len(set(ids)) == 3


def test_a_stream_holding_another_format_is_refused(
    nats_url: str, stream: str, tmp_path: Path
) -> None:
    path = _write_lines(tmp_path / "in.jsonl", list(generate_messages(3)))
    _ingest(FileSource([str(path)]), f"{nats_url}/{stream}", tmp_path / "spool")
    with pytest.raises(ConfigError, match="holds 'x' messages, not 'bluesky'"):
        _ingest(
            FileSource([str(path)], format="bluesky"), f"{nats_url}/{stream}", tmp_path / "spool2"
        )


def _wait(condition: Any, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_with_nats_down_ingest_spools_then_drains_in_order(
    nats_server: NatsServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    posts = list(generate_messages(600, seed=5))
    path = _write_lines(tmp_path / "in.jsonl", posts)
    ingestor = Ingestor(
        source=FileSource([str(path)]),
        url=parse_queue_url(f"{nats_server.url}/SPOOLED"),
        spool_dir=tmp_path / "spool",
        spool_max_bytes=150_000,  # less than the file: the reader must stop and wait
        ack_timeout=2.0,
    )
    result: list[IngestSummary] = []
    with caplog.at_level(logging.WARNING):
        thread = threading.Thread(target=lambda: result.append(ingestor.run()), daemon=True)
        thread.start()
        _wait(lambda: "STOPPED READING THE SOURCE" in caplog.text, what="a full spool")
        assert thread.is_alive()
        nats_server.start()
        thread.join(60)
    assert not thread.is_alive()
    _, messages = read_stream(nats_server.url, "SPOOLED")
    assert lines_of(messages) == posts
    assert result[0].published == len(messages)
    assert result[0].backlog_bytes == 0
    assert "reading the source again" in caplog.text


def test_nats_restarted_during_ingest_loses_and_repeats_nothing(
    nats_server: NatsServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    nats_server.start()
    posts = list(generate_messages(900, seed=6))
    read_fd, write_fd = os.pipe()
    source = StdinSource(stream=os.fdopen(read_fd, "rb"))
    ingestor = Ingestor(
        source=source,
        url=parse_queue_url(f"{nats_server.url}/RESTARTED"),
        spool_dir=tmp_path / "spool",
        message_posts=1,
        ack_timeout=2.0,
    )
    result: list[IngestSummary] = []
    writer = os.fdopen(write_fd, "wb")

    def feed(chunk: list[bytes]) -> None:
        writer.write(b"".join(p + b"\n" for p in chunk))
        writer.flush()

    with caplog.at_level(logging.WARNING):
        thread = threading.Thread(target=lambda: result.append(ingestor.run()), daemon=True)
        thread.start()
        feed(posts[:300])
        _wait(lambda: _count(nats_server.url, "RESTARTED") == 300, what="300 messages")
        nats_server.stop(signal.SIGKILL)
        feed(posts[300:600])
        _wait(lambda: ingestor.summary.lines == 600, what="600 lines read while NATS is down")
        _wait(lambda: "SPOOLING" in caplog.text, what="the spooling warning")
        nats_server.start()
        feed(posts[600:])
        writer.close()
        thread.join(60)
    assert not thread.is_alive()
    _, messages = read_stream(nats_server.url, "RESTARTED")
    assert [data for _, data, _ in messages] == posts
    assert result[0].backlog_bytes == 0


def test_sigterm_stops_ingest_with_exit_status_0_within_10_seconds(
    nats_url: str, stream: str, tmp_path: Path
) -> None:
    proc = happyhashtags(
        "ingest",
        "-s",
        "-",
        "-q",
        f"{nats_url}/{stream}",
        "--spool-dir",
        str(tmp_path / "spool"),
        "--posts-per-message",
        "1",
        env=cli_env(),
        stdin=-1,
    )
    assert proc.stdin is not None
    proc.stdin.write(b"".join(p + b"\n" for p in generate_messages(50)))
    proc.stdin.flush()
    _wait(lambda: _count(nats_url, stream) == 50, what="the first messages")
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err.decode()
    assert time.monotonic() - started < 10
    assert b"JetStream stored 50 messages" in out


def _count(url: str, name: str) -> int:
    try:
        info, _ = asyncio.run(_info_only(url, name))
    except Exception:
        return -1
    return int(info.state.messages)


async def _info_only(url: str, name: str) -> tuple[Any, None]:
    import nats

    nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
    try:
        return await nc.jetstream().stream_info(name), None
    finally:
        await nc.close()


def test_a_server_killed_in_the_middle_of_a_burst_leaves_the_order_intact(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    # Thousands of messages in flight when the server dies: some are stored, some lost, some
    # buffered by the client and sent after the reconnect. The stream must still hold the
    # source's order, each message once.
    nats_server.start()
    posts = list(generate_messages(25_000, seed=8))
    path = _write_lines(tmp_path / "in.jsonl", posts)
    ingestor = Ingestor(
        source=FileSource([str(path)]),
        url=parse_queue_url(f"{nats_server.url}/BURST"),
        spool_dir=tmp_path / "spool",
        message_posts=1,
        ack_timeout=2.0,
    )
    result: list[IngestSummary] = []
    thread = threading.Thread(target=lambda: result.append(ingestor.run()), daemon=True)
    thread.start()
    _wait(lambda: _count(nats_server.url, "BURST") > 5000, what="the burst to start")
    nats_server.stop(signal.SIGKILL)
    time.sleep(0.5)
    nats_server.start()
    thread.join(90)
    assert not thread.is_alive()
    _, messages = read_stream(nats_server.url, "BURST")
    assert len(messages) == len(posts)
    assert [data for _, data, _ in messages] == posts
    assert result[0].backlog_bytes == 0


async def _publish_foreign(url: str, subject: str) -> None:
    import nats

    nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
    try:
        await nc.jetstream().publish(subject, b'{"foreign": true}', headers={"Nats-Msg-Id": "x-1"})
    finally:
        await nc.close()


def test_another_publisher_on_the_stream_stops_ingest_with_an_error(
    nats_url: str, stream: str, tmp_path: Path
) -> None:
    posts = list(generate_messages(20, seed=9))
    read_fd, write_fd = os.pipe()
    ingestor = Ingestor(
        source=StdinSource(stream=os.fdopen(read_fd, "rb")),
        url=parse_queue_url(f"{nats_url}/{stream}"),
        spool_dir=tmp_path / "spool",
        message_posts=1,
    )
    failure: list[BaseException] = []

    def run() -> None:
        try:
            ingestor.run()
        except BaseException as exc:
            failure.append(exc)

    writer = os.fdopen(write_fd, "wb")
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    writer.write(b"".join(p + b"\n" for p in posts[:10]))
    writer.flush()
    _wait(lambda: _count(nats_url, stream) == 10, what="the first messages")
    asyncio.run(_publish_foreign(nats_url, f"happyhashtags.{stream}"))
    writer.write(b"".join(p + b"\n" for p in posts[10:]))
    writer.flush()
    thread.join(30)
    writer.close()
    assert not thread.is_alive()
    assert isinstance(failure[0], ConfigError)
    assert "another publisher" in str(failure[0])
    assert _count(nats_url, stream) == 11  # nothing of ours was stored after the foreign one


def test_stopping_with_a_full_spool_says_how_many_messages_were_not_journaled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from queue_helpers import free_port

    posts = list(generate_messages(400, seed=10))
    ingestor = Ingestor(
        source=StdinSource(stream=_pipe_with(posts)),
        url=parse_queue_url(f"nats://127.0.0.1:{free_port()}/NOWHERE"),  # NATS is down
        spool_dir=tmp_path / "spool",
        spool_max_bytes=50_000,
    )
    result: list[IngestSummary] = []
    with caplog.at_level(logging.WARNING):
        thread = threading.Thread(target=lambda: result.append(ingestor.run()), daemon=True)
        thread.start()
        _wait(lambda: "STOPPED READING THE SOURCE" in caplog.text, what="a full spool")
        ingestor.request_stop()
        thread.join(10)
    assert not thread.is_alive()
    assert result[0].interrupted
    assert result[0].backlog_bytes > 0  # kept for the next run
    assert "not journaled" in caplog.text


def _pipe_with(lines: list[bytes]) -> Any:
    read_fd, write_fd = os.pipe()
    data = b"".join(line + b"\n" for line in lines)

    def write() -> None:
        with os.fdopen(write_fd, "wb") as writer:
            writer.write(data)

    threading.Thread(target=write, daemon=True).start()
    return os.fdopen(read_fd, "rb")


def test_process_reads_a_batch_of_messages_as_one_block_with_each_lines_sequence(
    nats_url: str, stream: str, tmp_path: Path
) -> None:
    # What ingest framed, process's source reads back: the lines in order, as one LineBlock
    # (the compiled counter reads it in place), and each line's cursor its message's sequence.
    from happyhashtags.queue import NatsSource
    from happyhashtags.sources.base import LineBlock

    posts = list(generate_messages(300, seed=6))
    lines = [*posts[:150], b"{not json", *posts[150:]]
    path = _write_lines(tmp_path / "in.jsonl", lines)
    queue = f"{nats_url}/{stream}"
    _ingest(FileSource([str(path)]), queue, tmp_path / "spool", message_posts=7)
    _, messages = read_stream(nats_url, stream)
    expected_cursors = [seq for seq, data, _ in messages for _ in range(data.count(b"\n") + 1)]
    assert len(messages) == 43  # 301 lines, 7 to a message
    read: list[bytes] = []
    cursors: list[int] = []
    with NatsSource(url=parse_queue_url(queue), consumer="reader", idle_exit=0.5) as source:
        assert source.connect()
        for batch in source.batches():
            if batch.lines:
                assert isinstance(batch.lines, LineBlock)
                assert batch.cursors is not None
                assert len(batch.cursors) == len(batch.lines)
                read += batch.lines
                cursors += batch.cursors
    assert read == lines
    assert cursors == expected_cursors


@pytest.mark.parametrize("message_posts", [1, 3, 128])
def test_undecodable_lines_are_counted_and_published_whatever_the_message_size(
    nats_url: str, stream: str, tmp_path: Path, message_posts: int
) -> None:
    # One line to a message: each is decoded for its post id. Several: the lines are checked
    # in one call per message (the compiled scan for X) and only the ones it declines decoded.
    posts = list(generate_messages(20, seed=7))
    bad = [b"{not json", b'{"data": 5}', b'{"data": {"id": "8", "text": "t", "created_at": "?"}}']
    lines = [*posts[:5], bad[0], b"  ", *posts[5:12], bad[1], bad[2], *posts[12:]]
    path = _write_lines(tmp_path / "in.jsonl", lines)
    queue = f"{nats_url}/{stream}"
    summary = _ingest(
        FileSource([str(path)]), queue, tmp_path / "spool", message_posts=message_posts
    )
    assert (summary.lines, summary.blank, summary.undecodable) == (23, 1, 3)
    _, messages = read_stream(nats_url, stream)
    assert lines_of(messages) == [line for line in lines if line.strip()]
