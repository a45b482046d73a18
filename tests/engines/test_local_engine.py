"""The local engine: counts, dead letters and positions reach the database, whatever the batch
sizes and flush points, and a stop (or a signal) still flushes."""

from __future__ import annotations

import gc
import signal
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from happyhashtags.aggregate import PostCounter
from happyhashtags.engines.base import Share
from happyhashtags.engines.local import LocalEngine, RunSummary
from happyhashtags.errors import PositionConflict
from happyhashtags.model import Checkpoint
from happyhashtags.sources.base import Batch, LineBlock
from happyhashtags.storage import Store
from reference import count_reference, crafted_stream

READ_AT = 1_714_560_000.0  # 2024-05-01T10:40:00Z


class ListSource:
    """Lines from memory, in batches of the given sizes (cycled)."""

    name = "list"
    format = "x"

    def __init__(self, lines: list[bytes], sizes: Sequence[int] = (100,)) -> None:
        self.lines = lines
        self.sizes = [max(1, s) for s in sizes] or [100]
        self.total: int | None = len(lines)
        self.closed = False

    def batches(self) -> Iterator[Batch]:
        i = k = 0
        while i < len(self.lines) and not self.closed:
            size = self.sizes[k % len(self.sizes)]
            yield Batch(self.lines[i : i + size], READ_AT, "list", i + 1)
            i += size
            k += 1

    def close(self) -> None:
        self.closed = True


class ResumableList(ListSource):
    """A ListSource with cursors (1-based line numbers) that resumes after a checkpoint; its
    batches are `LineBlock`s with `blocks` (as `process` reads them)."""

    consumer = "test-consumer"

    def __init__(
        self, lines: list[bytes], sizes: Sequence[int] = (100,), *, blocks: bool = False
    ) -> None:
        super().__init__(lines, sizes)
        self.blocks = blocks
        self.resumed_from: Checkpoint | None = None
        self.acknowledged: list[int] = []

    def resume(self, checkpoint: Checkpoint | None) -> None:
        self.resumed_from = checkpoint

    def checkpoint_state(self, position: int) -> str | None:
        return f"state-{position}"

    def committed(self, position: int) -> None:
        self.acknowledged.append(position)

    def batches(self) -> Iterator[Batch]:
        start = self.resumed_from.position if self.resumed_from else 0
        i = start
        while i < len(self.lines) and not self.closed:
            chunk = self.lines[i : i + self.sizes[0]]
            cursors = range(i + 1, i + 1 + len(chunk))
            lines = LineBlock(b"\n".join(chunk)) if self.blocks else chunk
            yield Batch(lines, READ_AT, "list", i + 1, cursors=cursors)
            i += len(chunk)


def _store(directory: str | Path) -> Store:
    store = Store(url=f"sqlite:///{Path(directory) / 'counts.db'}")
    store.migrate()
    return store


def _run(store: Store, source: ListSource, **options: object) -> LocalEngine:
    counter = PostCounter(session_gap=float(options.pop("session_gap", 1800.0)))  # type: ignore[arg-type]
    engine = LocalEngine(source=source, counter=counter, store=store, **options)  # type: ignore[arg-type]
    engine.run()
    return engine


STREAM = crafted_stream(21, 600, authors=3, ids=500)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    sizes=st.lists(st.integers(1, 250), min_size=1, max_size=4),
    flush_posts=st.integers(1, 700),
    gap=st.sampled_from([0.0, 1800.0]),
)
def test_totals_do_not_depend_on_batch_sizes_or_flush_points(
    sizes: list[int], flush_posts: int, gap: float
) -> None:
    reference = count_reference(STREAM, session_gap=gap, received_at=READ_AT)
    with tempfile.TemporaryDirectory() as directory:
        store = _store(directory)
        engine = _run(
            store,
            ListSource(STREAM, sizes),
            flush_posts=flush_posts,
            flush_interval=3600.0,
            session_gap=gap,
        )
        assert store.counts() == reference.counts
        assert engine.summary.dead_letters == reference.dead_total
        assert engine.summary.flushes >= min(1, reference.posts // flush_posts)
        store.close()


def test_summary_and_dead_letters_say_what_happened(tmp_path: Path) -> None:
    store = _store(tmp_path)
    reference = count_reference(STREAM, session_gap=1800.0, received_at=READ_AT)
    summary = _run(store, ListSource(STREAM, [64])).summary
    assert summary.lines == len(STREAM)
    assert summary.posts == reference.posts + reference.duplicates
    assert summary.duplicates == reference.duplicates
    assert summary.skipped["blank"] == reference.blank
    for kind in ("delete", "limit", "errors"):
        assert summary.skipped[kind] == reference.skipped[kind]
    assert summary.dead_letters == reference.dead_total
    letters = store.dead_letters(limit=1000)
    assert len(letters) == reference.dead_total
    for letter in letters:
        origin, line_no = letter["source"].rsplit(":", 1)
        assert origin == "list"
        raw = STREAM[int(line_no) - 1].strip().decode("utf-8", "replace")
        assert raw.replace("\x00", "\ufffd") == letter["raw"]
        assert letter["reason"] in {"malformed_json", "invalid_shape", "bad_time"}


def test_limit_stops_after_that_many_posts(tmp_path: Path) -> None:
    lines = crafted_stream(5, 400, bad=False)
    engine = _run(_store(tmp_path), ListSource(lines, [7]), limit=50, session_gap=0.0)
    assert engine.summary.posts == 50
    assert not engine.summary.interrupted  # the limit is an end, not an interruption
    reference = count_reference(lines[: engine.summary.lines], received_at=READ_AT)
    assert engine.store.counts() == reference.counts


def test_positions_commit_with_the_counts_and_resume(tmp_path: Path) -> None:
    lines = crafted_stream(8, 300, bad=False, timeless=False, ids=10**9)
    store = _store(tmp_path)
    first = ResumableList(lines[:200], [50])
    _run(store, first, flush_posts=60, session_gap=0.0)
    assert store.read_position("test-consumer") == Checkpoint(200, "state-200")
    assert first.acknowledged[-1] == 200
    assert first.acknowledged == sorted(first.acknowledged)
    second = ResumableList(lines, [50])
    _run(store, second, session_gap=0.0)
    assert second.resumed_from == Checkpoint(200, "state-200")
    assert store.read_position("test-consumer") == Checkpoint(300, "state-300")
    assert store.counts() == count_reference(lines, received_at=READ_AT).counts


class _BlockingSource(ListSource):
    """Yields its lines once, then blocks like a quiet stream until closed."""

    def __init__(self, lines: list[bytes]) -> None:
        super().__init__(lines)
        self.released = threading.Event()

    def batches(self) -> Iterator[Batch]:
        yield Batch(self.lines, READ_AT, "quiet", 1)
        while not self.closed:
            self.released.wait(0.05)

    def close(self) -> None:
        super().close()
        self.released.set()


def test_a_signal_while_waiting_for_the_source_stops_and_flushes(tmp_path: Path) -> None:
    lines = crafted_stream(13, 200, bad=False, timeless=False)
    store = _store(tmp_path)
    source = _BlockingSource(lines)
    counter = PostCounter(session_gap=0)
    first_batch_done = threading.Event()
    engine = LocalEngine(
        source=source,
        counter=counter,
        store=store,
        flush_interval=3600.0,
        progress=lambda _lines, _posts: first_batch_done.set(),
    )
    previous = signal.signal(signal.SIGUSR1, engine.handle_signal)

    def send_signal() -> None:
        if first_batch_done.wait(10):
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)

    try:
        threading.Thread(target=send_signal, daemon=True).start()
        summary = engine.run()
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert summary.interrupted
    assert summary.posts == len(lines)
    assert store.counts() == count_reference(lines, received_at=READ_AT).counts


def test_request_stop_ends_the_run_with_a_flush(tmp_path: Path) -> None:
    lines = crafted_stream(14, 500, bad=False, timeless=False)
    store = _store(tmp_path)
    source = ListSource(lines, [100])
    engine: LocalEngine | None = None

    def progress(_lines: int, posts: int) -> None:
        if posts >= 200 and engine is not None:
            engine.request_stop()

    engine = LocalEngine(
        source=source,
        counter=PostCounter(session_gap=0),
        store=store,
        flush_interval=3600.0,
        progress=progress,
    )
    summary = engine.run()
    assert summary.lines == 200
    assert source.closed
    assert summary.interrupted  # stopped while counting, not in a read: still an interruption
    assert store.counts() == count_reference(lines[:200], received_at=READ_AT).counts


@pytest.mark.parametrize("overlap", [True, False])
def test_overlapped_and_synchronous_writes_give_the_same_counts(
    tmp_path: Path, overlap: bool
) -> None:
    store = _store(tmp_path)
    engine = _run(
        store, ListSource(STREAM, [10]), flush_posts=5, overlap_writes=overlap, session_gap=0.0
    )
    assert engine.summary.flushes > 10
    assert store.counts() == count_reference(STREAM, received_at=READ_AT).counts


def test_the_collector_runs_less_often_during_a_run_and_as_before_after_it(
    tmp_path: Path,
) -> None:
    before = gc.get_threshold()
    during: list[tuple[int, int, int]] = []
    engine = LocalEngine(
        source=ListSource(crafted_stream(3, 300, bad=False), [100]),
        counter=PostCounter(),
        store=_store(tmp_path),
        progress=lambda _lines, _posts: during.append(gc.get_threshold()),
    )
    engine.run()
    assert during
    assert all(t[0] >= 100_000 and t[1:] == before[1:] for t in during)
    assert gc.get_threshold() == before


@pytest.mark.parametrize("blocks", [False, True], ids=["lists", "blocks"])
@pytest.mark.parametrize("shares", [2, 3])
def test_engines_counting_the_shares_of_a_stream_count_it_once_between_them(
    tmp_path: Path, shares: int, blocks: bool
) -> None:
    # Ids wide enough that a repeated id is the same author's repeated post (as on X): both
    # copies fall in one share, which counts the post once.
    lines = crafted_stream(22, 900, authors=12, ids=10**9, timeless=False)
    reference = count_reference(lines, session_gap=1800.0, received_at=READ_AT)
    store = _store(tmp_path)
    summaries = []
    for index in range(shares):
        source = ResumableList(lines, [70], blocks=blocks)
        source.consumer = f"share-{index}"
        engine = _run(store, source, share=Share(index, shares), flush_posts=150)
        summaries.append(engine.summary)
        assert source.acknowledged[-1] == len(lines)  # passed over the other shares' lines too
    assert store.counts() == reference.counts
    assert sum(s.posts for s in summaries) == reference.posts + reference.duplicates
    assert sum(s.dead_letters for s in summaries) == reference.dead_total
    assert all(s.posts for s in summaries)  # every share had some
    # Each dead letter names its own line (cursors are 1-based line numbers here).
    dead = store.dead_letters(limit=10_000)
    assert len(dead) == reference.dead_total
    for letter in dead:
        cursor = int(letter["source"].rpartition(":")[2])
        raw = lines[cursor - 1].strip().decode(errors="replace").replace("\x00", "\ufffd")
        assert letter["raw"] == raw
    store.close()


def test_a_share_selects_a_batch_as_its_owner_decides_each_line() -> None:
    # LocalEngine asks for a whole batch at once (compiled for X); the line-by-line owner
    # defines the answer, and every line belongs to exactly one share.
    lines = crafted_stream(5, 400, authors=30, ids=10**6, timeless=False)
    selected = []
    for index in range(3):
        share = Share(index, 3)
        owned = share.owner("x")
        selected.append(share.selector("x")(lines))
        assert selected[-1] == bytes([owned(line) for line in lines])
    assert all(sum(flags) == 1 for flags in zip(*selected, strict=True))


def test_a_share_outside_its_count_is_refused() -> None:
    with pytest.raises(ValueError, match="share 2 of 2 does not exist"):
        Share(2, 2)


def test_summaries_add_up_with_the_longest_busy_time() -> None:
    # process --workers N adds its consumers' summaries; each may have waited idle at the end.
    total = RunSummary(posts=100, elapsed=10.0, idle=8.0)  # busy 2 s
    total.add(RunSummary(posts=300, elapsed=9.0, idle=6.0))  # busy 3 s
    assert (total.posts, total.elapsed, total.idle) == (400, 10.0, 7.0)
    assert total.posts_per_second == pytest.approx(400 / 3)


class _RivalList(ResumableList):
    """Another process with the same consumer name commits after this engine's first batch."""

    def __init__(self, lines: list[bytes], store: Store) -> None:
        super().__init__(lines, [50])
        self.store = store

    def batches(self) -> Iterator[Batch]:
        for number, batch in enumerate(super().batches()):
            if number == 2:
                self.store.write({}, positions={self.consumer: Checkpoint(75)})
            yield batch


def test_a_rival_commit_for_the_same_consumer_stops_the_engine_without_writing(
    tmp_path: Path,
) -> None:
    lines = crafted_stream(9, 200, bad=False, timeless=False, ids=10**9)
    store = _store(tmp_path)
    source = _RivalList(lines, store)
    with pytest.raises(PositionConflict, match="another process committed"):
        # Retrying for ever on storage errors, as process does: a conflict is not retried.
        _run(
            store,
            source,
            flush_posts=50,
            session_gap=0.0,
            write_retry=float("inf"),
            overlap_writes=False,
        )
    assert store.read_position("test-consumer") == Checkpoint(75)  # the rival's, untouched
    # Only what this engine committed before the rival: its first two batches.
    assert store.counts() == count_reference(lines[:100], received_at=READ_AT).counts
    assert source.acknowledged == [50, 100]
