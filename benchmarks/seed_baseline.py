"""SEED-STYLE BASELINE, for comparison only: NOT how happyhashtags works.

This reproduces the approach of the seed project that happyhashtags replaced, so the benchmark
can say how much faster the engine is than what came before. It is written plainly, the way the
seed did it, and deliberately not optimised:

- read the posts line by line and parse each with `json.loads`;
- split the text on white space and take the words that start with ``#`` as hashtags;
- call a post happy when ``:)`` occurs in its text;
- for every few happy hashtags (`HASHTAGS_PER_WRITE`), open a NEW database connection and
  upsert ``(hashtag, hour, count)`` rows into ``hourly_counts(hashtag, hour, count)`` with
  `executemany`, then commit and close.

It runs on the same file as the other cases, into its own throwaway Postgres database.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import psycopg

__all__ = ["HASHTAGS_PER_WRITE", "create_table", "run_seed_baseline"]

HASHTAGS_PER_WRITE = 10
"""How many happy hashtag occurrences the seed collected before each database round trip."""

_CREATE = """
CREATE TABLE IF NOT EXISTS hourly_counts (
    hashtag TEXT NOT NULL,
    hour TEXT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (hashtag, hour)
)
"""

_UPSERT = """
INSERT INTO hourly_counts (hashtag, hour, count) VALUES (%s, %s, %s)
ON CONFLICT (hashtag, hour) DO UPDATE SET count = hourly_counts.count + EXCLUDED.count
"""


def create_table(url: str) -> None:
    """Create the seed's table (not timed)."""
    with psycopg.connect(url) as connection:
        connection.execute(_CREATE)


def _write(url: str, rows: list[tuple[str, str, int]]) -> None:
    # The seed's habit: a new connection for every small batch.
    with psycopg.connect(url) as connection:
        with connection.cursor() as cursor:
            cursor.executemany(_UPSERT, rows)
        connection.commit()


def count_lines(lines: Iterable[bytes], url: str, limit: int | None = None) -> int:
    """Count happy hashtags in `lines` the seed's way; returns the number of posts read."""
    posts = 0
    pending: list[tuple[str, str, int]] = []
    for line in lines:
        if limit is not None and posts >= limit:
            break
        if not line.strip():
            continue
        message = json.loads(line)
        tweet = message.get("data", message)  # X API v2 keeps the tweet under "data"
        text = tweet.get("text", "")
        posts += 1
        if ":)" not in text:
            continue
        hour = tweet.get("created_at", "")[:13]  # "2026-01-01T00"
        for word in text.split():
            if word.startswith("#") and len(word) > 1:
                pending.append((word[1:].lower(), hour, 1))
                if len(pending) >= HASHTAGS_PER_WRITE:
                    _write(url, pending)
                    pending = []
    if pending:
        _write(url, pending)
    return posts


def run_seed_baseline(path: Path, url: str, limit: int | None = None) -> int:
    """Count the file at `path` into `url` the seed's way; returns the number of posts read."""
    with path.open("rb") as lines:
        return count_lines(lines, url, limit)
