"""The local engine: read, decode, count and write in one process."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar, cast

from happyhashtags.aggregate import Counts, PostCounter
from happyhashtags.engines.base import Share, StoppableEngine, fewer_collections
from happyhashtags.errors import DecodeError, PositionConflict, StorageError
from happyhashtags.formats import Decoder, LineCounter, get_decoder, get_line_counter
from happyhashtags.model import Checkpoint, DeadLetter, Post
from happyhashtags.sources.base import Batch, Clock, Resumable, Source, spread_lines
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
    idle: float = 0.0
    """Of `elapsed`, the seconds waited at the end for input that did not come (the source
    stopped on its own, as `process --idle-exit` does): not counted in `posts_per_second`."""
    interrupted: bool = False

    def add(self, other: RunSummary) -> None:
        """Add what another engine (a worker, a share's consumer) did; `elapsed` is the longest,
        and so is the busy time (`elapsed` less `idle`)."""
        self.lines += other.lines
        self.posts += other.posts
        self.counted += other.counted
        self.duplicates += other.duplicates
        self.replayed += other.replayed
        self.skipped.update(other.skipped)
        self.dead_letters += other.dead_letters
        self.flushes += other.flushes
        busy = max(self.elapsed - self.idle, other.elapsed - other.idle)
        self.elapsed = max(self.elapsed, other.elapsed)
        self.idle = self.elapsed - busy
        self.interrupted = self.interrupted or other.interrupted

    @property
    def posts_per_second(self) -> float:
        busy = self.elapsed - self.idle
        return self.posts / busy if busy > 0 else 0.0


class LocalEngine(StoppableEngine):
    """Runs a source through a `PostCounter` into a `Store`, flushing every N posts or T seconds.

    Each flush is one transaction holding the counts, the dead letters and, for a `Resumable`
    source, its position. Stop the engine from a signal handler with `request_stop` (or install
    `handle_signal`): it stops reading, flushes what it counted, and returns.

    `write_retry` is how long (seconds) a failing write is retried with back-off before the run
    fails; `float("inf")` waits for the database for ever (the queue consumer does). On a stop
    request a resumable source's unwritten batch is abandoned (it will be read again); anything
    else is retried until written or the budget is spent.

    With a `share`, the engine counts only the lines of that share of the authors and passes
    over the rest (still moving a resumable source's position past them): N engines with the
    N shares of one stream count it all between them, each exactly once.
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
        overlap_writes: bool = True,
        clock: Clock = time.monotonic,
        progress: ProgressCallback | None = None,
        share: Share | None = None,
    ) -> None:
        super().__init__(source=source)
        self.share = share
        self._select = None if share is None else share.selector(source.format)
        self.counter = counter
        self.store = store
        self.limit = limit
        self.flush_posts = flush_posts
        self.flush_interval = flush_interval
        self.write_retry = write_retry
        self._clock = clock
        self._progress = progress
        self._dead: list[DeadLetter] = []
        self._resumable = source if isinstance(source, Resumable) else None
        self._cursor: int | None = None
        self._committed_cursor: int | None = None
        self._fenced_out = False
        self.overlap_writes = overlap_writes
        self._writer: ThreadPoolExecutor | None = None
        self._pending: tuple[Future[bool], _WriteJob] | None = None
        self._count_lines: LineCounter | None = None
        self.summary = RunSummary()

    def run(self) -> RunSummary:
        """Read the source to its end (or the limit, or a stop), flushing as configured."""
        summary = self.summary
        decode = get_decoder(self.source.format)
        self._count_lines = get_line_counter(self.source.format)
        if self._resumable is not None:
            consumer = self._resumable.consumer
            # The database may be down at start too: the same patience as for writes.
            found = self._retrying(lambda: self.store.read_position(consumer), abandon_on_stop=True)
            if found is _ABANDONED:
                return self.summary
            checkpoint = cast(Checkpoint | None, found)
            self._cursor = self._committed_cursor = checkpoint.position if checkpoint else None
            self._resumable.resume(checkpoint)
        started = last_flush = self._clock()
        flushed_posts = 0
        batches = self.source.batches()
        with fewer_collections():
            try:
                while (batch := self._next_batch(batches)) is not None:
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
                try:
                    self.flush(wait=True)
                finally:
                    if self._writer is not None:
                        self._writer.shutdown(wait=True)
                        self._writer = None
                # Stopped on request wherever the signal found it (reading, counting, writing).
                summary.interrupted = summary.interrupted or self.stop_requested
                summary.elapsed = self._clock() - started
                # Sources that stop on their own after a quiet spell say how long it was.
                summary.idle = min(float(getattr(self.source, "idle_tail", 0.0)), summary.elapsed)
                summary.counted = self.counter.stats.counted
                summary.duplicates = self.counter.stats.duplicates
        return summary

    def _process(self, batch: Batch, decode: Decoder) -> None:
        remaining = None if self.limit is None or batch.replay else self.limit - self.summary.posts
        if (
            self._count_lines is not None
            and not batch.replay
            and (remaining is None or len(batch.lines) <= remaining)
        ):
            done = self._count_whole(batch, self._count_lines, remaining)
        else:
            done = self._decode_each(batch, decode, remaining)
        self.summary.lines += done
        if batch.cursors is not None and done:
            self._cursor = batch.cursors[done - 1]

    def _count_whole(self, batch: Batch, count_lines: LineCounter, remaining: int | None) -> int:
        """The format decodes and counts the batch (this share's lines) in one call; returns
        the lines done: all of them."""
        lines = batch.lines
        owned = None if self._select is None else self._select(lines)
        mine = lines if owned is None else spread_lines(lines, owned, 2)[1] or []
        posts_read, skipped, rejects = count_lines(self.counter, mine, batch.received_at)
        if rejects and owned is not None:
            offsets = [i for i, own in enumerate(owned) if own]
            rejects = [(offsets[offset], exc) for offset, exc in rejects]
        for offset, exc in rejects:
            self._reject(batch, offset, lines[offset], exc)
        self.summary.skipped.update(skipped)
        self.summary.posts += posts_read
        if remaining is not None and posts_read >= remaining:
            self._stopping.set()
        return len(lines)

    def _decode_each(self, batch: Batch, decode: Decoder, remaining: int | None) -> int:
        """One decode call per line, then the batch's posts counted (or replayed) in one call;
        returns the lines done (fewer than all where the limit falls in the batch)."""
        summary = self.summary
        received_at = batch.received_at
        posts: list[Post] = []
        keep = posts.append
        owned = None if self._select is None else self._select(batch.lines)
        done = 0
        for raw in batch.lines:
            done += 1
            if owned is not None and not owned[done - 1]:
                continue  # another share's
            try:
                item = decode(raw, received_at)
            except DecodeError as exc:
                self._reject(batch, done - 1, raw, exc)
                continue
            if item.__class__ is Post:
                keep(item)
                if (
                    remaining is not None
                    and len(posts) >= remaining
                    and _ends_message(batch.cursors, done)
                ):
                    self._stopping.set()
                    break
            else:
                summary.skipped[item.reason] += 1  # type: ignore[union-attr]
        if batch.replay:
            for post in posts:
                self.counter.replay(post)
            summary.replayed += len(posts)
        else:
            self.counter.add_many(posts)
            summary.posts += len(posts)
        return done

    def _reject(self, batch: Batch, offset: int, raw: bytes, exc: DecodeError) -> None:
        line = raw.strip()
        if not line:
            self.summary.skipped["blank"] += 1
            return
        self.summary.skipped[exc.reason] += 1
        if batch.replay:
            return  # dead-lettered when it was first read
        where = batch.origin
        if batch.cursors is not None:
            where = f"{where}:{batch.cursors[offset]}"
        elif batch.first_line:
            where = f"{where}:{batch.first_line + offset}"
        self._dead.append(DeadLetter(batch.received_at, where, exc.reason, exc.detail, line))

    def flush(self, *, wait: bool = False) -> None:
        """Write pending counts, dead letters and the source position in one transaction.

        The write runs on a writer thread while the next batches are counted (the database
        driver releases the GIL while it waits on the network); at most one write is in flight,
        and the next flush first collects its outcome. `wait` writes synchronously.
        """
        self._collect()
        if self._fenced_out:
            return
        counts = self.counter.drain()
        dead, self._dead = self._dead, []
        positions: dict[str, Checkpoint] = {}
        source, cursor = self._resumable, self._cursor
        if source is not None and cursor is not None and cursor != self._committed_cursor:
            positions[source.consumer] = Checkpoint(cursor, source.checkpoint_state(cursor))
        if not (counts or dead or positions):
            return
        job = _WriteJob(counts, dead, positions, cursor, self._committed_cursor)
        if wait or not self.overlap_writes:
            self._finish(job, self._write(job))
            return
        if self._writer is None:
            self._writer = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="happyhashtags-writer"
            )
        self._pending = (self._writer.submit(self._write, job), job)

    def _collect(self) -> None:
        """Wait for the write in flight, if any, and account for it."""
        if self._pending is None:
            return
        future, job = self._pending
        self._pending = None
        self._finish(job, future.result)

    def _finish(self, job: _WriteJob, outcome: Callable[[], bool] | bool) -> None:
        try:
            written = outcome() if callable(outcome) else outcome
        except PositionConflict:
            self._fenced_out = True  # another process owns the consumer now: write nothing more
            raise
        except StorageError:
            # Keep what the failed write held, so nothing counted is lost if the caller retries.
            self.counter.restore(job.counts)
            self._dead[:0] = job.dead
            raise
        if not written:
            return
        self.summary.dead_letters += len(job.dead)
        self.summary.flushes += 1
        source = self._resumable
        if job.positions and source is not None and job.cursor is not None:
            self._committed_cursor = job.cursor
            source.committed(job.cursor)
        log.debug("flushed %d cells, %d dead letters", len(job.counts), len(job.dead))

    def _write(self, job: _WriteJob) -> bool:
        """Write with retries; False if abandoned because the engine is stopping."""
        # Not acknowledged when abandoned, so a resumable source delivers it again after a restart.
        done = self._retrying(
            lambda: self.store.write(
                job.counts,
                job.dead,
                positions=job.positions,
                # Fenced: the position moves only from where this engine left it.
                expected={consumer: job.previous for consumer in job.positions},
            ),
            abandon_on_stop=self._resumable is not None,
        )
        return done is not _ABANDONED

    def _retrying(self, action: Callable[[], T], *, abandon_on_stop: bool) -> T | object:
        """`action()`, retried with back-off on `StorageError` for up to `write_retry` seconds.

        Returns `_ABANDONED` instead when `abandon_on_stop` and the engine is stopping.
        """
        delay, deadline = 0.5, self._clock() + self.write_retry
        while True:
            try:
                return action()
            except StorageError as exc:
                if abandon_on_stop and self.stopping:
                    log.warning("stopping with a database call undone: %s", exc)
                    return _ABANDONED
                if self._clock() + delay > deadline:
                    raise
                log.warning("%s; retrying in %.1f s", exc, delay)
                self._stopping.wait(delay)
                delay = min(delay * 2, 30.0)


_ABANDONED = object()
T = TypeVar("T")


class _WriteJob(NamedTuple):
    counts: Counts
    dead: list[DeadLetter]
    positions: dict[str, Checkpoint]
    cursor: int | None
    previous: int | None  # the position last read or committed: where the write moves it from


def _ends_message(cursors: Sequence[int] | None, done: int) -> bool:
    """Whether the first `done` lines end a message: lines sharing a cursor (several posts in
    one queue message) are committed together, so a run stops only between messages."""
    return cursors is None or done >= len(cursors) or cursors[done] != cursors[done - 1]
