"""The body of ``process``: one consumer counting a JetStream stream into the database, or N of
them in N processes, each counting its share of the authors (``--workers N``).

Each of the N consumers is a durable JetStream consumer of the whole stream with a name of its
own (``NAME-1of2``, ``NAME-2of2``), its own position in the database, its own counter snapshots,
and a `LocalEngine` that counts only the lines of its `Share` (split by author, as ``run
--workers`` splits them). So each is exactly-once on its own, as one consumer is, and their
counts add up to one consumer's. Every consumer reads every message: the NATS client's cost per
message is paid N times, the counting once.

A database counted with one layout (one consumer, or N) refuses another: the new consumers would
have no position and count everything again. The error says which layout it holds.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

from happyhashtags.cli import (
    counter_from_settings,
    counting_rules,
    setup_logging,
    stop_on_signals,
)
from happyhashtags.engines.base import Share
from happyhashtags.engines.local import RunSummary
from happyhashtags.errors import ConfigError, HappyHashtagsError, StorageError
from happyhashtags.storage.store import Store, database_url_for_display
from happyhashtags.timeutil import format_duration

if TYPE_CHECKING:
    from happyhashtags.config import Settings
    from happyhashtags.queue.url import QueueURL

__all__ = [
    "ConsumeOptions",
    "check_layout",
    "consume",
    "consume_shares",
    "share_consumer",
    "wait_for_database",
]

log = logging.getLogger("happyhashtags")

_SHARE_NAME = re.compile(r"^(?P<base>.+)-(?P<index>\d+)of(?P<count>\d+)$")


@dataclass(frozen=True)
class ConsumeOptions:
    """What ``process`` was asked to do (picklable: the worker processes get a copy)."""

    settings: Settings
    url: QueueURL
    batch_size: int = 1000
    idle_exit: float | None = None
    snapshot_every: float = 60.0
    migrate: bool = False


def share_consumer(base: str, share: Share) -> str:
    """The consumer name of `share`: ``NAME-1of2`` (JetStream names may not hold dots)."""
    return f"{base}-{share.index + 1}of{share.count}"


def check_layout(store: Store, base: str, workers: int) -> None:
    """Refuse a database whose positions were committed by another number of consumers.

    Raises:
        ConfigError: ``base`` (or its shares) counted this database with another layout.
    """
    layouts: set[int] = set()
    for name in store.positions():
        if name == base:
            layouts.add(1)
        elif (match := _SHARE_NAME.match(name)) and match["base"] == base:
            layouts.add(int(match["count"]))
    other = sorted(layouts - {workers})
    if other:
        held = ", ".join("one consumer" if n == 1 else f"--workers {n}" for n in other)
        raise ConfigError(
            f"consumer {base} counted this database with {held}; with --workers {workers} its "
            "consumers would start without a position and count the stream again: run with "
            "the same --workers, or count into a new database"
        )


class _Stopper:
    """One SIGINT/SIGTERM handler for a command's phases: waiting, then the engine's own."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.on_stop: list[Callable[[], None]] = []
        self.delegate: Callable[[int, Any], None] | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        self.event.set()
        for callback in self.on_stop:
            callback()
        if self.delegate is not None:
            self.delegate(signum, frame)
        else:
            log.warning("signal %d: stopping", signum)


def wait_for_database(
    store: Store, settings: Settings, *, migrate: bool, stop: threading.Event
) -> bool:
    """Migrate/check the database, retrying with back-off while it is unreachable. False if a
    stop was requested first."""
    delay = 0.5
    where = database_url_for_display(store.url)
    while not stop.is_set():
        try:
            store.current_revision()  # a connection check: StorageError when unreachable
        except StorageError as exc:
            log.warning("%s; retrying in %.1f s", exc, delay)
            stop.wait(delay)
            delay = min(delay * 2, 30.0)
            continue
        if migrate:
            store.migrate()
        store.ensure_ready()
        store.check_setting("bucket", format_duration(settings.bucket))
        log.debug("database %s is ready", where)
        return True
    return False


class ConsumerFailed(HappyHashtagsError):
    """A consumer stopped on an error after counting: `summary` says what it had done (its
    counts up to there are committed)."""

    def __init__(self, message: str, summary: RunSummary) -> None:
        super().__init__(message)
        self.summary = summary


def consume(options: ConsumeOptions, share: Share | None = None) -> RunSummary | None:
    """Run one consumer (of `share`, or of the whole stream) until it stops; its summary, or
    None if it was stopped before it started counting.

    Raises:
        ConsumerFailed: the consumer was taken over by another process.
        HappyHashtagsError: a configuration problem.
    """
    from happyhashtags.engines.local import LocalEngine
    from happyhashtags.queue.consumer import NatsSource

    settings, url = options.settings, options.url
    workers = share.count if share is not None else 1
    consumer = settings.consumer if share is None else share_consumer(settings.consumer, share)
    store = Store(url=settings.database_url.get_secret_value())
    counter = counter_from_settings(settings)
    stopper = _Stopper()
    with (
        NatsSource(
            url=url,
            consumer=consumer,
            counter=counter,
            batch_size=options.batch_size,
            idle_exit=options.idle_exit,
            snapshot_every=options.snapshot_every,
        ) as source,
        stop_on_signals(stopper),
    ):
        stopper.on_stop.append(source.close)
        if not wait_for_database(store, settings, migrate=options.migrate, stop=stopper.event):
            return None
        check_layout(store, settings.consumer, workers)
        if not source.connect():
            return None
        log.info(
            "counting %s into %s as consumer %s (%s)",
            url.display,
            database_url_for_display(store.url),
            consumer,
            counting_rules(settings),
        )
        engine = LocalEngine(
            source=source,
            counter=counter,
            store=store,
            limit=settings.limit,
            flush_posts=settings.flush_posts,
            flush_interval=settings.flush_interval,
            write_retry=float("inf"),
            progress=_progress_logger(source),
            share=share,
        )
        stopper.delegate = engine.handle_signal
        if stopper.event.is_set():
            return None
        summary = engine.run()
    store.close()
    if source.taken_over:
        raise ConsumerFailed(
            f"another process took over consumer {consumer}: run one process per consumer name "
            "(see docs/queue.md)",
            summary,
        )
    return summary


def _progress_logger(source: Any, every: float = 10.0) -> Callable[[int, int], None]:
    state = {"last": time.monotonic(), "posts": 0}

    def progress(_lines: int, posts: int) -> None:
        now = time.monotonic()
        elapsed = now - state["last"]
        if elapsed < every:
            return
        rate = (posts - state["posts"]) / elapsed
        state["last"], state["posts"] = now, posts
        behind, seconds = source.lag()
        log.info(
            "counted %s posts (%s/s); at message %d; %s messages behind (%.0f s)",
            f"{posts:,}",
            f"{rate:,.0f}",
            source.position,
            f"{behind:,}",
            seconds,
        )

    return progress


def _share_main(options: ConsumeOptions, share: Share, report: Connection, log_level: int) -> None:
    """A worker process: one share's consumer; its summary (or error) goes to `report`."""
    name = share_consumer(options.settings.consumer, share)
    setup_logging(logging.getLevelName(log_level), prefix=f"{name}: ")
    result: tuple[str, Any]
    try:
        result = ("ok", consume(options, share))
    except ConfigError as exc:
        result = ("config", str(exc))
    except ConsumerFailed as exc:
        result = ("failed", (str(exc), exc.summary))
    except HappyHashtagsError as exc:
        result = ("error", str(exc))
    except BaseException as exc:  # reported by the parent, which fails the command
        result = ("error", f"{type(exc).__name__}: {exc}")
    report.send(result)
    report.close()


def consume_shares(options: ConsumeOptions, workers: int) -> RunSummary:
    """Run `workers` consumers in as many processes until all have stopped; their summed
    summary. SIGINT/SIGTERM stop them all (each commits what it counted); so does the first
    that fails.

    Raises:
        ConfigError: a consumer refused its configuration (the layout check, say).
        ConsumerFailed: a consumer failed or died; its `summary` adds up what all had done.
    """
    context = multiprocessing.get_context("spawn")  # this process may run threads: never fork
    processes: list[BaseProcess] = []
    reports: dict[Connection, int] = {}  # one pipe each: a killed worker cannot block another
    for i in range(workers):
        receive, send = context.Pipe(duplex=False)
        worker = context.Process(
            target=_share_main,
            args=(options, Share(i, workers), send, logging.getLogger().level),
            name=f"consumer {i + 1} of {workers}",
        )
        worker.start()
        send.close()
        processes.append(worker)
        reports[receive] = i
    stopping = False

    def stop_all() -> None:
        nonlocal stopping
        stopping = True
        for process in processes:
            if process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)  # each commits what it counted

    def on_signal(signum: int, _frame: Any) -> None:
        log.warning("signal %d: stopping the %d consumers", signum, workers)
        stop_all()

    merged = RunSummary()
    errors: list[tuple[str, str]] = []
    with stop_on_signals(on_signal):
        while reports:
            for ready in wait(list(reports), timeout=1.0):
                assert isinstance(ready, Connection)
                process = processes[reports.pop(ready)]
                try:
                    status, payload = ready.recv()
                except EOFError:  # ended without a report: killed, or stopped before it began
                    process.join()
                    if not (stopping and process.exitcode == -signal.SIGTERM):
                        errors.append(("error", f"{process.name} died (exit {process.exitcode})"))
                        stop_all()
                    continue
                if status == "failed":
                    payload, done = payload
                    _merge_share(merged, done)
                if status == "ok":
                    if payload is not None:
                        _merge_share(merged, payload)
                else:
                    errors.append((status, f"{process.name}: {payload}"))
                    stop_all()
        for process in processes:
            process.join()
    if errors:
        message = "; ".join(text for _, text in errors)
        if any(kind == "config" for kind, _ in errors):
            raise ConfigError(message)
        raise ConsumerFailed(message, merged)
    return merged


def _merge_share(merged: RunSummary, share: RunSummary) -> None:
    lines = max(merged.lines, share.lines)  # each consumer reads every line
    merged.add(share)
    merged.lines = lines
