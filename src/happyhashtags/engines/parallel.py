"""The parallel engine: one reader process routes lines to N counting worker processes.

Lines are routed by author (`formats.get_partition_key`), so each author's posts, and every
copy of a post, reach the same worker: anti-spam sessions and duplicate detection stay exact,
and since counts only add up, the workers' upserts give the same `hashtag_counts` as one
process. Each worker runs a `LocalEngine` with its own database connection.
"""

from __future__ import annotations

import multiprocessing
import queue
import signal
import time
import zlib
from collections.abc import Iterator
from multiprocessing.context import SpawnProcess
from typing import Any

from happyhashtags.aggregate import PostCounter
from happyhashtags.engines.base import StoppableEngine
from happyhashtags.engines.local import LocalEngine, ProgressCallback, RunSummary
from happyhashtags.errors import ConfigError, HappyHashtagsError
from happyhashtags.formats import get_partition_key
from happyhashtags.sources.base import Batch, Resumable, Source
from happyhashtags.storage.store import Store

__all__ = ["ParallelEngine"]

_QUEUE_DEPTH = 8  # batches in flight per worker: enough to hide jitter, bounded memory


class _QueueSource:
    """A worker's source: the batches the reader sends it, until a None."""

    name = "worker"
    total: int | None = None

    def __init__(self, inbox: Any, format: str) -> None:
        self._inbox = inbox
        self.format = format

    def batches(self) -> Iterator[Batch]:
        while True:
            item = self._inbox.get()
            if item is None:
                return
            yield Batch(*item)

    def close(self) -> None:
        """The reader ends a worker's input with a None; nothing to do here."""


def _worker_main(
    inbox: Any,
    outbox: Any,
    *,
    url: str,
    counter: PostCounter,
    format: str,
    flush_posts: int,
    flush_interval: float,
) -> None:
    # The reader handles Ctrl-C and SIGTERM and then ends each worker's input.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        store = Store(url=url)
        engine = LocalEngine(
            source=_QueueSource(inbox, format),
            counter=counter,
            store=store,
            flush_posts=flush_posts,
            flush_interval=flush_interval,
        )
        summary = engine.run()
        store.close()
        outbox.put(("ok", summary))
    except HappyHashtagsError as exc:
        outbox.put(("error", str(exc)))
    except BaseException as exc:  # reported to the reader, which fails the run
        outbox.put(("error", f"{type(exc).__name__}: {exc}"))
        while inbox.get() is not None:  # let the reader finish without blocking
            pass


class ParallelEngine(StoppableEngine):
    """Like `LocalEngine`, with the counting spread over `workers` processes.

    `counter` is a template: each worker gets a copy with the same settings and empty state.
    """

    def __init__(
        self,
        *,
        source: Source,
        counter: PostCounter,
        store: Store,
        workers: int,
        flush_posts: int = 100_000,
        flush_interval: float = 5.0,
        progress: ProgressCallback | None = None,
    ) -> None:
        if workers < 2:
            raise ConfigError("ParallelEngine needs at least 2 workers; use LocalEngine for one")
        if isinstance(source, Resumable):
            raise ConfigError(
                f"the {source.name} source resumes from a stored position, which one reader "
                "process must own: use --workers 1 with it"
            )
        super().__init__(source=source)
        self.counter = counter
        self.store = store
        self.workers = workers
        self.flush_posts = flush_posts
        self.flush_interval = flush_interval
        self._progress = progress

    def run(self) -> RunSummary:
        """Route the source's lines to the workers; return the merged summary."""
        context = multiprocessing.get_context("spawn")
        outbox = context.Queue()
        inboxes = [context.Queue(maxsize=_QUEUE_DEPTH) for _ in range(self.workers)]
        url = self.store.url.render_as_string(hide_password=False)
        processes: list[SpawnProcess] = []
        for inbox in inboxes:
            process = context.Process(
                target=_worker_main,
                args=(inbox, outbox),
                kwargs={
                    "url": url,
                    "counter": self.counter,
                    "format": self.source.format,
                    "flush_posts": max(1, self.flush_posts // self.workers),
                    "flush_interval": self.flush_interval,
                },
                daemon=True,
            )
            process.start()
            processes.append(process)
        started = time.monotonic()
        interrupted = False
        lines_read = 0
        try:
            lines_read = self._route(inboxes, outbox)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            self.source.close()
            for inbox in inboxes:
                inbox.put(None)
        summary = self._collect(outbox, processes)
        summary.elapsed = time.monotonic() - started
        summary.interrupted = interrupted
        summary.lines = max(summary.lines, lines_read)
        return summary

    def _route(self, inboxes: list[Any], outbox: Any) -> int:
        key = get_partition_key(self.source.format)
        n = self.workers
        crc32 = zlib.crc32
        lines_read = 0
        batches = self.source.batches()
        while (batch := self._next_batch(batches)) is not None:
            parts: list[list[bytes]] = [[] for _ in range(n)]
            for line in batch.lines:
                parts[crc32(key(line)) % n].append(line)
            for inbox, part in zip(inboxes, parts, strict=True):
                if part:
                    # Line numbers are lost in the shuffle: dead letters name the origin only.
                    self._put(inbox, (part, batch.received_at, batch.origin), outbox)
            lines_read += len(batch.lines)
            if self._progress is not None:
                self._progress(lines_read, lines_read)
        return lines_read

    @staticmethod
    def _put(inbox: Any, item: Any, outbox: Any) -> None:
        while True:
            try:
                inbox.put(item, timeout=1.0)
                return
            except queue.Full:
                if not outbox.empty():  # a worker failed: stop feeding
                    raise HappyHashtagsError("a worker failed; see the error below") from None

    def _collect(self, outbox: Any, processes: list[SpawnProcess]) -> RunSummary:
        merged = RunSummary()
        errors: list[str] = []
        for _ in processes:
            try:
                status, payload = outbox.get(timeout=600)
            except queue.Empty:
                errors.append("a worker did not report within 10 minutes")
                break
            if status == "ok":
                part: RunSummary = payload
                merged.lines += part.lines
                merged.posts += part.posts
                merged.counted += part.counted
                merged.duplicates += part.duplicates
                merged.skipped.update(part.skipped)
                merged.dead_letters += part.dead_letters
                merged.flushes += part.flushes
            else:
                errors.append(payload)
        for process in processes:
            process.join(timeout=30)
        if errors:
            raise HappyHashtagsError("worker failed: " + "; ".join(errors))
        return merged
