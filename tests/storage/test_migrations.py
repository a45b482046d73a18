"""Alembic migrations up and down on SQLite and PostgreSQL, from the library and the CLI."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from happyhashtags.cli import cli
from happyhashtags.errors import ConfigError, StorageError
from happyhashtags.storage import Store

TABLES = {"hashtag_counts", "dead_letters", "pipeline_settings", "consumer_positions"}
VIEWS = {"happiest_hashtags", "hourly_counts"}


def _schema(store: Store) -> tuple[set[str], set[str]]:
    inspector = sa.inspect(store.engine)
    tables = set(inspector.get_table_names()) - {"alembic_version"}
    return tables, set(inspector.get_view_names())


def test_head_base_head_on_both_databases(database_url: str) -> None:
    with Store(url=database_url) as store:
        assert _schema(store) == (set(), set())
        store.migrate()
        assert store.current_revision() == store.head_revision()
        assert _schema(store) == (TABLES, VIEWS)
        store.write({(0, "kept"): [1, 1]})

        store.downgrade("0001")
        assert store.current_revision() == "0001"
        assert _schema(store) == (TABLES - {"consumer_positions"}, VIEWS)
        assert store.counts() == {next(iter(store.counts())): (1, 1)}

        store.downgrade("base")
        assert store.current_revision() is None
        assert _schema(store) == (set(), set())

        store.migrate()
        assert _schema(store) == (TABLES, VIEWS)
        assert store.counts() == {}
        store.migrate()  # idempotent at head
        store.ensure_ready()


def test_step_by_step_upgrade(database_url: str) -> None:
    with Store(url=database_url) as store:
        store.migrate("0001")
        assert store.current_revision() == "0001"
        with pytest.raises(StorageError, match="happyhashtags migrate"):
            store.ensure_ready()
        store.migrate("0002")
        with pytest.raises(StorageError, match="happyhashtags migrate"):
            store.ensure_ready()
        store.migrate(store.head_revision())
        store.ensure_ready()


def test_an_unknown_revision_is_a_config_error(sqlite_url: str) -> None:
    with Store(url=sqlite_url) as store, pytest.raises(ConfigError, match="nope"):
        store.migrate("nope")


def test_the_migrate_command_up_down_and_up(database_url: str) -> None:
    runner = CliRunner()
    head = Store(url=database_url).head_revision()
    up = runner.invoke(cli, ["migrate", "--database", database_url])
    assert up.exit_code == 0, up.output
    assert f"migrated base -> {head}" in up.output
    again = runner.invoke(cli, ["migrate", "--database", database_url])
    assert f"already at {head}" in again.output
    down = runner.invoke(cli, ["migrate", "--database", database_url, "--downgrade", "base"])
    assert down.exit_code == 0, down.output
    assert f"migrated {head} -> base" in down.output
    with Store(url=database_url) as store:
        assert _schema(store) == (set(), set())
    up = runner.invoke(cli, ["migrate", "--database", database_url, "--revision", "0001"])
    assert "base -> 0001" in up.output
    up = runner.invoke(cli, ["migrate", "--database", database_url])
    assert f"0001 -> {head}" in up.output


def _hot_update_share(store: Store) -> float:
    """The share of updates that Postgres made in place (HOT) when a quarter of 4,000 rows is
    updated, as a flush updates the rows it counted; measured in a transaction rolled back."""
    with store.engine.connect() as connection:
        transaction = connection.begin()
        connection.execute(
            sa.text(
                "INSERT INTO hashtag_counts SELECT timestamp '2026-01-01', 'tag' || n, n % 4, 0 "
                "FROM generate_series(1, 4000) AS n"
            )
        )
        # Counted from before the update: a backend's counts may hold earlier transactions'.
        stats = sa.text(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables "
            "WHERE relname = 'hashtag_counts'"
        )
        updated_before, hot_before = connection.execute(stats).one()
        connection.execute(sa.text("UPDATE hashtag_counts SET happy_tweets = 1 WHERE tweets = 0"))
        updated, hot = connection.execute(stats).one()
        transaction.rollback()
    assert updated - updated_before == 1000
    return float(hot - hot_before) / 1000


def test_counts_leave_room_for_updates_in_place_on_postgres(postgres_url: str) -> None:
    # Every flush updates the rows it counted: in a full page each update also goes into both
    # indexes; fillfactor 70 leaves room for most to stay on their page.
    with Store(url=postgres_url) as store:
        store.migrate()
        options = "SELECT reloptions FROM pg_class WHERE relname = 'hashtag_counts'"
        with store.engine.connect() as connection:
            assert connection.execute(sa.text(options)).scalar() == ["fillfactor=70"]
        assert _hot_update_share(store) > 0.9
        store.downgrade("0003")
        with store.engine.connect() as connection:
            assert connection.execute(sa.text(options)).scalar() is None
        assert _hot_update_share(store) < 0.5
