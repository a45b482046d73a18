"""The public schema, as SQLAlchemy Core tables. Alembic migrations create it; this mirrors head.

Documented in docs/schema.md: BI tools read these tables and the views the migrations create.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Integer, MetaData, Table, Text
from sqlalchemy.dialects import sqlite

__all__ = [
    "consumer_positions",
    "dead_letters",
    "hashtag_counts",
    "metadata",
    "pipeline_settings",
]

# SQLite keeps times as text; whole seconds in ISO form are what BI tools parse best.
_SQLITE_TIME = sqlite.DATETIME(  # type: ignore[no-untyped-call]
    storage_format="%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d",
    regexp=r"(\d+)-(\d+)-(\d+) (\d+):(\d+):(\d+)",
)
UtcTimestamp = DateTime(timezone=False).with_variant(_SQLITE_TIME, "sqlite")
"""A naive TIMESTAMP holding UTC (the schema's documented convention)."""

metadata = MetaData()

hashtag_counts = Table(
    "hashtag_counts",
    metadata,
    Column("bucket_start", UtcTimestamp, primary_key=True, nullable=False),
    Column("hashtag", Text, primary_key=True, nullable=False),
    Column("tweets", BigInteger, nullable=False),
    Column("happy_tweets", BigInteger, nullable=False),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("received_at", UtcTimestamp, nullable=False),
    Column("source", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("detail", Text, nullable=False),
    Column("raw", Text, nullable=False),
    Column("raw_length", BigInteger, nullable=False),
)

pipeline_settings = Table(
    "pipeline_settings",
    metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)

consumer_positions = Table(
    "consumer_positions",
    metadata,
    Column("consumer", Text, primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("state", Text, nullable=True),
    Column("updated_at", UtcTimestamp, nullable=False),
)
