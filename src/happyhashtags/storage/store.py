"""The `Store`: migrations, batched upserts, dead letters and queries, on SQLite or Postgres."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url

from happyhashtags.aggregate import Counts
from happyhashtags.errors import ConfigError, MissingExtraError, PositionConflict, StorageError
from happyhashtags.model import Checkpoint, DeadLetter
from happyhashtags.storage.schema import (
    consumer_positions,
    dead_letters,
    hashtag_counts,
    pipeline_settings,
)

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["RAW_CAP", "Store", "TopRow", "database_url_for_display", "normalize_url"]

log = logging.getLogger(__name__)

RAW_CAP = 16_384
"""Characters of a dead letter's raw input that are kept."""

_MIGRATIONS = Path(__file__).with_name("migrations")
_EPOCH = datetime(1970, 1, 1)  # noqa: DTZ001 - naive on purpose: columns hold UTC without a zone
_Z = 1.96
# The cells arrive as one JSON array of [[bucket, hashtag], [tweets, happy]], encoded by msgspec
# in C; psycopg dumps an array parameter element by element in Python. Rows are locked in one
# order (bucket, hashtag), so concurrent writers cannot deadlock. to_timestamp is exact here:
# bucket seconds times 10^6 is an exact double for every year datetime can hold.
_PG_UPSERT = """
INSERT INTO hashtag_counts (bucket_start, hashtag, tweets, happy_tweets)
SELECT to_timestamp((c->0->>0)::bigint) AT TIME ZONE 'UTC', c->0->>1,
       (c->1->>0)::bigint, (c->1->>1)::bigint
FROM json_array_elements(%s::json) AS c
ORDER BY 1, 2
ON CONFLICT (bucket_start, hashtag) DO UPDATE
SET tweets = hashtag_counts.tweets + EXCLUDED.tweets,
    happy_tweets = hashtag_counts.happy_tweets + EXCLUDED.happy_tweets
"""


def normalize_url(url: str) -> URL:
    """Parse a SQLAlchemy URL; plain ``postgresql://`` (and ``postgres://``) use psycopg 3."""
    try:
        parsed = make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        raise ConfigError(
            "invalid database URL: use SQLAlchemy form, like sqlite:///happyhashtags.db or "
            "postgresql://user@localhost:5432/dbname"
        ) from None
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"unsupported database {parsed.get_backend_name()!r}: use sqlite:/// or postgresql://"
        )
    return parsed


def database_url_for_display(url: str | URL) -> str:
    """The URL with any password masked, safe to log."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except (sa.exc.ArgumentError, ValueError):
        return "<invalid database URL>"
    return parsed.render_as_string(hide_password=True)


def wilson_lower_bound(happy: int, tweets: int) -> float:
    """Lower bound of the 95 % Wilson score interval of happy / tweets (0 when tweets is 0)."""
    if tweets <= 0:
        return 0.0
    n = float(tweets)
    p = min(happy, tweets) / n
    z2 = _Z * _Z
    centre = p + z2 / (2 * n)
    spread = _Z * math.sqrt((p * (1 - p) + z2 / (4 * n)) / n)
    return (centre - spread) / (1 + z2 / n)


@dataclass(frozen=True, slots=True)
class TopRow:
    """One line of `Store.top`."""

    rank: int
    hashtag: str
    happy_tweets: int
    tweets: int
    happy_ratio: float
    happy_score: float


class Store:
    """A database holding the counts. Cheap to create; connects lazily.

    >>> store = Store(url="sqlite://")  # in memory
    >>> store.migrate()
    >>> store.write({(0, "cats"): [2, 1]})
    >>> [row.hashtag for row in store.top()]
    ['cats']
    """

    def __init__(self, *, url: str, echo: bool = False) -> None:
        self.url = normalize_url(url)
        self._echo = echo
        self._engine: Engine | None = None
        self._bucket_cache: dict[int, datetime] = {}

    def __repr__(self) -> str:
        return f"Store(url={database_url_for_display(self.url)!r})"

    @property
    def dialect(self) -> str:
        return self.url.get_backend_name()

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self._create_engine()
        return self._engine

    def _create_engine(self) -> Engine:
        kwargs: dict[str, Any] = {"echo": self._echo}
        if self.dialect == "sqlite":
            database = self.url.database
            if database and database != ":memory:" and not database.startswith("file:"):
                folder = Path(database).expanduser().parent
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StorageError(
                        f"cannot create the folder {folder} for the SQLite database: "
                        f"{exc.strerror or exc}"
                    ) from None
            if not database or database == ":memory:":
                # One shared connection, or every connection would see its own empty database.
                kwargs["poolclass"] = sa.pool.StaticPool
                kwargs["connect_args"] = {"check_same_thread": False}
        else:
            try:
                import psycopg  # noqa: F401
            except ImportError:
                raise MissingExtraError("PostgreSQL storage", "postgres") from None
            kwargs["pool_pre_ping"] = True
        engine = sa.create_engine(self.url, **kwargs)
        if self.dialect == "sqlite":

            @sa.event.listens_for(engine, "connect")
            def _pragmas(dbapi_connection: Any, _record: Any) -> None:
                cursor = dbapi_connection.cursor()
                # WAL lets `top` and BI tools read while a run writes.
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.execute("PRAGMA busy_timeout=30000")
                cursor.close()

        return engine

    def _connect(self) -> Connection:
        try:
            return self.engine.connect()
        except sa.exc.OperationalError as exc:
            raise StorageError(
                f"cannot connect to {database_url_for_display(self.url)}: "
                f"{_first_line(exc.orig)}. Check that the server runs and the URL is right."
            ) from None

    def close(self) -> None:
        """Release connections."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- schema -----------------------------------------------------------------------------

    # Alembic is imported where it is used: about 0.1 s that `--help` and queries need not pay.
    def _alembic_config(self, connection: Connection) -> Config:
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(_MIGRATIONS))
        config.attributes["connection"] = connection
        return config

    def head_revision(self) -> str:
        """The newest migration this version of happyhashtags knows."""
        from alembic.config import Config
        from alembic.script import ScriptDirectory

        config = Config()
        config.set_main_option("script_location", str(_MIGRATIONS))
        head = ScriptDirectory.from_config(config).get_current_head()
        assert head is not None
        return head

    def current_revision(self) -> str | None:
        """The migration the database is at (None: not migrated)."""
        from alembic.runtime.migration import MigrationContext

        with self._connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def migrate(self, revision: str = "head") -> None:
        """Upgrade the schema to `revision` (Alembic)."""
        from alembic import command

        self._run_alembic(command.upgrade, revision)

    def downgrade(self, revision: str) -> None:
        """Downgrade the schema to `revision` (``base`` removes everything)."""
        from alembic import command

        self._run_alembic(command.downgrade, revision)

    def _run_alembic(self, action: Any, revision: str) -> None:
        with self._connect() as connection:
            try:
                with connection.begin():
                    action(self._alembic_config(connection), revision)
            except Exception as exc:
                if "Can't locate revision" in str(exc) or "No such revision" in str(exc):
                    raise ConfigError(f"unknown migration revision {revision!r}") from None
                raise

    def ensure_ready(self) -> None:
        """Raise a `StorageError` that says what to do unless the schema is at head."""
        current, head = self.current_revision(), self.head_revision()
        if current != head:
            state = "not migrated" if current is None else f"at revision {current}, not {head}"
            raise StorageError(
                f"the database {database_url_for_display(self.url)} is {state}: "
                "run 'happyhashtags migrate' first"
            )

    def check_setting(self, key: str, value: str) -> None:
        """Record `key` on first use; raise a `ConfigError` if it was recorded with another value.

        Guards against mixing, say, 1-hour and 5-minute buckets in one table.
        """
        with self._connect() as connection, connection.begin():
            # Insert-if-absent in one statement: writers starting side by side (process
            # --workers) must not both insert.
            connection.execute(
                self._insert(pipeline_settings)
                .values(key=key, value=value)
                .on_conflict_do_nothing(index_elements=[pipeline_settings.c.key])
            )
            row = connection.execute(
                sa.select(pipeline_settings.c.value).where(pipeline_settings.c.key == key)
            ).first()
            if row is not None and row.value != value:
                raise ConfigError(
                    f"this database holds counts made with {key} = {row.value}, not {value}: "
                    "use the same setting, or another database"
                )

    # -- writing ----------------------------------------------------------------------------

    def _bucket_time(self, bucket: int) -> datetime:
        cached = self._bucket_cache.get(bucket)
        if cached is None:
            if len(self._bucket_cache) > 4096:
                self._bucket_cache.clear()
            cached = self._bucket_cache[bucket] = _EPOCH + timedelta(seconds=bucket)
        return cached

    def write(
        self,
        counts: Counts,
        dead: Sequence[DeadLetter] = (),
        *,
        positions: Mapping[str, Checkpoint] | None = None,
        expected: Mapping[str, int | None] | None = None,
    ) -> None:
        """Add `counts`, store `dead` letters and record consumer `positions`, in one transaction.

        Either all of it is committed or none: a consumer that resumes after its recorded
        position therefore counts every input exactly once.

        `expected` fences a consumer's position: the position this writer last read or wrote
        for it (None: no row yet). The position moves only from there; if it is elsewhere,
        another writer has committed in between and nothing is written (`PositionConflict`),
        unless it is already at the new position: then an earlier attempt of this very write
        committed (its acknowledgement was lost with the connection) and it is not written
        twice.

        Raises:
            StorageError: the database could not be reached or the transaction failed; nothing
                was written, so the caller may retry with the same arguments.
            PositionConflict: another writer moved a fenced position; nothing was written.
        """
        try:
            with self._connect() as connection, connection.begin():
                # Positions first: the row lock orders concurrent writers of one consumer, and a
                # fenced position that moved stops the write before any count is added.
                for consumer, checkpoint in (positions or {}).items():
                    if expected is not None and consumer in expected:
                        self._move_position(connection, consumer, expected[consumer], checkpoint)
                    else:
                        self._write_position(connection, consumer, checkpoint)
                self._write(connection, counts, dead)
        except _AlreadyCommitted:
            return  # rolled back: the earlier attempt's commit stands
        except sa.exc.OperationalError as exc:
            raise StorageError(
                f"writing to {database_url_for_display(self.url)} failed: {_first_line(exc.orig)}"
            ) from None
        except sa.exc.DBAPIError as exc:
            if exc.connection_invalidated:
                raise StorageError(
                    f"lost the connection to {database_url_for_display(self.url)}: "
                    f"{_first_line(exc.orig)}"
                ) from None
            raise

    def _write_position(self, connection: Connection, consumer: str, cp: Checkpoint) -> None:
        now = _utc_now()
        values = {
            "consumer": consumer,
            "position": cp.position,
            "state": cp.state,
            "updated_at": now,
        }
        insert = self._insert(consumer_positions)
        connection.execute(
            insert.on_conflict_do_update(
                index_elements=[consumer_positions.c.consumer],
                set_={
                    "position": insert.excluded.position,
                    "state": insert.excluded.state,
                    "updated_at": insert.excluded.updated_at,
                },
            ),
            values,
        )

    def _move_position(
        self, connection: Connection, consumer: str, previous: int | None, cp: Checkpoint
    ) -> None:
        """Move `consumer`'s position from `previous` to `cp`.

        Raises:
            _AlreadyCommitted: it is at `cp` already.
            PositionConflict: it is at neither.
        """
        values = {"position": cp.position, "state": cp.state, "updated_at": _utc_now()}
        table = consumer_positions
        # RETURNING, not rowcount: psycopg reports no rowcount for INSERT ... ON CONFLICT here.
        if previous is None:
            statement = (
                self._insert(table)
                .values(consumer=consumer, **values)
                .on_conflict_do_nothing(index_elements=[table.c.consumer])
            )
        else:
            statement = (
                sa.update(table)
                .where(table.c.consumer == consumer, table.c.position == previous)
                .values(**values)
            )
        moved = len(connection.execute(statement.returning(table.c.consumer)).all())
        if moved == 1:
            return
        row = connection.execute(
            sa.select(table.c.position).where(table.c.consumer == consumer)
        ).first()
        now = None if row is None else int(row.position)
        if now == cp.position:
            log.warning(
                "consumer %s is at position %d already: an earlier attempt of this write was "
                "committed; not writing it again",
                consumer,
                cp.position,
            )
            raise _AlreadyCommitted
        raise PositionConflict(
            f"another process committed for consumer {consumer} (its position is {now}, not "
            f"{previous} as this one left it): stopping without writing; run one process per "
            "consumer name"
        )

    def read_position(self, consumer: str) -> Checkpoint | None:
        """The position last committed for `consumer`, or None."""
        with self._connect() as connection:
            row = connection.execute(
                sa.select(consumer_positions.c.position, consumer_positions.c.state).where(
                    consumer_positions.c.consumer == consumer
                )
            ).first()
        return None if row is None else Checkpoint(int(row.position), row.state)

    def positions(self) -> dict[str, tuple[Checkpoint, datetime]]:
        """Every consumer's position and when it was last updated (aware UTC)."""
        with self._connect() as connection:
            rows = connection.execute(sa.select(consumer_positions)).all()
        return {
            r.consumer: (Checkpoint(int(r.position), r.state), r.updated_at.replace(tzinfo=UTC))
            for r in rows
        }

    def _write(self, connection: Connection, counts: Counts, dead: Sequence[DeadLetter]) -> None:
        if counts:
            if self.dialect == "postgresql":
                for bucket in {b for b, _ in counts}:
                    self._bucket_time(bucket)  # the same range check as SQLite's rows get
                # One statement, one parameter: a single round trip whatever the batch size.
                payload = msgspec.json.encode(list(counts.items())).decode()
                connection.exec_driver_sql(_PG_UPSERT, (payload,))
            else:
                # Sorted, so concurrent writers lock rows in one order and cannot deadlock.
                cells = sorted(counts.items())
                rows = [
                    {
                        "bucket_start": self._bucket_time(b),
                        "hashtag": h,
                        "tweets": t,
                        "happy_tweets": y,
                    }
                    for (b, h), (t, y) in cells
                ]
                connection.execute(self._upsert(), rows)
        if dead:
            connection.execute(dead_letters.insert(), [_dead_row(d) for d in dead])

    def _insert(self, table: sa.Table) -> Any:
        from sqlalchemy.dialects import postgresql, sqlite

        if self.dialect == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    def _upsert(self) -> Any:
        stmt = self._insert(hashtag_counts)
        return stmt.on_conflict_do_update(
            index_elements=[hashtag_counts.c.bucket_start, hashtag_counts.c.hashtag],
            set_={
                "tweets": hashtag_counts.c.tweets + stmt.excluded.tweets,
                "happy_tweets": hashtag_counts.c.happy_tweets + stmt.excluded.happy_tweets,
            },
        )

    # -- reading ----------------------------------------------------------------------------

    def counts(self) -> dict[tuple[datetime, str], tuple[int, int]]:
        """Every stored cell: (bucket start as aware UTC, hashtag) -> (tweets, happy_tweets)."""
        with self._connect() as connection:
            rows = connection.execute(sa.select(hashtag_counts)).all()
        return {
            (r.bucket_start.replace(tzinfo=UTC), r.hashtag): (r.tweets, r.happy_tweets)
            for r in rows
        }

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest dead letters, newest first."""
        with self._connect() as connection:
            rows = connection.execute(
                sa.select(dead_letters).order_by(dead_letters.c.id.desc()).limit(limit)
            ).all()
        return [dict(r._mapping) for r in rows]

    def top(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 10,
        rank: Literal["happy", "ratio"] = "happy",
        min_tweets: int = 1,
    ) -> list[TopRow]:
        """The happiest hashtags over buckets starting in [since, until).

        `rank="happy"` orders by happy posts; `rank="ratio"` by the Wilson lower bound of the happy
        ratio, which keeps a hashtag seen once, happily, from topping the list.
        """
        c = hashtag_counts.c
        happy_sum = sa.func.sum(c.happy_tweets).label("happy_tweets")
        tweets_sum = sa.func.sum(c.tweets).label("tweets")
        query = sa.select(c.hashtag, happy_sum, tweets_sum).group_by(c.hashtag)
        if since is not None:
            query = query.where(c.bucket_start >= _naive_utc(since))
        if until is not None:
            query = query.where(c.bucket_start < _naive_utc(until))
        query = query.having(tweets_sum >= max(min_tweets, 1))
        if rank == "happy":
            query = query.order_by(happy_sum.desc(), tweets_sum.asc(), c.hashtag)
        else:
            # Ranked in the database, so only `limit` rows come back whatever the table's size.
            query = query.order_by(
                _wilson_sql(happy_sum, tweets_sum).desc(), happy_sum.desc(), c.hashtag
            )
        with self._connect() as connection:
            rows = connection.execute(query.limit(limit)).all()
        scored = [
            (
                r.hashtag,
                int(r.happy_tweets),
                int(r.tweets),
                # int(): SUM(bigint) is NUMERIC on Postgres, which arrives as Decimal.
                wilson_lower_bound(int(r.happy_tweets), int(r.tweets)),
            )
            for r in rows
        ]
        return [
            TopRow(i, tag, happy, tweets, min(happy, tweets) / tweets, score)
            for i, (tag, happy, tweets, score) in enumerate(scored, start=1)
        ]


def _wilson_sql(happy: Any, tweets: Any) -> Any:
    """`wilson_lower_bound` as a SQL expression (the same formula as the happiest_hashtags view)."""
    n = sa.cast(tweets, sa.Float)
    p = sa.cast(sa.case((happy > tweets, tweets), else_=happy), sa.Float) / n
    z = _Z
    return (p + z * z / (2 * n) - z * sa.func.sqrt((p * (1 - p) + z * z / (4 * n)) / n)) / (
        1 + z * z / n
    )


class _AlreadyCommitted(Exception):
    """Unwinds (and rolls back) a write whose earlier attempt was committed."""


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _dead_row(dead: DeadLetter) -> dict[str, Any]:
    raw = dead.raw.decode("utf-8", "replace")
    return {
        "received_at": _EPOCH + timedelta(seconds=dead.received_at),
        "source": dead.source,
        "reason": dead.reason,
        "detail": dead.detail[:1000],
        "raw": raw[:RAW_CAP].replace("\x00", "\ufffd"),
        "raw_length": len(dead.raw),
    }


def _naive_utc(value: datetime) -> datetime:
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def _first_line(exc: BaseException | None) -> str:
    text = str(exc or "unknown error").strip()
    return text.splitlines()[0] if text else type(exc).__name__
