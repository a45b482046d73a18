"""Durations, timestamps and bucket arithmetic. All times are UTC."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

from happyhashtags.errors import ConfigError

__all__ = ["bucket_start", "format_duration", "from_epoch", "parse_duration", "parse_time"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(value: str | float | int) -> float:
    """Seconds in a duration such as ``"30s"``, ``"30m"``, ``"1h"``, ``"1d"`` or ``"0"``.

    A bare number is seconds.

    >>> parse_duration("30m")
    1800.0
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        # NaN passes a `< 0` test, and a TOML file can hold nan and inf.
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"duration must be a finite number of seconds >= 0, got {value}")
        return float(value)
    match = _DURATION.match(str(value))
    if match is None:
        raise ConfigError(
            f"invalid duration {value!r}: use a number and a unit, like 30s, 30m, 1h or 1d"
        )
    number, unit = match.groups()
    return float(number) * _UNIT_SECONDS[(unit or "s").lower()]


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of a duration: 3600 -> "1h"."""
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def bucket_start(event_time: float, bucket_seconds: int) -> int:
    """The start of the bucket holding `event_time`, aligned to multiples since the epoch."""
    # floor, not int(): int() rounds towards zero, which puts a time just before a negative
    # boundary (pre-1970 exports) in the next bucket.
    t = math.floor(event_time)
    return t - t % bucket_seconds


def from_epoch(seconds: float) -> datetime:
    """A timezone-aware UTC datetime."""
    return datetime.fromtimestamp(seconds, tz=UTC)


def parse_time(value: str) -> datetime:
    """Parse an ISO 8601 date or time (naive values are UTC) for --since/--until."""
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"invalid time {value!r}: use ISO 8601, like 2024-05-01 or 2024-05-01T13:00:00Z"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
