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
