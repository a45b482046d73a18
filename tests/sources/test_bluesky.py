"""The Bluesky source against a fake Jetstream over loopback: drops, resume, fail-over, stalls,
back-off, shutdown and compression, counted end to end into SQLite and PostgreSQL."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
import types
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest

from fake_jetstream import Event, FakeJetstream, firehose, identity_event, post_event, shifted
from happyhashtags.aggregate import PostCounter
from happyhashtags.config import load_settings
from happyhashtags.engines.local import LocalEngine, RunSummary
from happyhashtags.errors import ConfigError, SourceError
from happyhashtags.model import Checkpoint
from happyhashtags.sources import open_source
from happyhashtags.sources.base import Resumable, Source
from happyhashtags.sources.bluesky import (
    BlueskySource,
    from_settings,
    instance_key,
    subscribe_url,
)
from happyhashtags.storage import Store

# A regression here tends to wait for posts that never come: fail fast instead.
pytestmark = pytest.mark.timeout(60)

START = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in microseconds
POSTS = 60
EVENTS = firehose(POSTS, start_us=START)  # 120 events, 0.1 s apart
# What a subscriber to posts receives: the likes are filtered out.
SENT = [e for e in EVENTS if e["kind"] != "commit" or e["commit"]["collection"].endswith(".post")]


def post_times(events: Sequence[Event]) -> list[int]:
    """The time_us of the post creates, in order."""
    return [
        e["time_us"]
        for e in events
        if e["kind"] == "commit"
        and e["commit"]["operation"] == "create"
        and e["commit"]["collection"] == "app.bsky.feed.post"
    ]


def expected_totals(posts: int = POSTS) -> dict[str, tuple[int, int]]:
    totals = {f"p{i}": (1, int(i % 3 == 0)) for i in range(posts)}
    totals["all"] = (posts, sum(1 for i in range(posts) if i % 3 == 0))
    return totals


def totals(store: Store) -> dict[str, tuple[int, int]]:
    out: Counter[str] = Counter()
    happy: Counter[str] = Counter()
    for (_bucket, tag), (tweets, happy_tweets) in store.counts().items():
        out[tag] += tweets
        happy[tag] += happy_tweets
    return {tag: (out[tag], happy[tag]) for tag in out}


def make_source(urls: Sequence[str], **options: Any) -> BlueskySource:
    options.setdefault("sleeper", lambda _seconds: None)
    options.setdefault("rng", random.Random(7))
    options.setdefault("stall_timeout", 5.0)
    return BlueskySource(urls=urls, **options)


def run(source: BlueskySource, store: Store, limit: int, *, session_gap: float = 0) -> RunSummary:
    # Duplicates must be stopped by the source, not hidden by the counter's own id memory.
    counter = PostCounter(session_gap=session_gap, dedupe_capacity=0)
    engine = LocalEngine(source=source, counter=counter, store=store, limit=limit, flush_posts=7)
    return engine.run()


@pytest.fixture
def sqlite_store(sqlite_url: str) -> Store:
    store = Store(url=sqlite_url)
    store.migrate()
    return store


# -- URLs and settings --------------------------------------------------------------------------


def test_subscribe_url_adds_the_collection_cursor_and_compression() -> None:
    url = subscribe_url("wss://js.example/subscribe", cursor=17, compress=True)
    assert url == (
        "wss://js.example/subscribe?wantedCollections=app.bsky.feed.post&cursor=17&compress=true"
    )


def test_subscribe_url_keeps_the_urls_own_parameters_but_replaces_its_cursor() -> None:
    url = subscribe_url(
        "ws://h:1/subscribe?wantedCollections=app.bsky.*&cursor=5&maxMessageSizeBytes=9", cursor=6
    )
    assert url == ("ws://h:1/subscribe?wantedCollections=app.bsky.*&maxMessageSizeBytes=9&cursor=6")


def test_instance_key_drops_credentials_and_query() -> None:
    key = instance_key("wss://user:secret@js.example:8443/subscribe?token=abc")
    assert key == "wss://js.example:8443/subscribe"


def test_source_implements_the_protocols_and_names_its_format() -> None:
    source = BlueskySource()
    assert isinstance(source, Source)
    assert isinstance(source, Resumable)
    assert (source.format, source.consumer, source.total) == ("bluesky", "bluesky", None)


def test_from_settings_reads_the_url_list_from_the_environment() -> None:
    settings = load_settings(
        {"session_gap": "10m"},
        environ={"BLUESKY_JETSTREAM_URL": "ws://a.example/subscribe, ws://b.example/subscribe"},
    )
    source = open_source(settings, "bluesky")
    assert isinstance(source, BlueskySource)
    assert source.urls == ("ws://a.example/subscribe", "ws://b.example/subscribe")


def test_compression_without_a_dictionary_is_a_config_error() -> None:
    settings = load_settings({"bluesky_compress": True})
    with pytest.raises(ConfigError, match="zstd dictionary"):
        open_source(settings, "bluesky")


def test_compression_reads_the_dictionary_file_named_by_the_settings(tmp_path: Path) -> None:
    # bluesky_zstd_dictionary and bluesky_stall_timeout are read with getattr, so that a
    # Settings without them yet still works: a namespace stands in for a Settings with them.
    dictionary = tmp_path / "zstd_dictionary"
    dictionary.write_bytes(b"".join(msgspec.json.encode(e) for e in EVENTS[:10]))
    settings = types.SimpleNamespace(
        bluesky_urls=("ws://a.example/subscribe",),
        bluesky_compress=True,
        bluesky_zstd_dictionary=dictionary,
        bluesky_stall_timeout=12.0,
        session_gap=0.0,
    )
    source = from_settings(settings, "bluesky")  # type: ignore[arg-type]
    assert source._dctx is not None
    assert source._stall_timeout == 12.0
    settings.bluesky_zstd_dictionary = tmp_path / "missing"
    with pytest.raises(ConfigError, match="cannot read the zstd dictionary"):
        from_settings(settings, "bluesky")  # type: ignore[arg-type]


@pytest.mark.parametrize("url", ["https://js.example/subscribe", "js.example", ""])
def test_a_url_that_is_not_a_websocket_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError):
        BlueskySource(urls=[url])


# -- reading, dropping, resuming ----------------------------------------------------------------


def test_every_post_is_counted_once_through_several_drops(sqlite_store: Store) -> None:
    script = [("drop", 9), ("close", 25), ("drop", 1), ("drop", 30), ("close", 4)]
    with FakeJetstream(EVENTS, script=script) as server:
        source = make_source([server.url])
        summary = run(source, sqlite_store, POSTS)
    assert totals(sqlite_store) == expected_totals()
    assert summary.posts == POSTS
    assert min(summary.skipped[r] for r in ("identity", "account", "delete", "update")) > 0
    cursors = server.cursors
    assert len(cursors) == len(script) + 1
    assert cursors[0] is None  # the live tail
    assert all(c is not None for c in cursors[1:])
    assert cursors[1:] == sorted(cursors[1:])
    # Jetstream replays the cursor's own event: the source drops it.
    assert source.stats.dropped >= len(script) - 1
    assert all(q["wantedCollections"] == ["app.bsky.feed.post"] for q in server.requests)


def test_a_restart_resumes_from_the_stored_cursor_without_gap_or_double_count(
    database_url: str,
) -> None:
    with (
        Store(url=database_url) as store,
        FakeJetstream(
            EVENTS, script=[("drop", 11), ("close", 20), ("drop", 70), ("drop", 5)]
        ) as server,
    ):
        store.migrate()
        first = run(make_source([server.url]), store, 23)
        assert first.posts == 23
        checkpoint = store.read_position("bluesky")
        assert checkpoint is not None
        assert checkpoint.position == post_times(EVENTS)[22]
        state = json.loads(checkpoint.state or "{}")
        assert state["instance"] == instance_key(server.url)
        assert [t for t, _uri in state["recent"]][-1] == checkpoint.position
        connections = len(server.requests)

        second = run(make_source([server.url]), store, POSTS - 23)
        assert second.posts == POSTS - 23
        assert server.cursors[connections] == checkpoint.position
        assert totals(store) == expected_totals()


def test_posts_sharing_the_cursors_time_us_are_neither_lost_nor_counted_twice(
    sqlite_store: Store,
) -> None:
    t = START
    events = [
        post_event("did:plc:a", "r1", t, "one", hashtags=("all", "p0")),
        post_event("did:plc:b", "r2", t + 1, "two", hashtags=("all", "p1")),
        post_event("did:plc:c", "r3", t + 1, "three", hashtags=("all", "p2")),
        identity_event("did:plc:c", t + 1, "c.example"),
        post_event("did:plc:d", "r4", t + 2, "four", hashtags=("all", "p3")),
    ]
    with FakeJetstream(events) as server:
        run(make_source([server.url]), sqlite_store, 2)
        checkpoint = sqlite_store.read_position("bluesky")
        assert checkpoint is not None
        assert checkpoint.position == t + 1
        run(make_source([server.url]), sqlite_store, 2)
    assert server.cursors == [None, t + 1]
    assert totals(sqlite_store) == {
        "all": (4, 0),
        "p0": (1, 0),
        "p1": (1, 0),
        "p2": (1, 0),
        "p3": (1, 0),
    }


def test_messages_without_time_us_are_dead_letters_and_never_a_position(
    sqlite_store: Store,
) -> None:
    preamble = [b'{"hello": "fake jetstream"}', b"{not json"]
    with FakeJetstream(EVENTS, script=[("drop", 12), ("drop", 20)], preamble=preamble) as server:
        run(make_source([server.url]), sqlite_store, 5)
        first = sqlite_store.read_position("bluesky")
        run(make_source([server.url]), sqlite_store, POSTS - 5)
    assert totals(sqlite_store) == expected_totals()
    assert first is not None
    assert first.position == post_times(EVENTS)[4]
    reasons = Counter(d["reason"] for d in sqlite_store.dead_letters(limit=1000))
    connections = len(server.sent)
    assert reasons == {"unrecognized": connections, "malformed_json": connections}


def test_lines_read_before_any_time_us_store_no_position(sqlite_store: Store) -> None:
    preamble = [b'{"hello": "fake jetstream"}', b"{not json"]
    with FakeJetstream([], preamble=preamble) as server:
        source = make_source([server.url], heartbeat=0.05)
        counter = PostCounter(session_gap=0)
        engine = LocalEngine(source=source, counter=counter, store=sqlite_store, flush_interval=0)
        runner = threading.Thread(target=engine.run)
        runner.start()
        deadline = time.monotonic() + 10
        while engine.summary.lines < 2 and time.monotonic() < deadline:
            server.connected.wait(0.02)  # polling the engine's progress
        engine.request_stop()
        runner.join(10)
    assert not runner.is_alive()
    assert engine.summary.lines == 2
    assert len(sqlite_store.dead_letters()) == 2
    # A position of 0 would make the next run start over at the live tail.
    assert sqlite_store.read_position("bluesky") is None


def test_fail_over_to_another_instance_rewinds_without_double_counting(
    sqlite_store: Store,
) -> None:
    # Instance B stamps every event 0.3 s earlier than A; A goes down after 80 messages.
    with (
        FakeJetstream(EVENTS, script=[("drop", 80)], accept=1) as a,
        FakeJetstream(shifted(EVENTS, -300_000)) as b,
    ):
        source = make_source([a.url, b.url], failover_after=2, rewind_seconds=5.0)
        run(source, sqlite_store, POSTS)
    assert totals(sqlite_store) == expected_totals()
    assert source.stats.failovers == 1
    last_from_a = SENT[79]["time_us"]
    assert a.cursors == [None, last_from_a, last_from_a]  # one drop, then two refusals
    cursor = last_from_a - 5_000_000
    assert b.cursors == [cursor]
    # B sent again the posts A had delivered within those 5 s (by B's clock): all dropped.
    again = [t for t in post_times(SENT[:80]) if t - 300_000 >= cursor]
    assert len(again) >= 20
    # ... and the event at the new cursor, whatever it is (playback includes it).
    assert source.stats.dropped - len(again) in (0, 1)


def _fail_over_then_stop(store: Store) -> tuple[Checkpoint, str]:
    """Run 1: A goes down after 30 messages, B takes over, the run stops after 40 posts."""
    with (
        FakeJetstream(EVENTS, script=[("drop", 30)], accept=1) as a,
        FakeJetstream(shifted(EVENTS, -300_000)) as b,
    ):
        run(make_source([a.url, b.url], failover_after=1), store, 40)
    checkpoint = store.read_position("bluesky")
    assert checkpoint is not None
    return checkpoint, instance_key(b.url)


def test_the_recent_ids_window_survives_a_restart_on_another_instance(
    sqlite_store: Store,
) -> None:
    checkpoint, instance_b = _fail_over_then_stop(sqlite_store)
    state = json.loads(checkpoint.state or "{}")
    assert state["instance"] == instance_b
    assert len(state["recent"]) >= 40  # ~10 s of posts, 0.2 s apart
    # Run 2 starts on a third instance (C stamps 0.2 s later than A): a rewind, deduplicated
    # against the stored window.
    with FakeJetstream(shifted(EVENTS, 200_000)) as c:
        source = make_source([c.url])
        run(source, sqlite_store, POSTS - 40)
    assert c.cursors == [checkpoint.position - 5_000_000]
    assert source.stats.dropped >= 20
    assert totals(sqlite_store) == expected_totals()


def test_without_the_stored_window_the_rewind_would_count_posts_twice(
    sqlite_store: Store,
) -> None:
    # The control for the test above: the same restart with the window emptied double counts.
    checkpoint, instance_b = _fail_over_then_stop(sqlite_store)
    emptied = json.dumps({"v": 1, "instance": instance_b, "recent": []})
    with FakeJetstream(shifted(EVENTS, 200_000)) as c:
        source = make_source([c.url])
        source.resume(Checkpoint(checkpoint.position, emptied))
        counter = PostCounter(session_gap=0, dedupe_capacity=0)
        for batch in source.batches():
            for line in batch.lines:
                from happyhashtags.formats.bluesky import decode_bluesky

                item = decode_bluesky(line, batch.received_at)
                if not batch.replay and not hasattr(item, "reason"):
                    counter.add(item)  # type: ignore[arg-type]
            if counter.stats.posts >= POSTS - 40:
                source.close()
    sqlite_store.write(counter.drain())
    assert max(tweets for tweets, _ in totals(sqlite_store).values() if tweets < POSTS) == 2


def test_a_stalled_connection_is_replaced(sqlite_store: Store) -> None:
    with FakeJetstream(EVENTS, script=[("stall", 10)]) as server:
        source = make_source([server.url], stall_timeout=0.3)
        started = time.monotonic()
        run(source, sqlite_store, POSTS)
        elapsed = time.monotonic() - started
    assert totals(sqlite_store) == expected_totals()
    assert source.stats.stalls == 1
    assert server.cursors == [None, SENT[9]["time_us"]]
    assert 0.3 <= elapsed < 5


# -- reconnect policy and shutdown --------------------------------------------------------------


def test_reconnects_back_off_exponentially_with_jitter_then_fail_over() -> None:
    delays: list[float] = []
    with FakeJetstream(EVENTS, refuse=100) as a, FakeJetstream(EVENTS) as b:
        source = make_source(
            [a.url, b.url],
            sleeper=delays.append,
            rng=random.Random(3),
            failover_after=3,
            backoff_initial=0.5,
            backoff_max=1.5,
        )
        batch = next(source.batches())
        source.close()
    assert len(batch.lines) > 0
    assert (len(a.requests), len(b.requests)) == (3, 1)
    assert (source.stats.failures, source.stats.failovers) == (3, 1)
    assert len(delays) == 3
    for delay, base in zip(delays, [0.5, 1.0, 1.5], strict=True):  # doubling, capped at 1.5
        assert base / 2 <= delay <= base
    assert len(set(delays)) == 3  # jittered


def test_a_subscription_every_instance_refuses_is_an_error() -> None:
    with (
        FakeJetstream(EVENTS, refuse=100, refuse_status=400) as a,
        FakeJetstream(EVENTS, refuse=100, refuse_status=400) as b,
    ):
        source = make_source([a.url, b.url])
        with pytest.raises(SourceError, match="HTTP 400"):
            next(source.batches())


def test_close_from_another_thread_ends_a_waiting_read_promptly() -> None:
    batches: list[int] = []
    with FakeJetstream(EVENTS[:4]) as server:
        source = make_source([server.url], stall_timeout=60.0)

        def read() -> None:
            for batch in source.batches():
                batches.append(len(batch.lines))

        reader = threading.Thread(target=read)
        reader.start()
        assert server.connected.wait(5)
        started = time.monotonic()
        source.close()
        reader.join(5)
        elapsed = time.monotonic() - started
    assert not reader.is_alive()
    assert elapsed < 1.0
    assert sum(batches) <= 4


def test_a_cursor_older_than_jetstream_keeps_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    now = START / 1e6 + 40 * 3600
    source = BlueskySource(clock=lambda: now)
    with caplog.at_level(logging.WARNING, logger="happyhashtags.sources.bluesky"):
        source.resume(Checkpoint(START, None))
    assert "older than Jetstream keeps" in caplog.text
    caplog.clear()
    fresh = BlueskySource(clock=lambda: START / 1e6 + 3600)
    with caplog.at_level(logging.WARNING, logger="happyhashtags.sources.bluesky"):
        fresh.resume(Checkpoint(START, None))
    assert caplog.text == ""


# -- sessions and compression -------------------------------------------------------------------


def _spam_events() -> list[Event]:
    # One author posts #spam every minute for 20 minutes: within one 30-minute session.
    return [
        post_event(
            "did:plc:spammer", f"s{i:03d}", START + i * 60_000_000, "buy", hashtags=("spam",)
        )
        for i in range(20)
    ]


@pytest.mark.parametrize(("replay_seconds", "spam_count"), [(1800.0, 1), (0.0, 2)])
def test_a_restart_replays_the_session_gap_to_rebuild_sessions(
    sqlite_store: Store, replay_seconds: float, spam_count: int
) -> None:
    with FakeJetstream(_spam_events()) as server:
        run(make_source([server.url]), sqlite_store, 10, session_gap=1800)
        source = make_source([server.url], replay_seconds=replay_seconds)
        summary = run(source, sqlite_store, 10, session_gap=1800)
    assert totals(sqlite_store) == {"spam": (spam_count, 0)}
    if replay_seconds:
        assert server.cursors[-1] == START + 9 * 60_000_000 - 1_800_000_000
        assert summary.replayed == 10  # the posts up to the cursor, not counted again
        assert summary.posts == 10


def test_zstd_frames_are_decompressed_with_the_configured_dictionary(
    sqlite_store: Store,
) -> None:
    # Not Jetstream's own dictionary (which is not shipped): one made from sample events, so the
    # fake and the client share it the way Jetstream and its clients do.
    dictionary = b"".join(msgspec.json.encode(e) for e in firehose(20, start_us=0))
    with FakeJetstream(EVENTS, script=[("drop", 15)], zstd_dictionary=dictionary) as server:
        source = make_source([server.url], zstd_dictionary=dictionary)
        run(source, sqlite_store, POSTS)
    assert totals(sqlite_store) == expected_totals()
    assert all(q.get("compress") == ["true"] for q in server.requests)


# -- the command line ---------------------------------------------------------------------------


def _happyhashtags(
    url: str, database: str, limit: int, *, flag: bool = False
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HAPPYHASHTAGS_", "POSTGRES_"))}
    command = [sys.executable, "-m", "happyhashtags", "run", "--source", "bluesky"]
    command += ["--database", database, "--migrate", "--limit", str(limit), "--top", "0"]
    if flag:
        command += ["--bluesky-url", url]
    else:
        env["BLUESKY_JETSTREAM_URL"] = url
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def test_the_run_command_counts_every_post_once_and_resumes(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'cli.db'}"
    script = [("drop", 13), ("close", 17), ("drop", 2), ("drop", 21)]
    with FakeJetstream(EVENTS, script=script) as server:
        first = _happyhashtags(server.url, database, 25)
        assert first.returncode == 0, first.stderr
        assert len(server.requests) >= 3  # it went through drops
        with Store(url=database) as store:
            stored = store.read_position("bluesky")
        assert stored is not None
        assert stored.position == post_times(EVENTS)[24]
        restart = len(server.requests)
        second = _happyhashtags(server.url, database, POSTS - 25, flag=True)
        assert second.returncode == 0, second.stderr
    # The restart asks for the default session gap (30 minutes) before its cursor, to replay.
    assert server.cursors[restart] == stored.position - 1_800_000_000
    with Store(url=database) as store:
        assert totals(store) == expected_totals()
        checkpoint = store.read_position("bluesky")
    assert checkpoint is not None
    assert checkpoint.position == post_times(EVENTS)[-1]


def test_the_run_command_stops_cleanly_on_sigint_while_waiting_for_posts(
    tmp_path: Path,
) -> None:
    database = f"sqlite:///{tmp_path / 'cli.db'}"
    last = SENT[-1]["time_us"]  # the position once everything sent was counted

    def stored_position() -> int | None:
        with Store(url=database) as store:
            try:
                checkpoint = store.read_position("bluesky")
            except Exception:  # not migrated yet
                return None
        return checkpoint.position if checkpoint else None

    with FakeJetstream(EVENTS) as server:  # sends everything, then the live tail stays quiet
        env = {**os.environ, "BLUESKY_JETSTREAM_URL": server.url}
        command = [sys.executable, "-m", "happyhashtags", "run", "--source", "bluesky"]
        command += ["--database", database, "--migrate", "--top", "0", "--flush-interval", "0.1s"]
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert server.connected.wait(30)
            deadline = time.monotonic() + 20
            while stored_position() != last and time.monotonic() < deadline:
                server.connected.wait(0.1)  # polling the database for a condition
            assert stored_position() == last
            stopped = time.monotonic()
            process.send_signal(signal.SIGINT)
            process.wait(timeout=10)
            elapsed = time.monotonic() - stopped
        finally:
            process.kill()
    out, err = process.communicate()
    assert process.returncode == 0, err
    assert elapsed < 3
    assert b"interrupted" in out
    with Store(url=database) as store:
        assert totals(store) == expected_totals()
