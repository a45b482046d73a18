"""The command line: parse arguments, build objects, call the library. Nothing else lives here."""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from happyhashtags import __version__
from happyhashtags._cpus import usable_cpus
from happyhashtags.aggregate import COMPILED, PostCounter
from happyhashtags.config import Settings, load_settings
from happyhashtags.engines.local import LocalEngine, RunSummary
from happyhashtags.engines.parallel import ParallelEngine
from happyhashtags.errors import ConfigError, HappyHashtagsError
from happyhashtags.happy import HappyMatcher
from happyhashtags.sources import open_source, source_names
from happyhashtags.storage.store import Store, TopRow, database_url_for_display
from happyhashtags.timeutil import format_duration, parse_time

__all__ = ["cli", "main"]

log = logging.getLogger("happyhashtags")
stderr = Console(stderr=True)


class _Group(click.Group):
    """Turns the package's own errors into one clear line and a non-zero exit, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            stderr.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            ctx.exit(2)
        except HappyHashtagsError as exc:
            stderr.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            ctx.exit(1)


def settings_from_context(ctx: click.Context, **flags: Any) -> Settings:
    """Settings from a command's flags (None = not given), the environment and --config."""
    root = ctx.find_root().params
    config_file = flags.pop("config", None) or root.get("config")
    if config_file is None and os.environ.get("HAPPYHASHTAGS_CONFIG"):
        config_file = Path(os.environ["HAPPYHASHTAGS_CONFIG"])
    return load_settings(flags, config_file=config_file, environ=os.environ)


def check_workers(settings: Settings, cpus: int | None = None) -> None:
    """Refuse settings that several processes cannot honour (``run`` and ``process``), and warn
    where they cannot help: as many processes as CPUs (`cpus`: this process may use, by
    `usable_cpus`: its affinity and its CPU quota) or more.

    Raises:
        ConfigError: `limit` with more than one worker: the limit counts posts in one process.
    """
    if settings.workers > 1 and settings.limit is not None:
        raise ConfigError("--limit counts posts in one process: use it with --workers 1")
    if cpus is None:
        cpus = usable_cpus()
    if settings.workers > 1 and settings.workers >= cpus:
        log.warning(
            "--workers %d on %d CPU%s: the processes share them, with the database if it runs "
            "here, so expect little or no gain (on the 2-vCPU benchmark machine, --workers 2 "
            "was slower than one process: docs/benchmarks.md)",
            settings.workers,
            cpus,
            "" if cpus == 1 else "s",
        )


def counting_rules(settings: Settings) -> str:
    """The counting settings in a few words, for the log: ``bucket 1h, sessions 30m``."""
    sessions = format_duration(settings.session_gap) if settings.session_gap else "off"
    return f"bucket {format_duration(settings.bucket)}, sessions {sessions}"


def counter_from_settings(settings: Settings) -> PostCounter:
    """The counting rules the settings ask for."""
    return PostCounter(
        bucket_seconds=settings.bucket_seconds,
        happy=HappyMatcher(settings.happy),
        session_gap=settings.session_gap,
        count_retweets=settings.retweets,
        dedupe_capacity=settings.dedupe_ids,
        allowed_lateness=settings.allowed_lateness,
        max_sessions=settings.max_sessions,
        max_session_keys=settings.max_session_keys,
    )


def setup_logging(level: str, *, prefix: str = "") -> None:
    """Log to stderr at `level` (``info``...), each message after `prefix`."""
    handler = RichHandler(console=stderr, show_path=False, rich_tracebacks=False)
    logging.basicConfig(
        level=level.upper(), format=f"{prefix}%(message)s", handlers=[handler], force=True
    )
    # Alembic narrates every step at INFO; only its warnings matter to a user.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLogger().level))
    # httpx logs every request at INFO; the X source logs what matters (connects, reconnects).
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))


database_option = click.option(
    "--database",
    "database_url",
    metavar="URL",
    help="SQLAlchemy database URL [env HAPPYHASHTAGS_DATABASE_URL or POSTGRES_*; "
    "default sqlite:///happyhashtags.db].",
)


def format_option(*formats: str, help: str) -> Callable[[Callable[..., Any]], Any]:
    """``--format`` (the parameter ``fmt``), one of `formats`, the first by default."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(list(formats)),
        default=formats[0],
        show_default=True,
        help=help,
    )


config_option = click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML config file with the same keys as the settings [env HAPPYHASHTAGS_CONFIG].",
)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    __version__,
    prog_name="happyhashtags",
    message="%(prog)s, version %(version)s ("
    + ("compiled speedups" if COMPILED else "pure Python: happyhashtags._speedups is not built")
    + ")",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
    help="How much to log (to stderr).",
)
def cli(log_level: str) -> None:
    """Count which hashtags people use when they are happy, from social streams, per time bucket,
    into SQLite or Postgres."""
    setup_logging(log_level)


def source_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options that choose and configure a source (shared by run and ingest)."""
    options = [
        click.option(
            "--source",
            "-s",
            metavar="SRC",
            help=f"What to read: {', '.join(n for n in source_names() if n != '-')}, "
            "a path or glob of JSON Lines files (.gz/.bz2/.xz/.zst), or - for stdin "
            "[default: demo].",
        ),
        click.option(
            "--limit", type=click.IntRange(min=1), metavar="N", help="Stop after N posts."
        ),
        click.option(
            "--x-token-file",
            type=click.Path(dir_okay=False, path_type=Path),
            metavar="PATH",
            help="File holding the X API bearer token "
            "[env HAPPYHASHTAGS_X_TOKEN_FILE; or set X_BEARER_TOKEN].",
        ),
        click.option(
            "--bluesky-url",
            "bluesky_urls",
            multiple=True,
            metavar="URL",
            callback=lambda _ctx, _param, value: value or None,
            help="Jetstream URL (repeatable, tried in order) [env BLUESKY_JETSTREAM_URL].",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def counting_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options of the counting rules and of flushing (shared by run and process)."""
    options = [
        click.option(
            "--happy",
            multiple=True,
            metavar="MARKER",
            callback=lambda _ctx, _param, value: value or None,
            help="A happy marker (repeatable; replaces the default ':)'). Emoji match whole emoji.",
        ),
        click.option(
            "--bucket", metavar="DURATION", help="Bucket size, e.g. 1h, 15m, 1d [default: 1h]."
        ),
        click.option(
            "--session-gap",
            metavar="DURATION",
            help="Anti-spam session gap; 0 turns sessions off [default: 30m].",
        ),
        click.option(
            "--retweets/--no-retweets", default=None, help="Count retweets [default: yes]."
        ),
        click.option(
            "--flush-posts", type=int, metavar="N", help="Write counts every N posts [100000]."
        ),
        click.option(
            "--flush-interval", metavar="DURATION", help="... or every DURATION [default: 5s]."
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@cli.command()
@source_options
@database_option
@counting_options
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    metavar="N",
    help="Counting processes; posts are spread by author, so counts are the same [1].",
)
@click.option("--migrate", "auto_migrate", is_flag=True, help="Migrate the database first.")
@click.option(
    "--top",
    "top_n",
    type=int,
    default=10,
    show_default=True,
    metavar="N",
    help="Print the N happiest hashtags at the end (0: none).",
)
@config_option
@click.pass_context
def run(ctx: click.Context, /, auto_migrate: bool, top_n: int, **flags: Any) -> None:
    """Read a stream, count happy hashtags, write the counts: all in one process.

    \b
    Examples:
      happyhashtags run                              # the built-in demo stream
      happyhashtags run -s 'archive/*.jsonl.gz' --session-gap 0
      zcat posts.jsonl.gz | happyhashtags run -s - --happy ':)' --happy 😊
    """
    settings = settings_from_context(ctx, **flags)
    check_workers(settings)
    store = Store(url=settings.database_url.get_secret_value())
    if auto_migrate:
        store.migrate()
    store.ensure_ready()
    store.check_setting("bucket", format_duration(settings.bucket))
    source = open_source(settings)
    counter = counter_from_settings(settings)
    log.info(
        "reading %s into %s (%s)",
        source.name,
        database_url_for_display(store.url),
        counting_rules(settings),
    )
    total = min(filter(None, (source.total, settings.limit)), default=None)
    engine: LocalEngine | ParallelEngine
    display = ProgressDisplay(total)
    if settings.workers > 1:
        engine = ParallelEngine(
            source=source,
            counter=counter,
            store=store,
            workers=settings.workers,
            flush_posts=settings.flush_posts,
            flush_interval=settings.flush_interval,
            progress=display.update,
        )
        engine.start()  # before the display's thread starts: the workers are then forked
    else:
        engine = LocalEngine(
            source=source,
            counter=counter,
            store=store,
            limit=settings.limit,
            flush_posts=settings.flush_posts,
            flush_interval=settings.flush_interval,
            progress=display.update,
        )
    with display, stop_on_signals(engine.handle_signal):
        summary = engine.run()
    print_summary(summary)
    if top_n > 0:
        print_top(store.top(limit=top_n), "table", title="Happiest hashtags")
    store.close()


class ProgressDisplay:
    """The progress bar on stderr (when it is a terminal). `update` may be called before the
    display starts (``with``): the engine is built first, and the display's refresh thread
    starts only when it is entered."""

    def __init__(self, total: int | None) -> None:
        columns: list[Any] = [TextColumn("[bold]counting"), BarColumn(), MofNCompleteColumn()]
        if total is None:
            columns = [TextColumn("[bold]counting"), TextColumn("{task.completed:,} posts")]
        columns += [TextColumn("{task.fields[rate]}"), TimeElapsedColumn()]
        self._bar = Progress(
            *columns, console=stderr, transient=True, disable=not stderr.is_terminal
        )
        self._task = self._bar.add_task("count", total=total, rate="")

    def update(self, _lines: int, posts: int) -> None:
        """An engine's progress callback."""
        elapsed = self._bar.tasks[0].elapsed or 0.0
        rate = f"{posts / elapsed:,.0f} posts/s" if elapsed > 0 else ""
        self._bar.update(self._task, completed=posts, rate=rate)

    def __enter__(self) -> ProgressDisplay:
        self._bar.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._bar.stop()


@contextmanager
def stop_on_signals(handler: Callable[[int, Any], None]) -> Iterator[None]:
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def print_summary(summary: RunSummary) -> None:
    """The end-of-run summary: what was read, counted and skipped, and how fast."""
    skipped = ", ".join(f"{reason} {n:,}" for reason, n in summary.skipped.most_common()) or "none"
    note = " (interrupted: counts so far were written)" if summary.interrupted else ""
    idle = f" over {summary.elapsed - summary.idle:.2f} s busy" if summary.idle else ""
    click.echo(
        f"read {summary.lines:,} lines in {summary.elapsed:.2f} s "
        f"({summary.posts_per_second:,.0f} posts/s{idle}){note}\n"
        f"posts {summary.posts:,}; counted {summary.counted:,}; duplicates {summary.duplicates:,}; "
        f"skipped: {skipped}; dead letters {summary.dead_letters:,}"
    )
    if summary.replayed:
        click.echo(
            f"replayed {summary.replayed:,} posts counted before (to rebuild sessions, not counted)"
        )


def print_top(rows: list[TopRow], fmt: str, *, title: str | None = None) -> None:
    fields = ["rank", "hashtag", "happy_tweets", "tweets", "happy_ratio", "happy_score"]
    if fmt == "json":
        click.echo(
            json.dumps([{f: getattr(r, f) for f in fields} for r in rows], ensure_ascii=False)
        )
        return
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(fields)
        for r in rows:
            writer.writerow(
                [
                    r.rank,
                    r.hashtag,
                    r.happy_tweets,
                    r.tweets,
                    f"{r.happy_ratio:.6f}",
                    f"{r.happy_score:.6f}",
                ]
            )
        return
    table = Table(title=title)
    for name, justify in [
        ("#", "right"),
        ("hashtag", "left"),
        ("happy posts", "right"),
        ("posts", "right"),
        ("happy %", "right"),
        ("score", "right"),
    ]:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        table.add_row(
            str(r.rank),
            "#" + r.hashtag,
            f"{r.happy_tweets:,}",
            f"{r.tweets:,}",
            f"{100 * r.happy_ratio:.1f}",
            f"{r.happy_score:.3f}",
        )
    if not rows:
        click.echo("no hashtags counted in that range yet")
        return
    Console(width=max(80, Console().width)).print(table)


@cli.command()
@database_option
@click.option("--since", metavar="T", help="Buckets starting at or after T (ISO 8601, UTC).")
@click.option("--until", metavar="T", help="Buckets starting before T (ISO 8601, UTC).")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="How many hashtags to show.",
)
@click.option(
    "--rank",
    type=click.Choice(["happy", "ratio"]),
    default="happy",
    show_default=True,
    help="happy: most happy posts; ratio: highest Wilson lower bound of the happy share.",
)
@click.option(
    "--min-tweets",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Leave out hashtags with fewer posts in the range.",
)
@format_option("table", "json", "csv", help="table for people; json or csv for programs.")
@config_option
@click.pass_context
def top(
    ctx: click.Context,
    /,
    since: str | None,
    until: str | None,
    limit: int,
    rank: str,
    min_tweets: int,
    fmt: str,
    **flags: Any,
) -> None:
    """The happiest hashtags over a time range."""
    settings = settings_from_context(ctx, **flags)
    with Store(url=settings.database_url.get_secret_value()) as store:
        store.ensure_ready()
        rows = store.top(
            since=parse_time(since) if since else None,
            until=parse_time(until) if until else None,
            limit=limit,
            rank="ratio" if rank == "ratio" else "happy",
            min_tweets=min_tweets,
        )
    print_top(rows, fmt)


@cli.command()
@database_option
@click.option("--downgrade", metavar="REV", help="Downgrade to REV instead ('base' drops all).")
@click.option(
    "--revision", default="head", show_default=True, metavar="REV", help="Upgrade to REV."
)
@config_option
@click.pass_context
def migrate(ctx: click.Context, /, downgrade: str | None, revision: str, **flags: Any) -> None:
    """Create or upgrade the database schema (Alembic)."""
    settings = settings_from_context(ctx, **flags)
    with Store(url=settings.database_url.get_secret_value()) as store:
        before = store.current_revision()
        if downgrade:
            store.downgrade(downgrade)
        else:
            store.migrate(revision)
        after = store.current_revision()
        where = database_url_for_display(store.url)
    if before == after:
        click.echo(f"{where}: already at {after or 'base'}")
    else:
        click.echo(f"{where}: migrated {before or 'base'} -> {after or 'base'}")


def _register_plugin_commands() -> None:
    # Each module in happyhashtags.commands adds commands by listing them in COMMANDS, so a new
    # connector's commands need no edit here. Imported last: they may use this module's helpers.
    import importlib
    import pkgutil

    from happyhashtags import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        for command in getattr(module, "COMMANDS", ()):
            cli.add_command(command)


_register_plugin_commands()


def main() -> None:
    """Entry point of the ``happyhashtags`` command."""
    cli(prog_name="happyhashtags")
