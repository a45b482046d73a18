"""Durations, times and bucket arithmetic."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from happyhashtags.errors import ConfigError
from happyhashtags.timeutil import (
    bucket_start,
    format_duration,
    from_epoch,
    parse_duration,
    parse_time,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("30", 30.0),
        ("30s", 30.0),
        ("30m", 1800.0),
        ("1h", 3600.0),
        ("1.5h", 5400.0),
        ("1d", 86400.0),
        ("1w", 604800.0),
        ("250ms", 0.25),
        (" 5 M ", 300.0),
        ("2H", 7200.0),
        (45, 45.0),
        (0.5, 0.5),
    ],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "bad", ["", "soon", "-1s", "1e3", "1 hour", "h", "1hh", -1, float("nan"), float("inf"), True]
)
def test_bad_durations_are_config_errors_that_say_how(bad: str | float) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_duration(bad)
    assert "duration" in str(caught.value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(3600, "1h"), (1800, "30m"), (90, "90s"), (5400, "90m"), (86400, "1d"), (604800, "1w"),
     (0, "0s"), (0.25, "0.25s")],
)  # fmt: skip
def test_format_duration_is_the_shortest_exact_spelling(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


@given(st.integers(min_value=1, max_value=10**7))
def test_format_and_parse_round_trip(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


def test_buckets_align_to_multiples_since_the_epoch() -> None:
    t = datetime(2024, 5, 1, 13, 59, 59, 999000, tzinfo=UTC).timestamp()
    assert bucket_start(t, 3600) == datetime(2024, 5, 1, 13, tzinfo=UTC).timestamp()
    assert bucket_start(t + 0.001, 3600) == datetime(2024, 5, 1, 14, tzinfo=UTC).timestamp()
    assert bucket_start(t, 86400) == datetime(2024, 5, 1, tzinfo=UTC).timestamp()
    assert bucket_start(t, 900) == datetime(2024, 5, 1, 13, 45, tzinfo=UTC).timestamp()
    assert bucket_start(0.0, 3600) == 0
    assert isinstance(bucket_start(t, 3600), int)


def test_buckets_before_the_epoch_round_down() -> None:
    assert bucket_start(-0.5, 3600) == -3600
    assert bucket_start(-3600.5, 3600) == -7200
    assert bucket_start(-3600.0, 3600) == -3600


@given(st.floats(min_value=-1e10, max_value=1e10), st.sampled_from([1, 60, 900, 3600, 86400]))
def test_a_bucket_holds_its_time(t: float, size: int) -> None:
    start = bucket_start(t, size)
    assert start % size == 0
    assert start <= t < start + size
    assert start == math.floor(t / size) * size or start == math.floor(t) // size * size


def test_from_epoch_is_aware_utc() -> None:
    moment = from_epoch(1_700_000_000.5)
    assert moment.tzinfo is UTC
    assert moment == datetime(2023, 11, 14, 22, 13, 20, 500000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
        ("2024-05-01T13:00:00Z", datetime(2024, 5, 1, 13, tzinfo=UTC)),
        ("2024-05-01T13:00", datetime(2024, 5, 1, 13, tzinfo=UTC)),
        ("2024-05-01T15:00:00+02:00", datetime(2024, 5, 1, 13, tzinfo=UTC)),
        (" 2024-05-01 13:30 ", datetime(2024, 5, 1, 13, 30, tzinfo=UTC)),
    ],
)
def test_parse_time_gives_aware_utc(text: str, expected: datetime) -> None:
    parsed = parse_time(text)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


def test_parse_time_converts_offsets_to_utc() -> None:
    parsed = parse_time("2024-05-01T00:30:00-01:00")
    assert parsed.tzinfo is not None
    assert parsed.astimezone(timezone.utc).hour == 1  # noqa: UP017
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize("bad", ["yesterday", "2024-13-01", "", "01/05/2024"])
def test_bad_times_are_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError, match="ISO 8601"):
        parse_time(bad)
