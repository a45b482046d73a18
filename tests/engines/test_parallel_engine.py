"""The parallel engine: N processes (the reader counts a share too) write the same counts as one,
whatever the number of processes; a resumable source or a single worker is refused."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from happyhashtags.aggregate import PostCounter
from happyhashtags.engines.parallel import ParallelEngine
from happyhashtags.errors import ConfigError, HappyHashtagsError
from happyhashtags.model import Post
from happyhashtags.sources.files import FileSource
from happyhashtags.storage import Store
from reference import count_reference, crafted_stream


@pytest.mark.parametrize(
    ("workers", "other_thread", "start_method", "newline"),
    [
        (2, False, "fork", b"\n"),
        (3, False, "fork", b"\n"),
        (2, True, "spawn", b"\n"),
        # CRLF lines reach the router as lists, not as one LineBlock.
        (3, False, "fork", b"\r\n"),
    ],
)
def test_every_process_count_adds_up_to_the_reference(
    tmp_path: Path,
    database_url: str,
    workers: int,
    other_thread: bool,
    start_method: str,
    newline: bytes,
) -> None:
    # Wide ids: a repeated id is a repeated post by the same author, as in X streams, so the
    # copies meet in one process (split by author) and are recognised there.
    lines = crafted_stream(5, 3000, timeless=False, authors=40, ids=10**9)
    path = tmp_path / "stream.jsonl"
    path.write_bytes(newline.join(lines) + newline)
    reference = count_reference(lines, session_gap=1800.0)
    with Store(url=database_url) as store:
        store.migrate()
        engine = ParallelEngine(
            source=FileSource([str(path)]),
            counter=PostCounter(session_gap=1800.0),
            store=store,
            workers=workers,
            flush_posts=200,
        )
        # Forking a process that runs other threads could copy a lock one of them holds.
        release = threading.Event()
        if other_thread:
            threading.Thread(target=release.wait, daemon=True).start()
        try:
            summary = engine.run()
        finally:
            release.set()
        assert engine.start_method == start_method
        assert store.counts() == reference.counts
    assert summary.posts == reference.posts
    assert summary.lines == len(lines)
    assert summary.flushes >= workers  # every process, the reader too, wrote its share


def test_one_worker_or_a_resumable_source_is_refused(sqlite_url: str) -> None:
    with Store(url=sqlite_url) as store, pytest.raises(ConfigError, match="at least 2"):
        ParallelEngine(source=FileSource([__file__]), counter=PostCounter(), store=store, workers=1)


class _FailsInAWorker(PostCounter):
    """Counts in the reading process; raises in a worker process."""

    def add_many(self, posts: Iterable[Post]) -> None:
        if multiprocessing.parent_process() is not None:
            raise RuntimeError("boom in a worker")
        super().add_many(posts)


class _KilledInAWorker(PostCounter):
    """Counts in the reading process; a worker is killed (as by the OOM killer) at its first
    batch."""

    def add_many(self, posts: Iterable[Post]) -> None:
        if multiprocessing.parent_process() is not None:
            os.kill(os.getpid(), signal.SIGKILL)
        super().add_many(posts)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("counter", "error"),
    [
        (_FailsInAWorker(session_gap=0), r"boom in a worker"),
        (_KilledInAWorker(session_gap=0), r"died without reporting \(exit code -9\)"),
    ],
    ids=["raises", "killed"],
)
def test_a_failing_or_killed_worker_fails_the_run_saying_why(
    tmp_path: Path, counter: PostCounter, error: str
) -> None:
    # Far more batches than a queue holds: the reader blocks on a dead worker's full queue, and
    # must notice the death rather than wait for ever.
    lines = crafted_stream(6, 3000, timeless=False, authors=40, ids=10**9)
    path = tmp_path / "stream.jsonl"
    path.write_bytes(b"\n".join(lines * 40) + b"\n")
    with Store(url=f"sqlite:///{tmp_path / 'counts.db'}") as store:
        store.migrate()
        engine = ParallelEngine(
            source=FileSource([str(path)]), counter=counter, store=store, workers=2
        )
        started = time.monotonic()
        with pytest.raises(HappyHashtagsError, match=error):
            engine.run()
        assert time.monotonic() - started < 60


@pytest.mark.timeout(120)
def test_an_engine_runs_again_with_new_workers(tmp_path: Path) -> None:
    lines = crafted_stream(7, 2000, timeless=False, authors=30, ids=10**9)
    path = tmp_path / "stream.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    reference = count_reference(lines, session_gap=1800.0)
    with Store(url=f"sqlite:///{tmp_path / 'counts.db'}") as store:
        store.migrate()
        engine = ParallelEngine(
            source=FileSource([str(path)]),
            counter=PostCounter(session_gap=1800.0),
            store=store,
            workers=2,
        )
        first = engine.run()
        engine.source = FileSource([str(path)])  # the same lines again, from a new reader
        second = engine.run()
        assert first.posts == second.posts == reference.posts
        doubled = {cell: (2 * t, 2 * h) for cell, (t, h) in reference.counts.items()}
        assert store.counts() == doubled
