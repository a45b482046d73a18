"""The X API v2 stream source: reconnect schedules, line splitting, and whole runs against a fake
X API server over loopback (tests/fake_x_api.py)."""

from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from fake_x_api import (
    Drop,
    End,
    FakeXApi,
    Hangup,
    KeepAlive,
    Posts,
    Raw,
    Respond,
    SplitPost,
    Stall,
    StreamError,
)
from happyhashtags.aggregate import PostCounter
from happyhashtags.cli import cli
from happyhashtags.config import load_settings
from happyhashtags.engines.local import LocalEngine, RunSummary
from happyhashtags.errors import ConfigError, SourceError
from happyhashtags.sources import open_source
from happyhashtags.sources.x_api import XApiSource, bearer_token, filtered_from_settings
from happyhashtags.sources.x_protocol import LineSplitter, ReconnectPolicy, stream_errors
from happyhashtags.storage import Store

START = 1_767_268_800.0  # 2026-01-01T12:00:00Z


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI configures the root logger (level, handler); undo that for the tests after."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.setLevel(level)
    root.handlers[:] = handlers


class FakeClock:
    """Epoch seconds that move only when something sleeps; records every wait asked for."""

    def __init__(self, start: float = START + 0.25) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def api(clock: FakeClock) -> Iterator[FakeXApi]:
    with FakeXApi(clock=clock) as server:
        yield server


def source_for(api: FakeXApi, clock: FakeClock, **kwargs: object) -> XApiSource:
    options: dict[str, object] = {"token": api.token, "base_url": api.url, "clock": clock}
    options["sleep"] = clock.sleep
    options.update(kwargs)
    return XApiSource(**options)  # type: ignore[arg-type]


def run_engine(source: XApiSource, url: str, **kwargs: object) -> tuple[RunSummary, Store]:
    store = Store(url=url)
    store.migrate()
    engine = LocalEngine(source=source, counter=PostCounter(session_gap=0), store=store, **kwargs)  # type: ignore[arg-type]
    return engine.run(), store


def assert_counted_once(store: Store, numbers: range) -> None:
    """Every post ``#p<n>`` sent is counted exactly once, as a happy post, and nothing else."""
    counts = store.counts()
    assert sorted(tag for _, tag in counts) == sorted(f"p{n}" for n in numbers)
    assert set(counts.values()) == {(1, 1)}


# -- the reconnect policy, without I/O --------------------------------------------------------


def test_network_errors_back_off_linearly_by_a_quarter_second_up_to_16_s() -> None:
    policy = ReconnectPolicy()
    waits = [policy.after_network_error() for _ in range(70)]
    assert waits[:4] == [0.25, 0.5, 0.75, 1.0]
    assert waits[63] == 16.0
    assert max(waits) == 16.0 == waits[-1]


def test_http_errors_back_off_exponentially_from_5_s_up_to_320_s() -> None:
    policy = ReconnectPolicy()
    assert [policy.after_http_error() for _ in range(9)] == [5, 10, 20, 40, 80, 160, 320, 320, 320]


def test_rate_limits_wait_until_the_reset_time_never_sooner() -> None:
    policy = ReconnectPolicy()
    now = START + 0.7
    assert policy.after_rate_limit(reset_at=START + 37, now=now) >= 37 - 0.7
    assert policy.after_rate_limit(reset_at=START + 900, now=now) >= 900 - 0.7


def test_rate_limits_without_a_reset_time_back_off_exponentially_from_60_s() -> None:
    policy = ReconnectPolicy()
    waits = [policy.after_rate_limit(reset_at=None, now=START) for _ in range(6)]
    assert waits == [60, 120, 240, 480, 960, 960]
    # A reset time already past says nothing useful: the exponential schedule goes on.
    assert policy.after_rate_limit(reset_at=START - 5, now=START) == 960


def test_a_drop_reconnects_at_once_then_backs_off_until_data_arrives() -> None:
    policy = ReconnectPolicy()
    assert policy.after_drop() == 0
    assert [policy.after_drop(), policy.after_drop()] == [0.25, 0.5]
    assert policy.after_http_error() == 5
    policy.reset()
    assert policy.after_drop() == 0
    assert policy.after_http_error() == 5
    assert policy.after_network_error() == 0.25


# -- line splitting ---------------------------------------------------------------------------

LINES = st.lists(
    st.one_of(
        st.just(""),
        st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), min_size=1),
    ),
    max_size=12,
)


@given(lines=LINES, cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=20))
def test_lines_come_out_whole_however_the_chunks_are_cut(lines: list[str], cuts: list[int]) -> None:
    stream = b"".join(line.encode() + b"\r\n" for line in lines)
    points = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    splitter = LineSplitter()
    out: list[bytes] = []
    for start, end in itertools.pairwise(points):
        out += splitter.feed(stream[start:end])
    assert out == [line.encode() for line in lines]
    assert splitter.pending == b""


def test_a_line_cut_inside_a_utf8_character_stays_bytes_until_complete() -> None:
    splitter = LineSplitter()
    data = "東京 ☕".encode()
    assert splitter.feed(data[:1]) == []
    assert splitter.feed(data[1:4]) == []
    assert splitter.feed(data[4:] + b"\r") == []
    assert splitter.pending == data + b"\r"
    assert splitter.feed(b"\n\r\n") == [data, b""]


def test_in_stream_errors_are_told_apart_from_posts() -> None:
    disconnect = (
        b'{"errors":[{"title":"operational-disconnect","disconnect_type":"OperationalDisconnect",'
        b'"detail":"This stream has been disconnected for operational reasons.",'
        b'"type":"https://api.twitter.com/2/problems/operational-disconnect"}]}'
    )
    errors = stream_errors(disconnect)
    assert errors is not None
    assert errors[0].describe().startswith("operational-disconnect: This")
    post_with_partial_errors = b'{"data":{"id":"1","text":"x"},"errors":[{"title":"Not Found"}]}'
    assert stream_errors(post_with_partial_errors) is None
    hashtag_named_errors = (
        b'{"data":{"id":"1","text":"#errors","entities":{"hashtags":[{"tag":"errors"}]}}}'
    )
    assert stream_errors(hashtag_named_errors) is None
    assert stream_errors(b'{"errors": [') is None


# -- whole runs against the fake server, on the fake clock ------------------------------------


def test_every_post_is_counted_once_across_drops_errors_and_rate_limits(
    api: FakeXApi, clock: FakeClock, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api.script(
        "x-filtered",
        [Respond(503)],  # 5 s
        [Respond(503)],  # 10 s
        [Hangup()],  # 0.25 s
        [Hangup()],  # 0.5 s
        [Respond(429, reset_in=37)],  # until x-rate-limit-reset
        [KeepAlive(2), Posts(3), SplitPost(), Posts(4, packed=True), Raw(b'{"data":{"id'), Drop()],
        [Posts(2), StreamError()],  # data came, so: at once
        [Respond(429, no_reset=True)],  # TooManyConnections without a reset time: 60 s
        [Respond(429, no_reset=True)],  # 120 s
        [Posts(1), KeepAlive(), Stall(10)],  # stalls (1 s, real time): at once
        [Posts(3), End()],  # at once
        [Respond(503)],  # back-offs started over: 5 s
        [Posts(2)],  # then keep-alives until the limit stops the run
    )
    source = source_for(api, clock, stall_timeout=1.0)
    summary, store = run_engine(source, sqlite_url, limit=16)

    assert summary.posts == summary.lines == 16
    assert summary.duplicates == 0
    # The server notes a post once its last byte is out: the client may have read it first.
    api.wait_for(lambda: len(api.sent_ids) >= 16)
    assert len(api.sent_ids) == len(set(api.sent_ids)) == 16
    assert_counted_once(store, range(1, 17))
    assert store.dead_letters() == []
    sleeps = clock.sleeps
    assert sleeps[:4] == [5.0, 10.0, 0.25, 0.5]
    rate_limited, after = api.stream_requests()[4:6]
    reset_at = int(rate_limited.at + 37)
    assert reset_at - rate_limited.at <= sleeps[4] <= reset_at - rate_limited.at + 1.5
    assert after.at >= reset_at
    assert sleeps[5:] == [0, 0, 60, 120, 0, 0, 5]
    assert len(api.stream_requests()) == 13
    messages = caplog.text
    assert "reconnecting in 5 s because the X API answered 503 Service Unavailable" in messages
    assert "TooManyConnections" in messages
    assert "stale" in messages
    assert "operational-disconnect" in messages
    assert "stalled: no data or keep-alive for 1 s" in messages
    assert api.token not in messages


def test_the_request_carries_token_fields_and_user_agent(api: FakeXApi, clock: FakeClock) -> None:
    api.script("x-filtered", [Posts(1)])
    source = source_for(api, clock, tweet_fields="created_at,entities", expansions="author_id")
    batch = next(source.batches())
    assert len(batch.lines) == 1
    assert batch.origin == "x-filtered"
    assert batch.received_at == clock()
    request = api.stream_requests()[0]
    assert request.authorized
    assert request.query == {"tweet.fields": ["created_at,entities"], "expansions": ["author_id"]}
    assert request.user_agent.startswith("happyhashtags/")
    assert api.token not in repr(source)
    source.close()


def test_the_sample_stream_reads_its_own_endpoint(api: FakeXApi, clock: FakeClock) -> None:
    api.script("x-sample", [Posts(2, packed=True)])
    source = source_for(api, clock, stream="x-sample")
    assert len(next(source.batches()).lines) == 2
    assert [r.path for r in api.requests] == ["/2/tweets/sample/stream"]
    assert source.name == "x-sample"
    assert source.format == "x"


def test_a_reconnect_that_fails_again_before_data_backs_off(
    api: FakeXApi, clock: FakeClock
) -> None:
    api.script("x-filtered", [End()], [End()], [Hangup()], [Posts(1)])
    batch = next(source_for(api, clock).batches())
    assert len(batch.lines) == 1
    assert clock.sleeps == [0, 0.25, 0.5]


def test_a_bad_token_stops_at_once_saying_it_was_rejected(
    api: FakeXApi, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    source = source_for(api, clock, token="not-the-token-9f8e7d")
    with pytest.raises(SourceError, match="rejected the bearer token") as raised:
        next(source.batches())
    assert "X_BEARER_TOKEN" in str(raised.value)
    assert "not-the-token-9f8e7d" not in str(raised.value) + caplog.text
    assert clock.sleeps == []
    assert len(api.requests) == 1


@pytest.mark.parametrize(
    ("stream", "status", "expected"),
    [
        ("x-sample", 403, "Enterprise access"),
        ("x-filtered", 404, "check X_API_BASE_URL"),
    ],
)
def test_non_retryable_answers_stop_with_what_to_fix(
    api: FakeXApi, clock: FakeClock, stream: str, status: int, expected: str
) -> None:
    api.script(stream, [Respond(status)])
    with pytest.raises(SourceError, match=expected):
        next(source_for(api, clock, stream=stream).batches())
    assert clock.sleeps == []


def test_a_filtered_stream_without_rules_says_how_to_add_them(clock: FakeClock) -> None:
    with FakeXApi(clock=clock, rules=()) as api, pytest.raises(SourceError) as raised:
        next(source_for(api, clock).batches())
    assert "has no rules" in str(raised.value)
    assert "x-rules add" in str(raised.value)


def test_unknown_fields_are_refused_with_the_servers_details(
    api: FakeXApi, clock: FakeClock
) -> None:
    source = source_for(api, clock, tweet_fields="created_at,moods")
    with pytest.raises(SourceError, match=r"x_tweet_fields.*|.*\[moods\]") as raised:
        next(source.batches())
    assert "[moods]" in str(raised.value)
    assert "x_tweet_fields" in str(raised.value)


def test_a_usage_cap_stops_instead_of_waiting(api: FakeXApi, clock: FakeClock) -> None:
    capped = {
        "title": "UsageCapExceeded",
        "detail": "Usage cap exceeded: Monthly product cap",
        "type": "https://api.twitter.com/2/problems/usage-capped",
    }
    api.script("x-filtered", [Respond(429, body=capped)])
    with pytest.raises(SourceError, match="usage cap"):
        next(source_for(api, clock).batches())


def test_status_lines_report_posts_per_second(
    api: FakeXApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="happyhashtags.sources.x_api")
    ticks = iter(range(0, 10_000, 10))
    api.script("x-filtered", [Posts(8)])
    source = XApiSource(token=api.token, base_url=api.url, clock=lambda: float(next(ticks)))
    lines = 0
    for batch in source.batches():
        lines += len(batch.lines)
        if lines >= 8:
            break
    source.close()
    assert "x-filtered: connected to " in caplog.text
    assert "posts/s)" in caplog.text


# -- settings ------------------------------------------------------------------------------------


def test_the_token_comes_from_the_environment_or_a_file(tmp_path: Path) -> None:
    assert bearer_token(load_settings(environ={"X_BEARER_TOKEN": "env-token"})) == "env-token"
    assert bearer_token(load_settings(environ={"API_BEARER_TOKEN": "seed-token"})) == "seed-token"
    token_file = tmp_path / "token"
    token_file.write_text("file-token\n")
    environ = {"X_BEARER_TOKEN": "env-token", "HAPPYHASHTAGS_X_TOKEN_FILE": str(token_file)}
    assert bearer_token(load_settings(environ=environ)) == "file-token"


def test_a_missing_or_broken_token_is_a_config_error_that_never_shows_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"X_BEARER_TOKEN.*--x-token-file"):
        bearer_token(load_settings(environ={}))
    with pytest.raises(ConfigError, match="cannot read the X bearer token file"):
        bearer_token(load_settings({"x_token_file": tmp_path / "missing"}))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        bearer_token(load_settings({"x_token_file": tmp_path / "empty"}))
    with pytest.raises(ConfigError, match="line breaks") as raised:
        bearer_token(load_settings(environ={"X_BEARER_TOKEN": "secret-part one\nsecret-two"}))
    assert "secret" not in str(raised.value)


def test_the_registry_builds_the_source_from_settings() -> None:
    settings = load_settings(
        environ={"X_BEARER_TOKEN": "tok-123", "X_API_BASE_URL": "http://127.0.0.1:9/"}
    )
    source = open_source(settings, "x-filtered")
    assert isinstance(source, XApiSource)
    assert source.url == "http://127.0.0.1:9/2/tweets/search/stream"
    assert source.params["tweet.fields"] == settings.x_tweet_fields
    assert "tok-123" not in repr(source)
    bad = load_settings(environ={"X_BEARER_TOKEN": "t", "X_API_BASE_URL": "api.x.com"})
    with pytest.raises(ConfigError, match="X_API_BASE_URL"):
        filtered_from_settings(bad, "x-filtered")


# -- stopping ------------------------------------------------------------------------------------


def test_close_ends_a_reconnect_wait_at_once(api: FakeXApi) -> None:
    api.script("x-filtered", [Respond(503)])  # a 5 s wait on the default (event) sleeper
    source = XApiSource(token=api.token, base_url=api.url)
    done = threading.Event()

    def read() -> None:
        for _ in source.batches():
            pass
        done.set()

    started = time.monotonic()
    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    api.wait_for(lambda: len(api.requests) == 1)
    source.close()
    assert done.wait(2.0)
    assert time.monotonic() - started < 3.0


def test_a_stop_during_a_blocked_read_flushes_every_post_received(sqlite_url: str) -> None:
    with FakeXApi(idle_keepalive=60) as api:  # after the posts: silence, so the read blocks
        api.script("x-filtered", [Posts(6)])
        source = XApiSource(token=api.token, base_url=api.url)
        store = Store(url=sqlite_url)
        store.migrate()
        received = threading.Event()

        def progress(_lines: int, posts: int) -> None:
            if posts >= 6:
                received.set()

        engine = LocalEngine(
            source=source,
            counter=PostCounter(session_gap=0),
            store=store,
            flush_posts=1_000_000,
            flush_interval=3600,
            progress=progress,
        )
        thread = threading.Thread(target=engine.run, daemon=True)
        thread.start()
        assert received.wait(10)
        assert store.counts() == {}  # nothing written yet
        started = time.monotonic()
        engine.request_stop()
        thread.join(5)
        assert not thread.is_alive()
        assert time.monotonic() - started < 2.0
    assert_counted_once(store, range(1, 7))


def test_a_quiet_stream_is_flushed_on_its_keep_alives(sqlite_url: str) -> None:
    # After the posts only keep-alives come (every 0.1 s here, 20 s from X): the counts must
    # reach the database within the flush interval, not when the next post comes.
    with FakeXApi(idle_keepalive=0.1) as api:
        api.script("x-filtered", [Posts(6)])
        store = Store(url=sqlite_url)
        store.migrate()
        engine = LocalEngine(
            source=XApiSource(token=api.token, base_url=api.url),
            counter=PostCounter(session_gap=0),
            store=store,
            flush_posts=1_000_000,
            flush_interval=0.3,
        )
        thread = threading.Thread(target=engine.run, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 10
            while sum(tweets for tweets, _ in store.counts().values()) < 6:
                assert time.monotonic() < deadline, "not flushed while the stream was quiet"
                time.sleep(0.1)
            assert thread.is_alive()  # still connected: flushed by time, not by the end
        finally:
            engine.request_stop()
            thread.join(5)
    assert_counted_once(store, range(1, 7))


# -- the command line ----------------------------------------------------------------------------


def test_run_counts_exactly_the_posts_sent_and_never_prints_the_token(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'counts.db'}"
    with FakeXApi() as api:
        api.script(
            "x-filtered",
            [Posts(2), SplitPost(), Drop()],
            [Posts(2, packed=True), StreamError()],
            [Hangup()],  # 0.25 s, real time
            [KeepAlive(), Posts(3)],
        )
        env = {"X_BEARER_TOKEN": api.token, "X_API_BASE_URL": api.url}
        args = ["--log-level", "debug", "run", "--source", "x-filtered", "--limit", "8"]
        args += ["--database", url, "--migrate", "--session-gap", "0"]
        result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 0, result.output
    assert api.token not in result.output
    with Store(url=url) as store:
        assert_counted_once(store, range(1, 9))


def test_run_with_a_bad_token_exits_at_once_saying_it_was_rejected(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("wrong-token-abc123\n")
    with FakeXApi() as api:
        args = ["run", "--source", "x-filtered", "--x-token-file", str(token_file)]
        args += ["--database", f"sqlite:///{tmp_path / 'c.db'}", "--migrate"]
        started = time.monotonic()
        result = CliRunner().invoke(cli, args, env={"X_API_BASE_URL": api.url})
    assert result.exit_code == 1
    assert "rejected the bearer token" in result.output
    assert "wrong-token-abc123" not in result.output
    assert time.monotonic() - started < 5


def test_sigterm_closes_the_stream_and_exits_cleanly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'counts.db'}"
    with FakeXApi(idle_keepalive=60) as api:
        api.script("x-filtered", [Posts(5)])
        env = {**os.environ, "X_BEARER_TOKEN": api.token, "X_API_BASE_URL": api.url}
        args = [sys.executable, "-m", "happyhashtags", "run", "--source", "x-filtered"]
        args += ["--database", url, "--migrate", "--flush-interval", "0", "--top", "0"]
        process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and process.poll() is None:
                try:
                    with Store(url=url) as store:
                        if len(store.counts()) == 5:
                            break
                except Exception:
                    pass  # the schema may not exist yet
                time.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=10)
        finally:
            process.kill()
    assert process.returncode == 0, err.decode()
    assert b"interrupted" in out  # the summary says so; the counts are checked below
    assert api.token.encode() not in out + err
    with Store(url=url) as store:
        assert_counted_once(store, range(1, 6))


# -- real time -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_stalled_stream_is_dropped_after_the_stall_timeout_and_reopened(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="happyhashtags.sources.x_api")
    with FakeXApi() as api:
        api.script(
            "x-filtered",
            [KeepAlive(5, every=0.4), Posts(2), Stall(30)],  # keep-alives keep it open 1.6 s
            [Posts(3)],
        )
        source = XApiSource(token=api.token, base_url=api.url, stall_timeout=1.0)
        started = time.monotonic()
        lines = 0
        for batch in source.batches():
            lines += len(batch.lines)
            if lines == 5:
                break
        elapsed = time.monotonic() - started
        source.close()
        assert len(api.stream_requests()) == 2
    assert 2.6 <= elapsed < 6
    assert "stalled: no data or keep-alive for 1 s" in caplog.text
