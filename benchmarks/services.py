"""The services the benchmarks run against: a throwaway Postgres database per case run.

Postgres is the one on 127.0.0.1:5432 (user postgres, trust), as in the tests; pass another
maintenance URL with ``--pg-admin``.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import psycopg

__all__ = [
    "DEFAULT_NATS_URL",
    "DEFAULT_PG_ADMIN_URL",
    "CountsFingerprint",
    "Postgres",
    "port_open",
]

DEFAULT_PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


def port_open(url: str, default_port: int) -> bool:
    """Whether something listens at `url`'s host and port."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    try:
        with socket.create_connection((host, parts.port or default_port), timeout=2.0):
            return True
    except OSError:
        return False


@dataclass(frozen=True, slots=True)
class CountsFingerprint:
    """A summary of a `hashtag_counts` table that two equal tables share."""

    rows: int
    tweets: int
    happy_tweets: int
    distinct_hashtags: int
    digest: str

    def as_dict(self) -> dict[str, object]:
        return {
            "rows": self.rows,
            "tweets": self.tweets,
            "happy_tweets": self.happy_tweets,
            "distinct_hashtags": self.distinct_hashtags,
            "digest": self.digest,
        }


class Postgres:
    """Creates, inspects and drops uniquely named benchmark databases."""

    def __init__(self, admin_url: str = DEFAULT_PG_ADMIN_URL) -> None:
        self.admin_url = admin_url
        self._base = admin_url.rsplit("/", 1)[0]

    def available(self) -> bool:
        return port_open(self.admin_url, 5432)

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.admin_url, autocommit=True)

    def server_version(self) -> str:
        with self._admin() as admin:
            row = admin.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "unknown"

    def create(self, label: str) -> str:
        """A new empty database; returns its URL (no password: the server trusts loopback)."""
        name = f"hh_bench_{label.replace('-', '_')}_{uuid.uuid4().hex[:10]}"
        with self._admin() as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return f"{self._base}/{name}"

    def drop(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        if not name.startswith("hh_bench_"):  # never drop anything this harness did not make
            raise ValueError(f"refusing to drop {name!r}: not a benchmark database")
        with self._admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    @contextmanager
    def database(self, label: str) -> Iterator[str]:
        """A database for the duration of a ``with`` block."""
        url = self.create(label)
        try:
            yield url
        finally:
            self.drop(url)

    @staticmethod
    def fingerprint(url: str, table: str = "hashtag_counts") -> CountsFingerprint:
        """Row count, totals and an MD5 of every row in order: equal tables, equal prints."""
        if table == "hashtag_counts":
            query = """
                SELECT count(*), coalesce(sum(tweets), 0), coalesce(sum(happy_tweets), 0),
                       count(DISTINCT hashtag),
                       md5(coalesce(string_agg(
                           bucket_start::text || '|' || hashtag || '|' || tweets::text
                           || '|' || happy_tweets::text, E'\\n' ORDER BY bucket_start, hashtag
                       ), ''))
                FROM hashtag_counts
            """
        elif table == "hourly_counts":  # the seed baseline's table
            query = """
                SELECT count(*), coalesce(sum(count), 0), 0, count(DISTINCT hashtag),
                       md5(coalesce(string_agg(
                           hour::text || '|' || hashtag || '|' || count::text,
                           E'\\n' ORDER BY hour, hashtag
                       ), ''))
                FROM hourly_counts
            """
        else:
            raise ValueError(f"unknown table {table!r}")
        with psycopg.connect(url) as connection:
            row = connection.execute(query).fetchone()
        assert row is not None
        rows, tweets, happy, distinct, digest = row
        return CountsFingerprint(int(rows), int(tweets), int(happy), int(distinct), str(digest))
