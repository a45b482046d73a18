"""The local engine: read, decode, count and write in one process."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

from happyhashtags.aggregate import PostCounter
from happyhashtags.errors import DecodeError, StorageError
from happyhashtags.formats import Decoder, get_decoder
from happyhashtags.model import Checkpoint, DeadLetter, Skipped
from happyhashtags.sources.base import Batch, Clock, Resumable, Source
from happyhashtags.storage.store import Store

__all__ = ["LocalEngine", "RunSummary"]

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
"""Called after each batch with (lines read, posts read)."""


@dataclass(slots=True)
class RunSummary:
    """What a run did."""

    lines: int = 0
    posts: int = 0
    counted: int = 0
    duplicates: int = 0
    replayed: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    dead_letters: int = 0
    flushes: int = 0
    elapsed: float = 0.0
    interrupted: bool = False

    @property
    def posts_per_second(self) -> float:
        return self.posts / self.elapsed if self.elapsed > 0 else 0.0


class LocalEngine:
    """Runs a source through a `PostCounter` into a `Store`, flushing every N posts or T seconds.

    Each flush is one transaction holding the counts, the dead letters and, for a `Resumable`
    source, its position. Stop the engine from a signal handler with `request_stop` (or install
    `handle_signal`): it stops reading, flushes what it counted, and returns.

    `write_retry` is how long (seconds) a failing write is retried with back-off before the run
    fails; `float("inf")` waits for the database for ever (the queue consumer does). On a stop
    request a resumable source's unwritten batch is abandoned (it will be read again); anything
    else is retried until written or the budget is spent.
    """

    def __init__(
        self,
        *,
        source: Source,
        counter: PostCounter,
        store: Store,
        limit: int | None = None,
        flush_posts: int = 100_000,
        flush_interval: float = 5.0,
        write_retry: float = 0.0,
        clock: Clock = time.monotonic,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.source = source
        self.counter = counter
        self.store = store
        self.limit = limit
        self.flush_posts = flush_posts
        self.flush_interval = flush_interval
        self.write_retry = write_retry
        self._clock = clock
        self._progress = progress
        self._stopping = threading.Event()
        self._waiting_for_source = False
        self._dead: list[DeadLetter] = []
        self._resumable = source if isinstance(source, Resumable) else None
        self._cursor: int | None = None
        self._committed_cursor: int | None = None
        self.summary = RunSummary()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def request_stop(self) -> None:
        """Stop after the current post; safe from a signal handler."""
        self._stopping.set()
        self.source.close()

    def handle_signal(self, signum: int, _frame: FrameType | None) -> None:
        """A signal handler (SIGINT, SIGTERM) that stops the run cleanly, with a flush."""
        log.warning("signal %d: stopping; what was counted so far will be written", signum)
        self.request_stop()
        if self._waiting_for_source:
            # Blocked in a read (a quiet pipe or stream): unblock it. Never raised mid-count.
            raise KeyboardInterrupt

    def run(self) -> RunSummary:
        """Read the source to its end (or the limit, or a stop), flushing as configured."""
        summary = self.summary
        decode = get_decoder(self.source.format)
        if self._resumable is not None:
            checkpoint = self.store.read_position(self._resumable.consumer)
            self._cursor = self._committed_cursor = checkpoint.position if checkpoint else None
            self._resumable.resume(checkpoint)
        started = last_flush = self._clock()
        flushed_posts = 0
        batches = self.source.batches()
        try:
            while not self.stopping:
                self._waiting_for_source = True
                try:
                    batch = next(batches, None)
                finally:
                    self._waiting_for_source = False
                if batch is None:
                    break
                self._process(batch, decode)
                if self._progress is not None:
                    self._progress(summary.lines, summary.posts)
                now = self._clock()
                if (
                    summary.posts - flushed_posts >= self.flush_posts
                    or now - last_flush >= self.flush_interval
                ):
                    self.flush()
                    flushed_posts, last_flush = summary.posts, now
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            self.source.close()
            self.flush()
            summary.elapsed = self._clock() - started
            summary.counted = self.counter.stats.counted
            summary.duplicates = self.counter.stats.duplicates
        return summary

    def _process(self, batch: Batch, decode: Decoder) -> None:
        summary, counter, limit = self.summary, self.counter, self.limit
        count = counter.replay if batch.replay else counter.add
        done = 0
        for raw in batch.lines:
            done += 1
            summary.lines += 1
            line = raw.strip()
            if not line:
                summary.skipped["blank"] += 1
                continue
            try:
                item = decode(line, batch.received_at)
            except DecodeError as exc:
                summary.skipped[exc.reason] += 1
                if not batch.replay:
                    where = batch.origin
                    if batch.first_line:
                        where = f"{where}:{batch.first_line + done - 1}"
                    self._dead.append(
                        DeadLetter(batch.received_at, where, exc.reason, exc.detail, line)
                    )
                continue
            if isinstance(item, Skipped):
                summary.skipped[item.reason] += 1
                continue
            count(item)
            if batch.replay:
                summary.replayed += 1
                continue
            summary.posts += 1
            if limit is not None and summary.posts >= limit:
                self._stopping.set()
                break
        if batch.cursors is not None and done:
            self._cursor = batch.cursors[done - 1]

    def flush(self) -> None:
        """Write pending counts, dead letters and the source position in one transaction."""
        counts = self.counter.drain()
        dead, self._dead = self._dead, []
        positions: dict[str, Checkpoint] = {}
        source, cursor = self._resumable, self._cursor
        if source is not None and cursor is not None and cursor != self._committed_cursor:
            positions[source.consumer] = Checkpoint(cursor, source.checkpoint_state(cursor))
        if not (counts or dead or positions):
            return
        delay, deadline = 0.5, self._clock() + self.write_retry
        while True:
            try:
                self.store.write(counts, dead, positions=positions)
                break
            except StorageError as exc:
                if source is not None and self.stopping:
                    log.warning("stopping with the last batch unwritten (%s); it will be read again", exc)
                    return
                if self._clock() + delay > deadline:
                    self.counter.restore(counts)
                    self._dead[:0] = dead
                    raise
                log.warning("%s; retrying in %.1f s", exc, delay)
                self._stopping.wait(delay) if source is None else self._wait(delay)
                delay = min(delay * 2, 30.0)
        self.summary.dead_letters += len(dead)
        self.summary.flushes += 1
        if positions and source is not None and cursor is not None:
            self._committed_cursor = cursor
            source.committed(cursor)
        log.debug("flushed %d cells, %d dead letters", len(counts), len(dead))

    def _wait(self, seconds: float) -> None:
        self._stopping.wait(seconds)
