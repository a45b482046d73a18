"""The Store on SQLite and PostgreSQL: upserts, dead letters, views, top(), positions, settings."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from happyhashtags.aggregate import Counts
from happyhashtags.errors import ConfigError, PositionConflict, StorageError
from happyhashtags.model import Checkpoint, DeadLetter
from happyhashtags.storage import Store, database_url_for_display
from happyhashtags.storage.store import RAW_CAP, normalize_url

T0 = 1_714_557_600  # 2024-05-01T10:00:00Z
H = 3600


def _utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def _wilson(happy: int, n: int, z: float = 1.96) -> float:
    """The lower bound of the Wilson score interval, from its textbook form."""
    p = happy / n
    denominator = 1 + z**2 / n
    centre = p + z**2 / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    return (centre - margin) / denominator


def _rows(store: Store, sql: str) -> list[dict[str, Any]]:
    with store.engine.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(sa.text(sql))]


def _naive(value: Any) -> datetime:
    # SQLite returns view columns as text, Postgres as timestamps: compare as naive UTC.
    if isinstance(value, str):
        return datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=None)


def test_writes_add_to_existing_rows(store: Store) -> None:
    store.write({(T0, "a"): [2, 1]})
    store.write({(T0, "a"): [3, 2], (T0, "b"): [1, 0], (T0 + H, "a"): [1, 1]})
    store.write({})
    assert store.counts() == {
        (_utc(T0), "a"): (5, 3),
        (_utc(T0), "b"): (1, 0),
        (_utc(T0 + H), "a"): (1, 1),
    }
    (bucket, _), *_ = store.counts()
    assert bucket.tzinfo is not None


def test_many_cells_and_unicode_hashtags_round_trip(store: Store) -> None:
    counts: Counts = {(T0 + (i % 7) * H, f"tag{i}ß東京🎉"): [i + 1, i % 3] for i in range(2500)}
    store.write(counts)
    store.write(counts)
    stored = store.counts()
    assert len(stored) == 2500
    assert all(stored[(_utc(b), h)] == (2 * t, 2 * y) for (b, h), (t, y) in counts.items())


def test_extreme_buckets_and_odd_hashtags_round_trip_exactly(store: Store) -> None:
    # Postgres gets the cells as JSON and makes the times itself: every bucket a datetime can
    # hold, and any text JSON must escape, must come back as written.
    first = int(datetime(1, 1, 1, tzinfo=UTC).timestamp())
    last = int(datetime(9999, 12, 31, 23, tzinfo=UTC).timestamp())
    hashtags = ['quote"d', "back\\slash", "new\nline", "\u2028", "tab\t", "😀", "ǅ", "'"]
    counts: Counts = {
        (bucket, tag): [i + 1, i]
        for i, (bucket, tag) in enumerate(
            (b, t) for b in (first, -H, 0, T0 + 1, last) for t in hashtags
        )
    }
    store.write(counts)
    assert store.counts() == {
        (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=b), t): (n, y)
        for (b, t), (n, y) in counts.items()
    }


def test_dead_letters_keep_a_capped_raw_line(store: Store) -> None:
    long_raw = b'{"data": ' + b"x" * (RAW_CAP * 2) + b"\x00\xff"
    store.write(
        {},
        [
            DeadLetter(T0 + 0.5, "file.jsonl:3", "malformed_json", "d" * 5000, long_raw),
            DeadLetter(T0 + 1, "stdin:9", "bad_time", "created_at", b"{\x00}"),
        ],
    )
    newest, oldest = store.dead_letters()
    assert (newest["source"], newest["reason"]) == ("stdin:9", "bad_time")
    assert newest["raw"] == "{\ufffd}"
    assert (oldest["source"], oldest["reason"]) == ("file.jsonl:3", "malformed_json")
    assert len(oldest["raw"]) == RAW_CAP
    assert oldest["raw"].startswith('{"data": xxx')
    assert oldest["raw_length"] == len(long_raw)
    assert len(oldest["detail"]) <= 1000
    # SQLite keeps whole seconds, Postgres microseconds.
    assert _naive(oldest["received_at"]).replace(microsecond=0) == datetime(2024, 5, 1, 10)


def test_happiest_hashtags_view_scores_and_ranks_within_each_bucket(store: Store) -> None:
    cells = {
        (T0, "sure"): [100, 90],
        (T0, "lucky"): [1, 1],
        (T0, "meh"): [50, 10],
        (T0, "twin1"): [10, 5],
        (T0, "twin2"): [10, 5],
        (T0, "never"): [4, 0],
        (T0 + H, "lucky"): [40, 30],
    }
    store.write(cells)
    rows = _rows(store, "SELECT * FROM happiest_hashtags")
    assert len(rows) == len(cells)
    by_key = {(_naive(r["bucket_start"]), r["hashtag"]): r for r in rows}
    for (bucket, tag), (tweets, happy) in cells.items():
        row = by_key[(_utc(bucket).replace(tzinfo=None), tag)]
        assert (row["tweets"], row["happy_tweets"]) == (tweets, happy)
        assert row["happy_ratio"] == pytest.approx(happy / tweets)
        assert row["happy_score"] == pytest.approx(_wilson(happy, tweets), abs=1e-9)
    first_bucket = sorted(
        (r for r in rows if _naive(r["bucket_start"]) == datetime(2024, 5, 1, 10)),
        key=lambda r: r["rank"],
    )
    assert [r["hashtag"] for r in first_bucket][:2] == ["sure", "twin1"] or [
        r["hashtag"] for r in first_bucket
    ][:2] == ["sure", "twin2"]
    ranks = {r["hashtag"]: r["rank"] for r in first_bucket}
    # lucky: one happy post of one scores below 5 of 10; ties share a rank.
    assert ranks == {"sure": 1, "twin1": 2, "twin2": 2, "lucky": 4, "meh": 5, "never": 6}
    (second,) = [r for r in rows if _naive(r["bucket_start"]) == datetime(2024, 5, 1, 11)]
    assert second["rank"] == 1


def test_the_view_ratio_never_exceeds_one_like_top(store: Store) -> None:
    store.write({(T0, "x"): [1, 2]})
    (row,) = _rows(store, "SELECT happy_ratio FROM happiest_hashtags")
    (top,) = store.top()
    assert row["happy_ratio"] == top.happy_ratio == 1.0


def test_hourly_counts_view_sums_happy_posts_per_hour(store: Store) -> None:
    quarter = 900
    store.write(
        {
            (T0, "a"): [5, 2],
            (T0 + quarter, "a"): [5, 3],
            (T0 + 3 * quarter, "a"): [1, 1],
            (T0 + H, "a"): [2, 2],
            (T0, "sad"): [9, 0],
        }
    )
    rows = _rows(store, "SELECT hashtag, hour, count FROM hourly_counts ORDER BY hour")
    assert [(r["hashtag"], _naive(r["hour"]), r["count"]) for r in rows] == [
        ("a", datetime(2024, 5, 1, 10), 6),
        ("a", datetime(2024, 5, 1, 11), 2),
    ]


def _top_cells() -> Counts:
    return {
        (T0, "often"): [100, 40],
        (T0 + H, "often"): [100, 40],
        (T0, "rare"): [2, 2],
        (T0, "steady"): [30, 27],
        (T0 + 2 * H, "late"): [500, 499],
        (T0, "tie_b"): [10, 5],
        (T0, "tie_a"): [10, 5],
        (T0, "gloomy"): [3, 0],
    }


def test_top_by_happy_posts_and_by_score(store: Store) -> None:
    # On Postgres SUM(bigint) is NUMERIC: the Decimals must not break the score.
    store.write(_top_cells())
    happy = store.top(limit=4)
    assert [(r.rank, r.hashtag, r.happy_tweets, r.tweets) for r in happy] == [
        (1, "late", 499, 500),
        (2, "often", 80, 200),
        (3, "steady", 27, 30),
        (4, "tie_a", 5, 10),  # equal happy and tweets: by name
    ]
    ratio = store.top(rank="ratio", limit=10)
    scores = [r.happy_score for r in ratio]
    assert scores == sorted(scores, reverse=True)
    assert [r.hashtag for r in ratio][:3] == ["late", "steady", "rare"]
    for r in ratio:
        assert r.happy_ratio == pytest.approx(r.happy_tweets / r.tweets)
        assert r.happy_score == pytest.approx(_wilson(r.happy_tweets, r.tweets))
    assert [r.rank for r in ratio] == list(range(1, len(ratio) + 1))
    assert "gloomy" in [r.hashtag for r in ratio]


def test_top_since_until_and_min_tweets(store: Store) -> None:
    store.write(_top_cells())
    only_first = store.top(since=_utc(T0), until=_utc(T0 + H), limit=20)
    assert {r.hashtag for r in only_first} == {
        "often",
        "rare",
        "steady",
        "tie_a",
        "tie_b",
        "gloomy",
    }
    assert next(r for r in only_first if r.hashtag == "often").tweets == 100
    from_second = store.top(since=_utc(T0 + H), limit=20)
    assert {r.hashtag for r in from_second} == {"often", "late"}
    # Aware times in another zone mean the same instants.
    plus_two = _utc(T0 + H).astimezone(datetime.now(UTC).astimezone().tzinfo)
    assert store.top(since=plus_two, limit=20) == from_second
    assert store.top(until=_utc(T0), limit=20) == []
    big = store.top(min_tweets=150, limit=20)
    assert {r.hashtag for r in big} == {"often", "late"}


def test_positions_are_written_with_the_counts(store: Store) -> None:
    assert store.read_position("consumer") is None
    store.write({(T0, "a"): [1, 0]}, positions={"consumer": Checkpoint(41, '{"s": 1}')})
    store.write({(T0, "a"): [1, 0]}, positions={"consumer": Checkpoint(42, None)})
    assert store.read_position("consumer") == Checkpoint(42, None)
    checkpoint, updated = store.positions()["consumer"]
    assert checkpoint.position == 42
    assert updated.tzinfo is not None
    assert abs(updated - datetime.now(UTC)) < timedelta(minutes=5)


def test_a_failing_write_leaves_neither_counts_nor_positions(store: Store) -> None:
    store.write({(T0, "kept"): [1, 1]}, positions={"c": Checkpoint(1)})
    dead = [DeadLetter(T0, "x", "r", "", b"raw")]
    # A position that cannot be stored fails the whole transaction.
    with pytest.raises((sa.exc.SQLAlchemyError, OverflowError, StorageError)):
        store.write(
            {(T0, "kept"): [5, 5], (T0, "new"): [1, 0]}, dead, positions={"c": Checkpoint(2**63)}
        )
    # And counts that cannot be stored leave the position alone.
    with pytest.raises((sa.exc.SQLAlchemyError, OverflowError, StorageError)):
        store.write({(T0, "huge"): [2**63, 0]}, dead, positions={"c": Checkpoint(2)})
    assert store.counts() == {(_utc(T0), "kept"): (1, 1)}
    assert store.read_position("c") == Checkpoint(1)
    assert store.dead_letters() == []


def test_a_fenced_position_moves_only_from_where_its_writer_left_it(store: Store) -> None:
    # Two processes with one consumer name: both read "no position", both count the same input.
    dead = [DeadLetter(T0, "x", "r", "", b"raw")]
    store.write({(T0, "a"): [1, 0]}, positions={"c": Checkpoint(10)}, expected={"c": None})
    with pytest.raises(PositionConflict, match="another process committed for consumer c"):
        store.write(
            {(T0, "a"): [1, 0]}, dead, positions={"c": Checkpoint(12)}, expected={"c": None}
        )
    # The first goes on from where it left its position; a writer that read 10 and lost the
    # race to 11 stops too, and nothing of the refused writes is stored.
    store.write({(T0, "a"): [1, 0]}, positions={"c": Checkpoint(11)}, expected={"c": 10})
    with pytest.raises(PositionConflict):
        store.write({(T0, "b"): [1, 0]}, dead, positions={"c": Checkpoint(13)}, expected={"c": 10})
    assert store.read_position("c") == Checkpoint(11)
    assert store.counts() == {(_utc(T0), "a"): (2, 0)}
    assert store.dead_letters() == []


def test_a_retried_write_whose_commit_went_through_is_not_written_twice(store: Store) -> None:
    # The connection dropped after the commit: the writer retries the same write.
    store.write({(T0, "a"): [1, 0]}, positions={"c": Checkpoint(5)}, expected={"c": None})
    store.write({(T0, "a"): [1, 0]}, positions={"c": Checkpoint(5)}, expected={"c": None})
    store.write({(T0, "a"): [2, 0]}, positions={"c": Checkpoint(8)}, expected={"c": 5})
    store.write({(T0, "a"): [2, 0]}, positions={"c": Checkpoint(8)}, expected={"c": 5})
    assert store.counts() == {(_utc(T0), "a"): (3, 0)}
    assert store.read_position("c") == Checkpoint(8)


def test_check_setting_records_then_guards_the_value(store: Store) -> None:
    store.check_setting("bucket", "1h")
    store.check_setting("bucket", "1h")
    with pytest.raises(ConfigError) as caught:
        store.check_setting("bucket", "15m")
    assert "1h" in str(caught.value)
    assert "15m" in str(caught.value)


def test_an_unmigrated_database_says_to_migrate(database_url: str) -> None:
    with Store(url=database_url) as store:
        assert store.current_revision() is None
        with pytest.raises(StorageError, match="happyhashtags migrate"):
            store.ensure_ready()
        store.migrate()
        store.ensure_ready()
        assert store.current_revision() == store.head_revision()


def test_urls_are_normalized_and_passwords_never_shown() -> None:
    url = "postgresql://user:s3cret-pw@db.example:5432/counts"
    assert normalize_url(url).drivername == "postgresql+psycopg"
    assert normalize_url("postgres://u@h/d").drivername == "postgresql+psycopg"
    store = Store(url=url)
    assert "s3cret-pw" not in repr(store)
    assert "s3cret-pw" not in database_url_for_display(url)
    assert "db.example" in database_url_for_display(url)
    with pytest.raises(ConfigError, match="SQLAlchemy"):
        normalize_url("not a url")
    with pytest.raises(ConfigError, match="unsupported"):
        normalize_url("mysql://u@h/d")


def test_an_unreachable_server_is_a_storage_error_without_the_password() -> None:
    store = Store(url="postgresql://user:s3cret-pw@127.0.0.1:1/counts")
    with pytest.raises(StorageError) as caught:
        store.current_revision()
    assert "s3cret-pw" not in str(caught.value)
    assert "127.0.0.1" in str(caught.value)


def test_an_in_memory_sqlite_store_works_across_calls() -> None:
    with Store(url="sqlite://") as store:
        store.migrate()
        store.write({(0, "cats"): [2, 1]})
        assert [r.hashtag for r in store.top()] == ["cats"]
