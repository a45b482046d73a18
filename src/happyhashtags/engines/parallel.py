"""The parallel engine: N counting processes, one of which also reads the source.

The first process reads the source and routes each line by author (`formats.get_partitioner`)
to itself or to one of N - 1 worker processes, so each author's posts, and every copy of a post,
reach the same process: anti-spam sessions and duplicate detection stay exact, and since counts
only add up, the processes' upserts give the same `hashtag_counts` as one process. Every process
runs a `LocalEngine` with its own database connection. A file's `LineBlock` is spread into one
block per process, so a worker unpickles one bytes object per batch, not a list of lines.

Workers are forked when the calling process runs no other thread (see `ParallelEngine.start`),
so they start in milliseconds with what is already imported; otherwise they are spawned.

The reader counts a share itself rather than only routing: on a machine with as many cores as
processes a pure router would leave a core's worth of work competing for the same cores. Its
share is a little smaller than a worker's, for the reading and routing it also does.
"""

from __future__ import annotations

import copy
import logging
import multiprocessing
import queue
import signal
import threading
import time
from collections.abc import Iterator
from multiprocessing.context import ForkContext, SpawnContext
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from happyhashtags.aggregate import PostCounter
from happyhashtags.engines.base import StoppableEngine
from happyhashtags.engines.local import LocalEngine, ProgressCallback, RunSummary
from happyhashtags.errors import ConfigError, HappyHashtagsError
from happyhashtags.formats import get_partitioner
from happyhashtags.sources.base import Batch, Resumable, Source, spread_lines
from happyhashtags.storage.store import Store

__all__ = ["ParallelEngine"]

log = logging.getLogger(__name__)

_QUEUE_DEPTH = 8  # batches in flight per worker: enough to hide jitter, bounded memory
_READER_WEIGHT = 8  # the reader's share of the author hash space, in tenths of a worker's


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


class _Router:
    """The reader's source: reads the real source, sends each worker its lines, and yields the
    lines that belong to this process."""

    name = "router"
    total: int | None = None

    def __init__(
        self,
        engine: ParallelEngine,
        inboxes: list[Any],
        outbox: Any,
        processes: list[BaseProcess],
    ) -> None:
        self._engine = engine
        self._processes = processes
        self._inboxes = inboxes
        self._outbox = outbox
        self.format = engine.source.format
        self.lines_read = 0
        self._ended = False

    def batches(self) -> Iterator[Batch]:
        engine = self._engine
        partition = get_partitioner(self.format)
        inboxes = self._inboxes
        # Hash slots per process: the reader takes _READER_WEIGHT of a worker's share.
        weights = [_READER_WEIGHT] + [10] * len(inboxes)
        slots = bytes([process for process, weight in enumerate(weights) for _ in range(weight)])
        for batch in engine.source.batches():
            lines = batch.lines
            parts = spread_lines(lines, partition(lines, slots), len(inboxes) + 1)
            for inbox, part in zip(inboxes, parts[1:], strict=True):
                # An empty batch (a quiet source) goes to every worker: it may be time to flush.
                if part is not None or not lines:
                    # Line numbers are lost in the shuffle: dead letters name the origin only.
                    self._put(inbox, (part or [], batch.received_at, batch.origin))
            self.lines_read += len(lines)
            if engine._progress is not None:
                engine._progress(self.lines_read, self.lines_read)
            yield Batch(parts[0] or [], batch.received_at, batch.origin)

    def _put(self, inbox: Any, item: Any) -> None:
        while True:
            try:
                inbox.put(item, timeout=1.0)
                return
            except queue.Full:
                if not self._outbox.empty():  # a worker failed: stop feeding; its error follows
                    raise HappyHashtagsError("a worker failed") from None
                if any(_died(process) for process in self._processes):
                    raise HappyHashtagsError("a worker process died") from None

    def end(self) -> None:
        """Tell every live worker its input is over (once)."""
        if self._ended:
            return
        self._ended = True
        for inbox, process in zip(self._inboxes, self._processes, strict=True):
            while process.is_alive():
                try:
                    inbox.put(None, timeout=1.0)
                    break
                except queue.Full:
                    continue
            else:
                # Nobody reads this queue any more: do not wait at exit to flush it into the pipe.
                inbox.cancel_join_thread()

    def close(self) -> None:
        self._engine.source.close()


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
        self._local: LocalEngine | None = None
        self.start_method: str | None = None
        """How the workers were started (``fork`` or ``spawn``), once they are."""
        self._processes: list[BaseProcess] = []
        self._inboxes: list[Any] = []
        self._outbox: Any = None

    def start(self) -> None:
        """Start the worker processes for the next `run` (which starts them if this was not
        called; each run ends its workers).

        They are forked when this process runs no other thread, which costs milliseconds; else
        spawned (a fresh interpreter that imports everything again: about a second here), since
        a fork copies locks that other threads may be holding. So call this before starting
        threads of your own: the CLI calls it before its progress display starts.
        """
        if self._processes:
            return
        context: ForkContext | SpawnContext
        if _may_fork():
            context = multiprocessing.get_context("fork")
        else:
            context = multiprocessing.get_context("spawn")
        self.start_method = context.get_start_method()
        log.debug("starting %d worker processes (%s)", self.workers - 1, self.start_method)
        # No connection of this process's pool may be shared with a forked child.
        self.store.close()
        self._outbox = context.Queue()
        self._inboxes = [context.Queue(maxsize=_QUEUE_DEPTH) for _ in range(self.workers - 1)]
        url = self.store.url.render_as_string(hide_password=False)
        for inbox in self._inboxes:
            process = context.Process(
                target=_worker_main,
                args=(inbox, self._outbox),
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
            self._processes.append(process)

    def run(self) -> RunSummary:
        """Count the source's lines here and in the workers; return the merged summary."""
        self.start()
        outbox, inboxes, processes = self._outbox, self._inboxes, self._processes
        started = time.monotonic()
        router = _Router(self, inboxes, outbox, processes)
        local = LocalEngine(
            source=router,
            counter=copy.deepcopy(self.counter),
            store=self.store,
            flush_posts=max(1, self.flush_posts // self.workers),
            flush_interval=self.flush_interval,
        )
        self._local = local
        try:
            try:
                summary = local.run()
            except HappyHashtagsError:
                # Routing stopped because a worker failed or died: raise what happened to it.
                router.end()
                self._collect(outbox, processes, RunSummary())
                raise
            finally:
                router.end()
            summary = self._collect(outbox, processes, summary)
        finally:
            for inbox, process in zip(inboxes, processes, strict=True):
                # Ends the queue's feeder thread, so this process is left as it was found (and
                # a later run may fork again); it may wait only for a worker that read it all.
                if process.exitcode != 0:
                    inbox.cancel_join_thread()
                inbox.close()
                inbox.join_thread()
            # These workers are done: another run starts its own.
            self._processes, self._inboxes, self._outbox = [], [], None
        summary.elapsed = time.monotonic() - started
        summary.lines = max(summary.lines, router.lines_read)
        return summary

    def request_stop(self) -> None:
        """Stop reading; every process flushes what it counted. Safe from a signal handler."""
        super().request_stop()
        if self._local is not None:
            self._local.request_stop()

    def handle_signal(self, signum: int, frame: FrameType | None) -> None:
        # The reader's LocalEngine knows whether it is blocked in a read of the source.
        if self._local is not None:
            self._stopping.set()
            self._local.handle_signal(signum, frame)
        else:
            super().handle_signal(signum, frame)

    def _collect(self, outbox: Any, processes: list[BaseProcess], merged: RunSummary) -> RunSummary:
        errors: list[str] = []
        reports = 0
        deadline = time.monotonic() + 600
        while reports < len(processes):
            try:
                status, payload = outbox.get(timeout=1.0)
            except queue.Empty:
                dead = [p.exitcode for p in processes if _died(p)]
                if dead:  # killed (by the OOM killer, say) before it could report
                    errors.append(f"a worker process died without reporting (exit code {dead[0]})")
                    break
                if time.monotonic() > deadline:
                    errors.append("a worker did not report within 10 minutes")
                    break
                continue
            reports += 1
            if status == "ok":
                merged.add(payload)
            else:
                errors.append(payload)
        for process in processes:
            process.join(timeout=30)
        if errors:
            raise HappyHashtagsError("worker failed: " + "; ".join(errors))
        return merged


def _may_fork() -> bool:
    """Whether forking is safe here: the platform has it and no other thread runs."""
    return "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1


def _died(process: BaseProcess) -> bool:
    """Whether a worker ended abnormally (a worker that reported exits with 0)."""
    return not process.is_alive() and process.exitcode not in (0, None)
