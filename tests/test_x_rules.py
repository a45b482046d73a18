"""Filtered-stream rules: local checks, sync plans, the client and ``happyhashtags x-rules``
against the fake X API server (tests/fake_x_api.py)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from fake_x_api import FakeXApi
from happyhashtags.cli import cli
from happyhashtags.config import XRule
from happyhashtags.errors import ConfigError, SourceError
from happyhashtags.x_rules import (
    RulesError,
    StreamRule,
    XRulesClient,
    plan_sync,
    validate_rules,
)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI configures the root logger (level, handler); undo that for the tests after."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.setLevel(level)
    root.handlers[:] = handlers


@pytest.fixture
def api() -> Iterator[FakeXApi]:
    with FakeXApi(rules=[("#happy lang:en", "happy"), ("#joy", None)]) as server:
        yield server


@pytest.fixture
def client(api: FakeXApi) -> Iterator[XRulesClient]:
    with XRulesClient(token=api.token, base_url=api.url, max_length=1024) as rules_client:
        yield rules_client


def server_rules(api: FakeXApi) -> set[tuple[str, str | None]]:
    return {(r.value, r.tag) for r in api.rules}


def posts_to_rules(api: FakeXApi) -> list[dict[str, object]]:
    return [r.body for r in api.requests if r.method == "POST"]


# -- local checks and plans --------------------------------------------------------------------


def test_rule_length_is_checked_against_the_configured_limit() -> None:
    validate_rules([XRule(value="x" * 512)], max_length=512)
    with pytest.raises(ConfigError, match="513 characters long; the limit is 512"):
        validate_rules([XRule(value="x" * 513)], max_length=512)
    validate_rules([XRule(value="x" * 1024)], max_length=1024)
    with pytest.raises(ConfigError, match="must not be empty"):
        validate_rules([XRule(value="  ")], max_length=512)
    with pytest.raises(ConfigError, match="listed twice"):
        validate_rules([XRule(value="#a"), XRule(value="#a", tag="t")], max_length=512)


def test_a_sync_plan_adds_deletes_keeps_and_retags() -> None:
    current = [
        StreamRule("1", "#keep", "k"),
        StreamRule("2", "#gone", None),
        StreamRule("3", "#retag", "old"),
    ]
    wanted = [XRule(value="#keep", tag="k"), XRule(value="#retag", tag="new"), XRule(value="#new")]
    plan = plan_sync(current, wanted)
    assert plan.keep == (current[0],)
    assert plan.delete == (current[1], current[2])
    assert plan.retag == (current[2],)
    assert plan.add == (XRule(value="#retag", tag="new"), XRule(value="#new"))
    assert not plan_sync(current[:1], wanted[:1]).changes


# -- the client --------------------------------------------------------------------------------


def test_list_add_and_delete(api: FakeXApi, client: XRulesClient) -> None:
    assert [(r.value, r.tag) for r in client.list_rules()] == [
        ("#happy lang:en", "happy"),
        ("#joy", None),
    ]
    change = client.add([XRule(value="#sunny has:media", tag="sun")])
    (added,) = change.rules
    assert change.created == 1
    assert (added.value, added.tag) == ("#sunny has:media", "sun")
    assert ("#sunny has:media", "sun") in server_rules(api)
    assert client.delete([added.id]).deleted == 1
    assert ("#sunny has:media", "sun") not in server_rules(api)
    assert all(r.authorized and r.user_agent.startswith("happyhashtags/") for r in api.requests)


def test_a_dry_run_sends_dry_run_true_and_changes_nothing(
    api: FakeXApi, client: XRulesClient
) -> None:
    before = server_rules(api)
    assert client.add([XRule(value="#dry")], dry_run=True).dry_run
    assert client.delete([api.rules[0].id], dry_run=True).deleted == 1
    assert server_rules(api) == before
    posts = [r for r in api.requests if r.method == "POST"]
    assert [r.query.get("dry_run") for r in posts] == [["true"], ["true"]]


def test_server_errors_are_shown_as_sent(api: FakeXApi, client: XRulesClient) -> None:
    with pytest.raises(RulesError, match="DuplicateRule") as duplicate:
        client.add([XRule(value="#joy")])
    assert f"rule '#joy' (id {api.rules[1].id})" in str(duplicate.value)
    with pytest.raises(RulesError, match="Reference to invalid operator 'mood'"):
        client.add([XRule(value="#happy mood:great")])
    with pytest.raises(RulesError, match=r"deleted 0 of 1 rules.*Rule does not exist"):
        client.delete(["123"])


def test_a_rule_too_long_is_refused_before_any_request(api: FakeXApi) -> None:
    client = XRulesClient(token=api.token, base_url=api.url, max_length=512)
    with client, pytest.raises(ConfigError, match="the limit is 512"):
        client.add([XRule(value="#a " * 200)])
    assert api.requests == []


def test_the_server_limit_applies_when_the_local_one_is_higher(strict_api: FakeXApi) -> None:
    client = XRulesClient(token=strict_api.token, base_url=strict_api.url, max_length=2048)
    with client, pytest.raises(RulesError, match="at most 1024 characters"):
        client.add([XRule(value="#a " * 400)])


@pytest.fixture
def strict_api() -> Iterator[FakeXApi]:
    with FakeXApi(rule_max_length=1024) as server:
        yield server


def test_sync_makes_the_server_rules_equal_to_the_wanted_ones(
    api: FakeXApi, client: XRulesClient
) -> None:
    wanted = [XRule(value="#happy lang:en", tag="joyful"), XRule(value="#calm")]
    result = client.sync(wanted)
    assert server_rules(api) == {("#happy lang:en", "joyful"), ("#calm", None)}
    assert result.deleted is not None
    assert result.deleted.deleted == 2
    assert result.added is not None
    assert result.added.created == 2
    again = client.sync(wanted)
    assert not again.plan.changes
    assert again.added is None
    assert again.deleted is None


def test_sync_dry_run_validates_on_the_server_and_changes_nothing(
    api: FakeXApi, client: XRulesClient
) -> None:
    before = server_rules(api)
    result = client.sync(
        [XRule(value="#happy lang:en", tag="retagged"), XRule(value="#new")], dry_run=True
    )
    assert server_rules(api) == before
    assert len(result.plan.add) == 2
    assert len(result.plan.delete) == 2
    bodies = posts_to_rules(api)
    # The re-tagged rule's value still exists on the server, so only "#new" is sent to validate.
    assert bodies[1] == {"add": [{"value": "#new"}]}
    assert all(r.query.get("dry_run") == ["true"] for r in api.requests if r.method == "POST")
    with pytest.raises(RulesError, match="invalid operator"):
        client.sync([XRule(value="#ok"), XRule(value="bad:op")], dry_run=True)
    assert server_rules(api) == before


def test_a_bad_token_is_reported_without_the_token(api: FakeXApi) -> None:
    client = XRulesClient(token="bad-token-zz9", base_url=api.url)
    with client, pytest.raises(SourceError, match="rejected the bearer token") as raised:
        client.list_rules()
    assert "bad-token-zz9" not in str(raised.value)


def test_an_unreachable_api_is_a_source_error() -> None:
    client = XRulesClient(token="t", base_url="http://127.0.0.1:9")
    with (
        client,
        pytest.raises(SourceError, match=r"cannot reach the X API at http://127\.0\.0\.1:9"),
    ):
        client.list_rules()


def test_listing_follows_pagination(api: FakeXApi, client: XRulesClient) -> None:
    client.add([XRule(value=f"#tag{n}") for n in range(1000)])
    client.add([XRule(value=f"#more{n}") for n in range(700)])
    assert len(client.list_rules()) == 2 + 1000 + 700
    assert sum(1 for r in api.requests if r.method == "GET") == 2


# -- the command line -----------------------------------------------------------------------------


def invoke(api: FakeXApi, *args: str, token: str | None = None) -> Result:
    env = {"X_BEARER_TOKEN": token or api.token, "X_API_BASE_URL": api.url}
    return CliRunner().invoke(cli, ["x-rules", *args], env=env)


def test_cli_list_shows_the_rules(api: FakeXApi) -> None:
    result = invoke(api, "list", "--format", "json")
    assert result.exit_code == 0, result.output
    rules = json.loads(result.stdout)
    assert [(r["value"], r["tag"]) for r in rules] == [("#happy lang:en", "happy"), ("#joy", None)]
    table = invoke(api, "list")
    assert "#happy lang:en" in table.output
    assert api.rules[0].id in table.output


def test_cli_add_and_delete(api: FakeXApi) -> None:
    result = invoke(api, "add", "#sunny -is:retweet", "--tag", "sun")
    assert result.exit_code == 0, result.output
    rule = next(r for r in api.rules if r.value == "#sunny -is:retweet")
    assert rule.tag == "sun"
    assert rule.id in result.output
    result = invoke(api, "delete", rule.id, api.rules[0].id)
    assert result.exit_code == 0, result.output
    assert "deleted 2 rules" in result.output
    assert server_rules(api) == {("#joy", None)}


def test_cli_shows_the_servers_error_details(api: FakeXApi) -> None:
    result = invoke(api, "add", "#happy mood:great")
    assert result.exit_code == 1
    assert "Reference to invalid operator 'mood'" in result.output
    result = invoke(api, "delete", "42")
    assert result.exit_code == 1
    assert "Rule does not exist" in result.output


def test_cli_checks_rule_length_locally(api: FakeXApi) -> None:
    result = invoke(api, "add", "x" * 600)
    assert result.exit_code == 2
    assert "600 characters long; the limit is 512" in result.output
    assert api.requests == []


def test_cli_sync_from_the_config_file(api: FakeXApi, tmp_path: Path) -> None:
    config = tmp_path / "happyhashtags.toml"
    config.write_text(
        "x_rule_max_length = 1024\n"
        'x_rules = [{value = "#joy"}, {value = "#calm lang:en", tag = "calm"}]\n'
    )
    dry = invoke(api, "sync", "--dry-run", "--config", str(config))
    assert dry.exit_code == 0, dry.output
    assert "+ #calm lang:en  [tag: calm]" in dry.output
    assert "- " in dry.output
    assert "dry run: would add 1 and delete 1 rules, 1 unchanged" in dry.output
    assert server_rules(api) == {("#happy lang:en", "happy"), ("#joy", None)}
    result = invoke(api, "sync", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert server_rules(api) == {("#joy", None), ("#calm lang:en", "calm")}
    assert "already in sync: 2 rules" in invoke(api, "sync", "--config", str(config)).output


def test_cli_sync_refuses_to_delete_every_rule_without_x_rules(api: FakeXApi) -> None:
    result = invoke(api, "sync")
    assert result.exit_code == 2
    assert "x_rules is empty" in result.output
    assert api.requests == []


def test_cli_token_file_and_bad_token(api: FakeXApi, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(api.token + "\n")
    result = CliRunner().invoke(
        cli, ["x-rules", "list", "--x-token-file", str(token_file)], env={"X_API_BASE_URL": api.url}
    )
    assert result.exit_code == 0, result.output
    bad = invoke(api, "list", token="wrong-token-777")
    assert bad.exit_code == 1
    assert "rejected the bearer token" in bad.output
    assert "wrong-token-777" not in bad.output


def test_cli_help_describes_every_subcommand() -> None:
    runner = CliRunner()
    overview = runner.invoke(cli, ["x-rules", "--help"])
    assert overview.exit_code == 0
    assert "filtered stream" in overview.output
    for name in ("list", "add", "delete", "sync"):
        result = runner.invoke(cli, ["x-rules", name, "--help"])
        assert result.exit_code == 0
        assert "--x-token-file" in result.output
