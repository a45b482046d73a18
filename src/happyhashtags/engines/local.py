"""The local engine: read, decode, count and write in one process."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

from happyhashtags.aggregate import PostCounter
from happyhashtags.errors import DecodeError
from happyhashtags.formats import get_decoder
from happyhashtags.model import DeadLetter, Skipped
from happyhashtags.sources.base import Clock, Source
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

    Stop it from a signal handler with `request_stop` (or install `handle_signal`): it stops reading,
    flushes what it counted, and returns.
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
        clock: Clock = time.monotonic,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.source = source
        self.counter = counter
        self.store = store
        self.limit = limit
        self.flush_posts = flush_posts
        self.flush_interval = flush_interval
        self._clock = clock
        self._progress = progress
        self._stop = False
        self._waiting_for_source = False
        self._dead: list[DeadLetter] = []
        self.summary = RunSummary()

    def request_stop(self) -> None:
        """Stop after the current post; safe from a signal handler."""
        self._stop = True
        self.source.close()

    def handle_signal(self, signum: int, _frame: FrameType | None) -> None:
        """A signal handler (SIGINT, SIGTERM) that stops the run cleanly, with a flush."""
        log.warning("signal %d: stopping; counts read so far will be written", signum)
        self.request_stop()
        if self._waiting_for_source:
            # Blocked in a read (a quiet pipe or stream): unblock it. Never raised mid-count.
            raise KeyboardInterrupt

    def run(self) -> RunSummary:
        """Read the source to its end (or the limit, or a stop), flushing as configured."""
        summary = self.summary
        decode = get_decoder(self.source.format)
        counter = self.counter
        started = last_flush = self._clock()
        flushed_posts = 0
        batches = self.source.batches()
        try:
            while not self._stop:
                self._waiting_for_source = True
                try:
                    batch = next(batches, None)
                finally:
                    self._waiting_for_source = False
                if batch is None:
                    break
                for offset, raw in enumerate(batch.lines):
                    summary.lines += 1
                    line = raw.strip()
                    if not line:
                        summary.skipped["blank"] += 1
                        continue
                    try:
                        item = decode(line, batch.received_at)
                    except DecodeError as exc:
                        summary.skipped[exc.reason] += 1
                        where = f"{batch.origin}:{batch.first_line + offset}" if batch.first_line else batch.origin
                        self._dead.append(
                            DeadLetter(batch.received_at, where, exc.reason, exc.detail, line)
                        )
                        continue
                    if isinstance(item, Skipped):
                        summary.skipped[item.reason] += 1
                        continue
                    counter.add(item)
                    summary.posts += 1
                    if self.limit is not None and summary.posts >= self.limit:
                        self._stop = True
                        break
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
            stats = counter.stats
            summary.counted = stats.counted
            summary.duplicates = stats.duplicates
        return summary

    def flush(self) -> None:
        """Write the pending counts and dead letters in one transaction."""
        counts = self.counter.drain()
        dead, self._dead = self._dead, []
        if counts or dead:
            self.store.write(counts, dead)
            self.summary.dead_letters += len(dead)
            self.summary.flushes += 1
            log.debug("flushed %d cells, %d dead letters", len(counts), len(dead))
