"""``happyhashtags x-rules``: list, add, delete and sync the X filtered stream's rules."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from happyhashtags.cli import config_option, format_option, settings_from_context
from happyhashtags.errors import ConfigError

if TYPE_CHECKING:
    from happyhashtags.x_rules import StreamRule, XRulesClient

__all__ = ["COMMANDS", "x_rules"]

F = TypeVar("F", bound=Callable[..., Any])


def _connection_options(function: F) -> F:
    """The options every x-rules command takes: where the token is, and the config file."""
    function = click.option(
        "--x-token-file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="File holding the app-only bearer token [env X_BEARER_TOKEN or API_BEARER_TOKEN "
        "hold the token itself].",
    )(function)
    return config_option(function)


def _client(ctx: click.Context, flags: dict[str, Any]) -> XRulesClient:
    from happyhashtags.x_rules import rules_client_from_settings

    return rules_client_from_settings(settings_from_context(ctx, **flags))


def _describe(rule: StreamRule | Any) -> str:
    tag = f"  [tag: {rule.tag}]" if getattr(rule, "tag", None) else ""
    rule_id = getattr(rule, "id", None)
    return f"{rule_id + '  ' if rule_id else ''}{rule.value}{tag}"


@click.group("x-rules")
def x_rules() -> None:
    """Manage the X filtered stream's rules (which posts --source x-filtered receives).

    \b
    The token comes from X_BEARER_TOKEN (or API_BEARER_TOKEN) or --x-token-file; the API
    from X_API_BASE_URL [default https://api.x.com].

    \b
    Examples:
      happyhashtags x-rules list
      happyhashtags x-rules add '#happy -is:retweet lang:en' --tag happy
      happyhashtags x-rules delete 1700000000000000001
      happyhashtags x-rules sync --dry-run --config happyhashtags.toml
    """


@x_rules.command("list")
@format_option(
    "table", "json", help="A table for people, or JSON (a list of {id, value, tag}) for scripts."
)
@_connection_options
@click.pass_context
def list_command(ctx: click.Context, /, fmt: str, **flags: Any) -> None:
    """List the rules on the server."""
    with _client(ctx, flags) as client:
        rules = client.list_rules()
    if fmt == "json":
        payload = [{"id": r.id, "value": r.value, "tag": r.tag} for r in rules]
        click.echo(json.dumps(payload, ensure_ascii=False))
        return
    if not rules:
        click.echo("no rules: the filtered stream will refuse to connect until you add some")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for name in ("id", "value", "tag"):
        table.add_column(name, overflow="fold")
    for rule in rules:
        table.add_row(rule.id, rule.value, rule.tag or "")
    Console(width=max(100, Console().width)).print(table)


@x_rules.command("add")
@click.argument("value")
@click.option("--tag", "-t", metavar="T", help="A tag X sends back with each matching post.")
@click.option("--dry-run", is_flag=True, help="Let the server validate the rule; add nothing.")
@_connection_options
@click.pass_context
def add_command(
    ctx: click.Context, /, value: str, tag: str | None, dry_run: bool, **flags: Any
) -> None:
    """Add the rule VALUE, written in X's rule syntax: '#happy lang:en -is:retweet', say."""
    from happyhashtags.config import XRule

    with _client(ctx, flags) as client:
        change = client.add([XRule(value=value, tag=tag)], dry_run=dry_run)
    if dry_run:
        click.echo(f"valid (dry run, nothing added): {value}")
        return
    for rule in change.rules:
        click.echo(f"added {_describe(rule)}")


@x_rules.command("delete")
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
@click.option("--dry-run", is_flag=True, help="Let the server check the ids; delete nothing.")
@_connection_options
@click.pass_context
def delete_command(
    ctx: click.Context, /, ids: tuple[str, ...], dry_run: bool, **flags: Any
) -> None:
    """Delete the rules with these ids (see 'x-rules list')."""
    with _client(ctx, flags) as client:
        change = client.delete(ids, dry_run=dry_run)
    note = " (dry run: nothing deleted)" if dry_run else ""
    click.echo(f"deleted {change.deleted} rule{'s' if change.deleted != 1 else ''}{note}")


@x_rules.command("sync")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Show the changes and let the server validate them (dry_run=true); change nothing.",
)
@_connection_options
@click.pass_context
def sync_command(ctx: click.Context, /, dry_run: bool, **flags: Any) -> None:
    """Make the server's rules equal to the x_rules setting (in the --config file).

    \b
    Rules on the server that x_rules does not list are deleted; x_rules entries the server
    lacks are added; a rule whose tag changed is deleted and added again.
    """
    from happyhashtags.x_rules import rules_client_from_settings

    settings = settings_from_context(ctx, **flags)
    if not settings.x_rules:
        # Syncing to nothing deletes every rule: far more often a forgotten --config than a wish.
        raise ConfigError(
            "x_rules is empty, and syncing would delete every rule on the server: set x_rules "
            "in the config file (--config FILE); to delete rules, use 'x-rules delete ID...'"
        )
    with rules_client_from_settings(settings) as client:
        result = client.sync(settings.x_rules, dry_run=dry_run)
    plan = result.plan
    for rule in plan.delete:
        click.echo(f"- {_describe(rule)}")
    for wanted in plan.add:
        click.echo(f"+ {_describe(wanted)}")
    if not plan.changes:
        click.echo(f"already in sync: {len(plan.keep)} rules")
    elif dry_run:
        click.echo(
            f"dry run: would add {len(plan.add)} and delete {len(plan.delete)} rules, "
            f"{len(plan.keep)} unchanged (the server validated the changes; nothing changed)"
        )
    else:
        click.echo(
            f"added {len(plan.add)} and deleted {len(plan.delete)} rules, "
            f"{len(plan.keep)} unchanged"
        )


COMMANDS = [x_rules]
