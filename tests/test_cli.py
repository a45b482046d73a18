"""The command line end to end: the whole pipeline against the independent reference on SQLite and
Postgres, help, output formats, settings, errors, and a clean stop on SIGTERM."""

from __future__ import annotations

import array
import contextlib
import csv
import fcntl
import io
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import termios
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import click
import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from happyhashtags.cli import check_workers, cli
from happyhashtags.config import Settings
from happyhashtags.sources.demo import generate_messages
from happyhashtags.storage import Store
from reference import Reference, count_reference, crafted_stream
from services import shared_file

PASSWORD = "Pw-7c1e-do-not-print"
Cells = dict[tuple[datetime, str], tuple[int, int]]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No settings leak in from the environment, and the default database lands in tmp_path."""
    for name in list(os.environ):
        if name.startswith(("HAPPYHASHTAGS_", "POSTGRES_")) or name in (
            "X_BEARER_TOKEN", "API_BEARER_TOKEN", "BLUESKY_JETSTREAM_URL",
        ):  # fmt: skip
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def _invoke(
    args: list[str], env: dict[str, str] | None = None, stdin: bytes | None = None
) -> Result:
    result = CliRunner().invoke(cli, args, env=env, input=stdin, catch_exceptions=True)
    # Never a traceback: exits are SystemExit (or a clean return).
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    return result


# -- the mixed stream ---------------------------------------------------------------------------

NUL_TAG_LINE = json.dumps(
    {
        "data": {
            "id": "424242",
            "text": "odd",
            "created_at": "2024-05-01T10:00:00Z",
            "entities": {"hashtags": [{"tag": "Nul\u0000Tag"}]},
        }
    }
).encode()


def mixed_lines(*, timeless: bool = True, ids: int | None = None) -> list[bytes]:
    """Both fixture files, demo messages (with spammers) and crafted lines, interleaved, with
    blank, malformed and notice lines and repeated posts.

    The crafted lines draw ids from a small pool, so one id may come with other contents (even
    another author); `ids` widens the pool so that only whole lines repeat, as in real streams.
    """
    fixtures: list[bytes] = (
        shared_file("fixtures", "x-api-v1.1-statuses.jsonl").read_bytes().splitlines()
    )
    if timeless:
        fixtures += (
            shared_file("fixtures", "x-api-v2-default-fields.jsonl").read_bytes().splitlines()
        )
    demo = list(generate_messages(1500, seed=3))
    crafted = crafted_stream(31, 1200, authors=6, timeless=timeless, ids=ids)
    rng = random.Random(99)
    lines = fixtures + demo + crafted + [NUL_TAG_LINE, b"", b"{}", b"[]"]
    rng.shuffle(lines)
    # Redelivered posts: the same lines again, later.
    return lines + rng.sample(fixtures, 10) + rng.sample(demo, 20)


def _stored_key(tag: str) -> str:
    # PostgreSQL text cannot hold NUL: the pipeline keys such a tag with U+FFFD instead.
    return tag.replace("\x00", "\ufffd")


def _collapse_now(cells: Cells, since: float) -> dict[tuple[object, str], tuple[int, int]]:
    """Posts without created_at count at read time: fold every bucket from `since` on into one
    "now" bucket, so a run that crosses a bucket boundary still compares exactly."""
    out: dict[tuple[object, str], tuple[int, int]] = {}
    for (bucket, tag), (t, h) in cells.items():
        key = ("now" if bucket.timestamp() >= since else bucket, _stored_key(tag))
        old = out.get(key, (0, 0))
        out[key] = (old[0] + t, old[1] + h)
    return out


def _summary(output: str) -> dict[str, object]:
    match = re.search(
        r"posts ([\d,]+); counted ([\d,]+); duplicates ([\d,]+); skipped: (.*?); "
        r"dead letters ([\d,]+)",
        output,
    )
    assert match, output
    posts, counted, duplicates, skipped, dead = match.groups()
    reasons: Counter[str] = Counter()
    if skipped != "none":
        for part in skipped.split(", "):
            reason, n = part.rsplit(" ", 1)
            reasons[reason] = int(n.replace(",", ""))

    def number(text: str) -> int:
        return int(text.replace(",", ""))

    return {
        "posts": number(posts),
        "counted": number(counted),
        "duplicates": number(duplicates),
        "skipped": reasons,
        "dead": number(dead),
    }


def _check_summary(output: str, reference: Reference) -> None:
    summary = _summary(output)
    assert summary["posts"] == reference.posts + reference.duplicates + reference.retweets_skipped
    assert summary["duplicates"] == reference.duplicates
    # "{}" (the reference's "other") is dead-lettered by the pipeline: see the report.
    assert summary["dead"] == reference.dead_total + reference.skipped["other"]
    skipped = summary["skipped"]
    assert isinstance(skipped, Counter)
    assert skipped["blank"] == reference.blank
    for kind, n in reference.skipped.items():
        if kind != "other":
            assert skipped[kind] == n, kind
    notices = {"blank", "delete", "limit", "errors", "scrub_geo", "status_withheld"}
    # Every bad line is counted under its reason ("{}" and "[]" are bad lines too).
    bad = sum(n for reason, n in skipped.items() if reason not in notices)
    assert bad == reference.dead_total + reference.skipped["other"]


def _dead_letter_count(url: str) -> int:
    with Store(url=url) as store, store.engine.connect() as connection:
        return int(connection.execute(sa.text("SELECT COUNT(*) FROM dead_letters")).scalar_one())


def test_session_gap_0_counts_exactly_like_the_reference(tmp_path: Path, database_url: str) -> None:
    lines = mixed_lines()
    path = tmp_path / "mixed.txt"  # gzip inside, whatever the name says
    import gzip

    path.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    before = time.time()
    result = _invoke(
        ["run", "--source", str(path), "--database", database_url, "--migrate",
         "--session-gap", "0", "--top", "3"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    reference = count_reference(lines, session_gap=0, received_at=before)
    with Store(url=database_url) as store:
        stored = store.counts()
    assert len(stored) > 300
    assert _collapse_now(stored, before - before % 3600) == _collapse_now(
        reference.counts, before - before % 3600
    )
    _check_summary(result.output, reference)
    # "{}" is the one unrecognized object: the pipeline dead-letters it (see the report).
    assert _dead_letter_count(database_url) == reference.dead_total + reference.skipped["other"]
    assert "Happiest hashtags" in result.output


def test_default_settings_with_sessions_on_the_demo_stream_with_spammers(
    database_url: str,
) -> None:
    env = {"HAPPYHASHTAGS_DEMO_COUNT": "4000", "HAPPYHASHTAGS_DEMO_SEED": "17"}
    result = _invoke(["run", "--database", database_url, "--migrate", "--top", "0"], env=env)
    assert result.exit_code == 0, result.output
    lines = list(generate_messages(4000, seed=17))
    reference = count_reference(lines, session_gap=1800.0)
    plain = count_reference(lines, session_gap=0)
    with Store(url=database_url) as store:
        stored = store.counts()
    assert stored == reference.counts
    # The spammers' repeats are what sessions remove.
    assert sum(t for t, _ in stored.values()) < sum(t for t, _ in plain.counts.values())


def test_options_change_the_counts_like_the_reference(tmp_path: Path, sqlite_url: str) -> None:
    lines = mixed_lines(timeless=False)
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines))
    result = _invoke(
        ["run", "-s", str(path), "--database", sqlite_url, "--migrate", "--top", "0",
         "--bucket", "15m", "--no-retweets", "--happy", "\U0001f44d", "--happy", "\u263a\ufe0f",
         "--flush-posts", "97"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    reference = count_reference(
        lines, bucket_seconds=900, markers=["\U0001f44d", "\u263a\ufe0f"], session_gap=1800.0,
        retweets=False,
    )  # fmt: skip
    with Store(url=sqlite_url) as store:
        assert store.counts() == {(b, _stored_key(t)): v for (b, t), v in reference.counts.items()}
    _check_summary(result.output, reference)


def test_several_workers_count_the_same(tmp_path: Path, sqlite_url: str) -> None:
    # Workers split posts by author: a repeated id must be a repeated post (as it is in X
    # streams), or its copies may meet different workers' dedupe memories.
    lines = mixed_lines(timeless=False, ids=10**9)
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines))
    result = _invoke(
        ["run", "-s", str(path), "--database", sqlite_url, "--migrate", "--top", "0",
         "--workers", "2", "--flush-posts", "500"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    reference = count_reference(lines, session_gap=1800.0)
    with Store(url=sqlite_url) as store:
        assert store.counts() == {(b, _stored_key(t)): v for (b, t), v in reference.counts.items()}


@pytest.mark.parametrize(
    ("workers", "cpus", "warned"), [(2, 2, True), (4, 2, True), (2, 8, False), (1, 1, False)]
)
def test_as_many_workers_as_cpus_or_more_are_warned_about(
    workers: int, cpus: int, warned: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="happyhashtags"):
        check_workers(Settings(workers=workers), cpus=cpus)
    assert ("expect little or no gain" in caplog.text) is warned


def test_a_real_process_reading_stdin_with_sessions(database_url: str) -> None:
    lines = mixed_lines(timeless=False)
    process = subprocess.run(
        [sys.executable, "-m", "happyhashtags", "run", "--source", "-", "--database",
         database_url, "--migrate", "--top", "2"],
        input=b"\n".join(lines) + b"\n",
        capture_output=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    output = (process.stdout + process.stderr).decode()
    assert process.returncode == 0, output
    assert "Traceback" not in output
    reference = count_reference(lines, session_gap=1800.0)
    with Store(url=database_url) as store:
        assert store.counts() == {(b, _stored_key(t)): v for (b, t), v in reference.counts.items()}
    _check_summary(process.stdout.decode(), reference)
    assert _dead_letter_count(database_url) == reference.dead_total + reference.skipped["other"]


# -- help, formats, settings ---------------------------------------------------------------------


def _commands() -> list[tuple[list[str], click.Command]]:
    found: list[tuple[list[str], click.Command]] = []

    def walk(command: click.Command, path: list[str]) -> None:
        found.append((path, command))
        if isinstance(command, click.Group):
            for name, sub in sorted(command.commands.items()):
                walk(sub, [*path, name])

    walk(cli, [])
    return found


def test_help_for_every_command_names_every_option() -> None:
    commands = _commands()
    assert {"run", "top", "migrate"} <= {p[0] for p, _ in commands if p}
    for path, command in commands:
        result = _invoke([*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output
        assert command.help or command.short_help, path
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                assert param.opts[0] in result.output, (path, param.opts)


def test_every_option_has_help_text() -> None:
    missing = [
        (path, param.opts[0])
        for path, command in _commands()
        for param in command.params
        if isinstance(param, click.Option) and not param.hidden and not param.help
    ]
    assert missing == []


def _seeded(url: str) -> None:
    with Store(url=url) as store:
        store.migrate()
        base = datetime(2024, 5, 1, 10, tzinfo=UTC).timestamp()
        store.write(
            {
                (int(base), "sunny"): [10, 9],
                (int(base), "café"): [4, 2],
                (int(base) + 3600, "sunny"): [5, 1],
                (int(base) + 7200, "rainy"): [50, 3],
            }
        )


def test_top_as_json_csv_and_table(sqlite_url: str) -> None:
    _seeded(sqlite_url)
    as_json = _invoke(["top", "--database", sqlite_url, "--format", "json"])
    rows = json.loads(as_json.output)
    assert [(r["rank"], r["hashtag"], r["happy_tweets"], r["tweets"]) for r in rows] == [
        (1, "sunny", 10, 15), (2, "rainy", 3, 50), (3, "café", 2, 4),
    ]  # fmt: skip
    assert rows[0]["happy_ratio"] == pytest.approx(10 / 15)
    as_csv = _invoke(["top", "--database", sqlite_url, "--format", "csv", "--rank", "ratio"])
    table = list(csv.DictReader(io.StringIO(as_csv.output)))
    assert [r["hashtag"] for r in table] == ["sunny", "café", "rainy"]
    assert float(table[0]["happy_score"]) < float(table[0]["happy_ratio"])
    as_table = _invoke(["top", "--database", sqlite_url, "--limit", "1"])
    assert "#sunny" in as_table.output
    assert "rainy" not in as_table.output
    ranged = _invoke(
        ["top", "--database", sqlite_url, "--format", "json", "--since", "2024-05-01T11:00Z",
         "--until", "2024-05-01T12:00:00+00:00"]
    )  # fmt: skip
    assert [r["hashtag"] for r in json.loads(ranged.output)] == ["sunny"]
    empty = _invoke(["top", "--database", sqlite_url, "--since", "2030-01-01"])
    assert "no hashtags" in empty.output
    few = _invoke(["top", "--database", sqlite_url, "--format", "json", "--min-tweets", "20"])
    assert [r["hashtag"] for r in json.loads(few.output)] == ["rainy"]


def _bucket_setting(url: str) -> str:
    with Store(url=url) as store, store.engine.connect() as connection:
        query = sa.text("SELECT value FROM pipeline_settings WHERE key = 'bucket'")
        return str(connection.execute(query).scalar_one())


def test_settings_precedence_flags_env_file(tmp_path: Path) -> None:
    data = tmp_path / "one.jsonl"
    data.write_bytes(
        b'{"data": {"id": "1", "text": "#a yay", "created_at": "2024-05-01T10:20:00Z"}}\n'
    )
    config = tmp_path / "hh.toml"
    config.write_text('[happyhashtags]\nbucket = "1d"\nhappy = ["yay"]\n', encoding="utf-8")
    base = ["run", "-s", str(data), "--migrate", "--top", "0", "--config", str(config)]
    env = {"HAPPYHASHTAGS_BUCKET": "15m"}
    cases = [
        ("flag.db", ["--bucket", "1h"], env, "1h"),
        ("env.db", [], env, "15m"),
        ("file.db", [], {}, "1d"),
    ]
    for name, flags, environment, bucket in cases:
        url = f"sqlite:///{tmp_path / name}"
        result = _invoke([*base, "--database", url, *flags], env=environment)
        assert result.exit_code == 0, result.output
        assert _bucket_setting(url) == bucket
        with Store(url=url) as store:
            ((start, tag), (tweets, happy)), *_ = store.counts().items()
        assert (tag, tweets, happy) == ("a", 1, 1)  # the file's happy marker applies
        assert start.timestamp() % {"1h": 3600, "15m": 900, "1d": 86400}[bucket] == 0
    # The config file can come from the environment too, and the database URL from it.
    config.write_text(f'database_url = "sqlite:///{tmp_path / "cfg.db"}"\n', encoding="utf-8")
    result = _invoke(["migrate"], env={"HAPPYHASHTAGS_CONFIG": str(config)})
    assert result.exit_code == 0, result.output
    assert "cfg.db" in result.output
    # A database made with 1h buckets refuses 15m ones.
    mixed = _invoke([*base, "--database", f"sqlite:///{tmp_path / 'flag.db'}"], env=env)
    assert mixed.exit_code == 2
    assert "bucket" in mixed.output


def test_postgres_variables_and_a_password_that_is_never_printed(postgres_url: str) -> None:
    name = postgres_url.rsplit("/", 1)[1]
    env = {
        "POSTGRES_USER": "postgres",
        "POSTGRES_PASSWORD": PASSWORD,  # trust auth: accepted and ignored by the server
        "POSTGRES_HOST": "127.0.0.1",
        "POSTGRES_PORT": "5432",
        "POSTGRES_DB": name,
        "HAPPYHASHTAGS_DEMO_COUNT": "300",
    }
    outputs = []
    for args in (["migrate"], ["run", "--top", "3"], ["top", "--format", "csv"]):
        result = _invoke(["--log-level", "debug", *args], env=env)
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    assert name in outputs[0]
    assert all(PASSWORD not in out for out in outputs)
    with Store(url=postgres_url) as store:
        assert store.counts()
    flag_url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/{name}"
    result = _invoke(["migrate", "--database", flag_url])
    assert "already at" in result.output
    assert PASSWORD not in result.output


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["top", "--database", "not a url"], 2, "invalid database URL"),
        (["top", "--database", "mysql://u@h/d"], 2, "unsupported"),
        (["top", "--database", f"postgresql://u:{PASSWORD}@127.0.0.1:1/x"], 1, "cannot connect"),
        (["run", "--database", f"postgresql://u:{PASSWORD}@127.0.0.1:1/x"], 1, "cannot connect"),
        (["run", "--migrate", "--source", "missing-file.jsonl"], 1, "no such file"),
        (["run", "--migrate", "--source", "nothing/*.jsonl"], 1, "no files match"),
        (["run", "--bucket", "soon"], 2, "invalid duration"),
        (["run", "--session-gap", "-5m"], 2, "invalid duration"),
        (["run", "--flush-interval", "often"], 2, "invalid duration"),
        (["run"], 1, "not migrated"),
        (["top"], 1, "not migrated"),
        (["top", "--since", "last tuesday"], 2, "ISO 8601"),
        (["migrate", "--revision", "nope"], 2, "unknown migration revision"),
    ],
)
def test_errors_are_clear_without_traceback_or_secrets(
    args: list[str], code: int, words: str
) -> None:
    if args[0] == "top" and "--since" in args:
        _invoke(["migrate"])
    result = _invoke(args)
    assert result.exit_code == code, result.output
    text = " ".join(result.output.split())  # rich wraps long lines at 80 columns
    assert text.startswith("error: ") or "\nerror: " in result.output, result.output
    assert words in text
    assert PASSWORD not in result.output


def test_errors_from_a_real_process_and_its_exit_code(tmp_path: Path) -> None:
    url = f"postgresql://someone:{PASSWORD}@127.0.0.1:1/db"
    process = subprocess.run(
        [sys.executable, "-m", "happyhashtags", "top", "--database", url],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert process.returncode == 1
    assert process.stdout == b""
    error = process.stderr.decode()
    assert error.startswith("error: cannot connect")
    assert "Traceback" not in error
    assert PASSWORD not in error


def test_a_long_error_is_still_one_line(tmp_path: Path) -> None:
    deep = tmp_path / ("a-rather-long-directory-name-" * 3)
    result = _invoke(["top", "--database", f"sqlite:///{deep / 'counts.db'}"])
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1, result.output


# -- SIGTERM ---------------------------------------------------------------------------------------


def _blocked_reading_stdin(pid: int) -> bool:
    """Whether the process's main thread waits for stdin: in read(0, ...), or in a select() on
    fd 0 alone (nfds 1) (from /proc; Linux)."""
    # (read, pselect6) system call numbers.
    numbers = {"x86_64": ("0", "270"), "aarch64": ("63", "72")}
    expected = numbers.get(os.uname().machine)
    try:
        fields = Path(f"/proc/{pid}/syscall").read_text().split()
    except OSError:  # not allowed to look (ptrace restrictions): ask where it sleeps instead
        fields = []
    if expected is not None and fields:
        return fields[:2] in ([expected[0], "0x0"], [expected[1], "0x1"])
    try:
        wchan = Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return False
    return "pipe" in wchan or "poll" in wchan


def _unread(fd: int) -> int:
    buffer = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, buffer)
    return buffer[0]


def _run_reading_stdin(url: str, workers: int, *, flush_interval: str) -> subprocess.Popen[bytes]:
    """`happyhashtags run --source -` in a real process, sessions off, stdin a pipe."""
    return subprocess.Popen(
        [sys.executable, "-m", "happyhashtags", "run", "--source", "-", "--database", url,
         "--migrate", "--flush-interval", flush_interval, "--session-gap", "0", "--top", "0",
         "--workers", str(workers)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_flushes_what_was_read_and_exits_cleanly(tmp_path: Path, workers: int) -> None:
    url = f"sqlite:///{tmp_path / 'counts.db'}"
    process = _run_reading_stdin(url, workers, flush_interval="1h")
    assert process.stdin is not None
    try:
        # Ids from a wide range: copies of one post by different authors (which workers, split
        # by author, cannot recognise) would need a repeated id.
        lines = crafted_stream(77, 300, timeless=False, ids=10**9)
        process.stdin.write(b"\n".join(lines) + b"\n")
        process.stdin.flush()
        # Wait until every byte is out of the pipe and the process waits for more.
        deadline = time.monotonic() + 60
        while not (_unread(process.stdin.fileno()) == 0 and _blocked_reading_stdin(process.pid)):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the run never read its input"
            time.sleep(0.02)
        with Store(url=url) as store:
            assert store.counts() == {}  # nothing flushed before the signal
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err.decode()
    assert "interrupted" in out.decode()
    assert "Traceback" not in err.decode()
    reference = count_reference(lines, session_gap=0)
    with Store(url=url) as store:
        assert store.counts() == reference.counts
    _check_summary(out.decode(), reference)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_quiet_live_pipe_is_still_flushed_on_time(tmp_path: Path, workers: int) -> None:
    # The pipe stays open and quiet: what was read must reach the database within the flush
    # interval, not when more input (or the end) comes.
    url = f"sqlite:///{tmp_path / 'counts.db'}"
    process = _run_reading_stdin(url, workers, flush_interval="1s")
    assert process.stdin is not None
    lines = crafted_stream(78, 200, timeless=False, ids=10**9)
    reference = count_reference(lines, session_gap=0)
    try:
        process.stdin.write(b"\n".join(lines) + b"\n")
        process.stdin.flush()
        deadline = time.monotonic() + 30
        seen: dict[tuple[datetime, str], tuple[int, int]] = {}
        while seen != reference.counts:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, f"not flushed while the pipe was quiet: {seen}"
            time.sleep(0.2)
            with contextlib.suppress(Exception), Store(url=url) as store:  # mid-migration
                seen = store.counts()
        _out, err = process.communicate(timeout=60)  # closes stdin: the end of the input
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err.decode()
    with Store(url=url) as store:
        assert store.counts() == reference.counts


def test_an_impossible_sqlite_path_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    result = CliRunner().invoke(cli, ["top", "--database", f"sqlite:///{tmp_path}/a-file/x.db"])
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 1
    assert "error:" in result.output


@pytest.mark.parametrize(
    "command",
    [["run"], ["process", "-q", "nats://127.0.0.1:9/NOWHERE"]],
    ids=["run", "process"],
)
def test_a_limit_with_several_workers_is_refused_before_anything_starts(
    tmp_path: Path, command: list[str]
) -> None:
    result = _invoke(
        [*command, "--database", f"sqlite:///{tmp_path}/c.db", "--workers", "2", "--limit", "5"]
    )
    assert result.exit_code == 2
    assert "--limit counts posts in one process" in result.output
    assert not (tmp_path / "c.db").exists()
