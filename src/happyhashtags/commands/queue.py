"""``ingest``, ``process`` and ``status``: a durable NATS JetStream queue between reading and
counting (see docs/queue.md)."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from happyhashtags.cli import (
    check_workers,
    config_option,
    counting_options,
    database_option,
    format_option,
    print_summary,
    settings_from_context,
    stop_on_signals,
)
from happyhashtags.errors import ConfigError
from happyhashtags.storage.store import Store
from happyhashtags.timeutil import format_duration, parse_duration

if TYPE_CHECKING:
    from happyhashtags.config import Settings
    from happyhashtags.engines.local import RunSummary
    from happyhashtags.queue.status import QueueStatus
    from happyhashtags.queue.url import QueueURL

__all__ = ["COMMANDS", "ingest", "process", "status"]

log = logging.getLogger("happyhashtags")

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


def _size(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    match = _SIZE.match(value)
    if match is None:
        raise click.BadParameter("use bytes or a size like 512MB or 2GB")
    number, unit = match.groups()
    factor = 1024 ** ("kmgt".index(unit.lower()) + 1) if unit else 1
    return int(float(number) * factor)


def _duration(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
    return None if value is None else parse_duration(value)


queue_option = click.option(
    "--queue",
    "-q",
    metavar="URL",
    help="nats://HOST:PORT/STREAM (several hosts: nats://h1:4222,h2:4222/STREAM) "
    "[env HAPPYHASHTAGS_QUEUE].",
)


def _queue_url(settings: Settings) -> QueueURL:
    from happyhashtags.queue.url import parse_queue_url

    if not settings.queue:
        raise ConfigError(
            "no queue given: pass --queue nats://HOST:PORT/STREAM (or set HAPPYHASHTAGS_QUEUE)"
        )
    return parse_queue_url(settings.queue)


@click.command()
@click.option(
    "--source",
    "-s",
    metavar="SRC",
    help="What to read: any source 'run' takes (demo, -, files, x-filtered, bluesky, "
    "...) [default: demo].",
)
@queue_option
@click.option(
    "--spool-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory of the local journal [default .happyhashtags-spool].",
)
@click.option(
    "--spool-max-bytes",
    "spool_max_bytes",
    metavar="SIZE",
    callback=_size,
    help="Journal size cap, e.g. 512MB [default 1GB]: when full, reading stops.",
)
@click.option(
    "--posts-per-message",
    type=click.IntRange(1, 10_000),
    metavar="N",
    help="Lines per JetStream message at most, from one read of the source [default 128; "
    "1: one post per message, its id the Nats-Msg-Id].",
)
@click.option(
    "--replicas",
    "queue_replicas",
    type=click.IntRange(1, 5),
    help="Stream replicas when ingest creates the stream [default 1; 3 in production].",
)
@click.option(
    "--max-age",
    "queue_max_age",
    metavar="DURATION",
    help="Stream retention when ingest creates it [default 7d].",
)
@click.option(
    "--duplicate-window",
    metavar="DURATION",
    callback=_duration,
    help="JetStream's window for dropping repeated publishes [default 10m].",
)
@config_option
@click.pass_context
def ingest(ctx: click.Context, /, duplicate_window: float | None, **flags: Any) -> None:
    """Read a source and publish every message to a JetStream stream (created if absent).

    Lines read together travel together, up to --posts-per-message per JetStream message. Each
    message is journaled on disk first and leaves the journal once JetStream acknowledged it:
    while NATS is unreachable ingest keeps reading (and warns), then drains in order. Its
    Nats-Msg-Id (the post id, or a hash of its lines) lets JetStream drop repeated publishes;
    process counts a post repeated in another message once.

    \b
    Examples:
      happyhashtags ingest -s demo -q nats://127.0.0.1:4222/POSTS
      happyhashtags ingest -s x-filtered -q nats://n1:4222,n2:4222,n3:4222/POSTS --replicas 3
      zcat posts.jsonl.gz | happyhashtags ingest -s - -q nats://127.0.0.1:4222/POSTS
    """
    from happyhashtags.queue.ingest import Ingestor
    from happyhashtags.queue.jetstream import DEFAULT_DUPLICATE_WINDOW, require_nats
    from happyhashtags.sources import open_source

    require_nats()
    settings = settings_from_context(ctx, **flags)
    url = _queue_url(settings)
    source = open_source(settings)
    ingestor = Ingestor(
        source=source,
        url=url,
        spool_dir=settings.spool_dir,
        spool_max_bytes=settings.spool_max_bytes,
        message_posts=settings.posts_per_message,
        replicas=settings.queue_replicas,
        max_age=settings.queue_max_age,
        duplicate_window=duplicate_window or DEFAULT_DUPLICATE_WINDOW,
    )
    log.info("ingesting %s into %s (spool %s)", source.name, url.display, ingestor.spool_dir)
    with stop_on_signals(ingestor.handle_signal):
        summary = ingestor.run()
    note = " (interrupted)" if summary.interrupted else ""
    left = (
        f"; {summary.backlog_bytes / 1e6:.1f} MB left in the spool" if summary.backlog_bytes else ""
    )
    click.echo(
        f"read {summary.lines:,} lines ({summary.undecodable:,} undecodable, published "
        f"for the dead letters); JetStream stored {summary.published:,} messages and dropped "
        f"{summary.duplicates:,} repeated ones{left}; {summary.elapsed:.2f} s{note}"
    )


@click.command()
@queue_option
@database_option
@click.option(
    "--consumer",
    "-c",
    metavar="NAME",
    help="Consumer name: the durable JetStream consumer and the key of the position in "
    "the database [default happyhashtags].",
)
@click.option(
    "--batch",
    "batch_size",
    type=click.IntRange(1, 100_000),
    default=1000,
    show_default=True,
    metavar="N",
    help="Messages per pull from JetStream.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    metavar="N",
    help="Consumers, one process each, each counting its share of the authors (its own "
    "consumer NAME-iofN and position); keep N for a database once it has counts [default 1].",
)
@counting_options
@click.option(
    "--limit",
    type=int,
    metavar="N",
    help="Stop after N posts (at the end of the queue message holding the Nth).",
)
@click.option(
    "--idle-exit",
    metavar="DURATION",
    callback=_duration,
    help="Exit once the stream is drained and quiet for this long (batch jobs, tests).",
)
@click.option(
    "--snapshot-every",
    metavar="DURATION",
    callback=_duration,
    default="1m",
    show_default=True,
    help="Counter snapshots for restarts (a restart replays about this much of the stream).",
)
@click.option("--migrate", "auto_migrate", is_flag=True, help="Migrate the database first.")
@config_option
@click.pass_context
def process(
    ctx: click.Context,
    /,
    batch_size: int,
    idle_exit: float | None,
    snapshot_every: float,
    auto_migrate: bool,
    **flags: Any,
) -> None:
    """Count the posts of a JetStream stream, exactly once, into the database.

    Counts and the last stream sequence they cover commit in one transaction; messages are
    acknowledged after the commit. After a crash it resumes after the committed sequence and
    replays from a counter snapshot (not counting again) so sessions continue unchanged. While
    the database or NATS is down it waits and retries. SIGTERM or Ctrl-C: exits 0. With
    --workers N, N consumers split the authors between them, with the same counts.

    \b
    Examples:
      happyhashtags process -q nats://127.0.0.1:4222/POSTS --database postgresql://localhost/happy
      happyhashtags process -q nats://127.0.0.1:4222/POSTS --idle-exit 10s --migrate
      happyhashtags process -q nats://127.0.0.1:4222/POSTS --workers 2
    """
    from happyhashtags.commands.consume import (
        ConsumeOptions,
        ConsumerFailed,
        consume,
        consume_shares,
    )
    from happyhashtags.queue.jetstream import require_nats

    require_nats()
    flags["happy"] = flags["happy"] or None
    settings = settings_from_context(ctx, **flags)
    check_workers(settings)
    options = ConsumeOptions(
        settings=settings,
        url=_queue_url(settings),
        batch_size=batch_size,
        idle_exit=idle_exit,
        snapshot_every=snapshot_every,
        migrate=auto_migrate,
    )
    summary: RunSummary | None
    workers = settings.workers
    try:
        if workers > 1:
            if auto_migrate:
                # Once, here: the consumers would otherwise migrate side by side.
                with Store(url=settings.database_url.get_secret_value()) as store:
                    store.migrate()
            summary = consume_shares(replace(options, migrate=False), workers)
        else:
            summary = consume(options)
    except ConsumerFailed as exc:
        print_summary(exc.summary)  # what was counted (and committed) before the error
        raise
    if summary is not None:
        print_summary(summary)


@click.command()
@queue_option
@database_option
@click.option(
    "--consumer",
    "-c",
    "consumers",
    multiple=True,
    metavar="NAME",
    help="Only this consumer (repeatable) [default: every consumer in the database].",
)
@format_option("table", "json", help="A table for people, or JSON for monitoring scripts.")
@config_option
@click.pass_context
def status(ctx: click.Context, /, consumers: tuple[str, ...], fmt: str, **flags: Any) -> None:
    """Show the stream's size, each consumer's position and lag, and the dead letters."""
    from happyhashtags.queue.status import queue_status

    settings = settings_from_context(ctx, **flags)
    url = _queue_url(settings)
    with Store(url=settings.database_url.get_secret_value()) as store:
        report = queue_status(url=url, store=store, consumers=list(consumers) or None)
    if fmt == "json":
        click.echo(json.dumps(report.as_dict(), ensure_ascii=False))
        return
    _print_status(report)


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else "-"


def _print_status(report: QueueStatus) -> None:
    age = format_duration(report.max_age) if report.max_age else "unlimited"
    click.echo(f"stream {report.stream} at {report.queue}")
    click.echo(
        f"  {report.messages:,} messages, {report.bytes / 1e6:,.1f} MB, sequences "
        f"{report.first_seq:,} to {report.last_seq:,} ({_when(report.first_time)} to "
        f"{_when(report.last_time)})"
    )
    click.echo(
        f"  format {report.format or '?'}, {report.storage} storage, {report.replicas} "
        f"replica(s), max age {age}"
    )
    if report.database_error:
        click.echo(f"database {report.database}: {report.database_error}")
    elif report.database:
        click.echo(f"database {report.database}: {report.dead_letters:,} dead letters")
    if not report.consumers:
        click.echo("no consumer has counted this stream in that database yet")
    for c in report.consumers:
        if c.position is None:
            click.echo(f"consumer {c.name}: no position in the database")
            continue
        seconds = f"{c.lag_seconds:,.0f} s" if c.lag_seconds is not None else "? s"
        click.echo(
            f"consumer {c.name}: counted up to message {c.position:,} (committed "
            f"{_when(c.updated_at)}); behind by {c.lag_messages:,} messages, {seconds}; "
            f"JetStream acknowledged up to {c.acked_upto if c.acked_upto is not None else '-'}"
        )


COMMANDS = [ingest, process, status]
