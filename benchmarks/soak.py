"""The long, opt-in cases: memory over a long stream (``--memory``) and visibility latency at a
steady rate (``--latency``). Both run inside a case subprocess (see `benchmarks.cases`).
"""

from __future__ import annotations

import bisect
import itertools
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import msgspec
import psycopg

from happyhashtags.aggregate import PostCounter
from happyhashtags.engines.local import LocalEngine
from happyhashtags.sources.base import Batch
from happyhashtags.storage.store import Store

__all__ = ["PacedSource", "PipeSource", "latency", "memory", "vm_rss_mb"]

_ROOT = Path(__file__).resolve().parents[1]
_BATCH_LINES = 4096  # as FileSource batches


def vm_rss_mb() -> float:
    """This process's resident set size now (VmRSS), in MB."""
    with open("/proc/self/status", "rb") as status:
        for line in status:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


# -- memory ----------------------------------------------------------------------------------------


class PipeSource:
    """JSON Lines from a pipe (the generator's standard output), in FileSource-sized batches."""

    name = "generator"
    format = "x"
    total: int | None = None

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._closed = False

    def batches(self) -> Iterator[Batch]:
        lines: list[bytes] = []
        first = 1
        for line in self._stream:
            lines.append(line.rstrip(b"\n"))
            if len(lines) >= _BATCH_LINES:
                yield Batch(lines, time.time(), self.name, first)
                first += len(lines)
                lines = []
                if self._closed:
                    return
        if lines:
            yield Batch(lines, time.time(), self.name, first)

    def close(self) -> None:
        self._closed = True


def memory(spec: dict[str, Any]) -> dict[str, Any]:
    """Stream `posts` demo posts with distinct hashtags from a generator process through
    `LocalEngine` into Postgres, sampling this process's RSS every `sample_every` posts.

    The generator runs in its own process so its vocabulary (millions of strings) does not
    count against the engine's memory.
    """
    posts, sample_every = int(spec["posts"]), int(spec["sample_every"])
    store = Store(url=spec["database"])
    store.migrate()
    command = [
        sys.executable,
        "-m",
        "benchmarks.data",
        "stream",
        "--wide",
        f"--count={posts}",
        f"--vocabulary={spec['vocabulary']}",
        f"--authors={spec['authors']}",
        f"--rate={spec['rate']}",
        f"--seed={spec['seed']}",
    ]
    samples: list[dict[str, float]] = [{"posts": 0, "rss_mb": round(vm_rss_mb(), 1), "t": 0.0}]
    started = time.perf_counter()
    next_sample = sample_every

    def progress(_lines: int, counted_posts: int) -> None:
        nonlocal next_sample
        if counted_posts >= next_sample:
            now = round(time.perf_counter() - started, 2)
            samples.append({"posts": counted_posts, "rss_mb": round(vm_rss_mb(), 1), "t": now})
            next_sample += sample_every

    with subprocess.Popen(command, stdout=subprocess.PIPE, cwd=_ROOT) as generator:
        assert generator.stdout is not None
        engine = LocalEngine(
            source=PipeSource(generator.stdout),
            counter=PostCounter(),
            store=store,
            progress=progress,
        )
        summary = engine.run()
        seconds = time.perf_counter() - started
        generator.wait()
    if summary.posts > samples[-1]["posts"]:
        samples.append({"posts": summary.posts, "rss_mb": round(vm_rss_mb(), 1), "t": seconds})
    store.close()
    with psycopg.connect(spec["database"]) as connection:
        row = connection.execute(
            "SELECT count(DISTINCT hashtag), count(*) FROM hashtag_counts"
        ).fetchone()
    distinct, cells = (int(row[0]), int(row[1])) if row else (0, 0)
    return {
        "posts": summary.posts,
        "seconds": seconds,
        "distinct_hashtags": distinct,
        "cells": cells,
        "samples": samples,
        "growth_after_first": growth_after(samples, sample_every),
        "generator_exit": generator.returncode,
    }


def growth_after(samples: list[dict[str, float]], first: int) -> float | None:
    """Relative RSS growth after the first sample at or beyond `first` posts (0.2 = 20 %)."""
    later = [s for s in samples if s["posts"] >= first]
    if len(later) < 2:
        return None
    base = later[0]["rss_mb"]
    return round((max(s["rss_mb"] for s in later) - base) / base, 4) if base else None


# -- latency ---------------------------------------------------------------------------------------


class PacedSource:
    """`rate` posts per second for `seconds`, each with its own hashtag ``lat00000042``.

    Posts are released in small batches as they fall due (every `tick` seconds), and the
    monotonic time each batch was handed to the engine is recorded in `sent` as
    ``(first post index, time)``. All posts claim the same creation time, so they land in one
    bucket and the poller can find the newest with one index lookup.
    """

    name = "paced"
    format = "x"
    total: int | None = None

    def __init__(
        self,
        *,
        rate: float,
        seconds: float,
        tick: float = 0.01,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.rate = rate
        self.count = int(rate * seconds)
        self.tick = tick
        self.sent: list[tuple[int, float]] = []
        self._clock = clock
        self._sleep = sleep
        self._wall = wall_clock
        self._closed = False
        created = datetime.fromtimestamp(wall_clock(), tz=UTC)
        self._created = created.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        self._encode = msgspec.json.encode

    @staticmethod
    def hashtag(index: int) -> str:
        return f"lat{index:08d}"

    def _line(self, index: int) -> bytes:
        tag = self.hashtag(index)
        text = f"paced post :) #{tag}"
        start = text.index("#")
        tweet = {
            "id": str(1_800_000_000_000_000_000 + index),
            "text": text,
            "created_at": self._created,
            "author_id": str(10_000 + index % 5000),
            "entities": {"hashtags": [{"start": start, "end": start + len(tag) + 1, "tag": tag}]},
        }
        return self._encode({"data": tweet})

    def batches(self) -> Iterator[Batch]:
        start = self._clock()
        index = 0
        while index < self.count and not self._closed:
            due = min(self.count, int((self._clock() - start) * self.rate) + 1)
            if due > index:
                lines = [self._line(i) for i in range(index, due)]
                self.sent.append((index, self._clock()))
                yield Batch(lines, self._wall(), self.name, index + 1)
                index = due
            self._sleep(self.tick)

    def close(self) -> None:
        self._closed = True


_NEWEST = "SELECT hashtag FROM hashtag_counts ORDER BY bucket_start DESC, hashtag DESC LIMIT 1"


def _poll(
    url: str,
    stop: threading.Event,
    interval: float,
    clock: Callable[[], float],
    polls: list[tuple[float, int]],
) -> None:
    """Record (time the answer came back, index of the newest visible post) every `interval`."""
    with psycopg.connect(url, autocommit=True) as connection:
        while True:
            final = stop.is_set()
            row = connection.execute(_NEWEST).fetchone()
            polls.append((clock(), int(row[0][3:]) if row else -1))
            if final:
                return
            stop.wait(interval)


def visibility_latencies(
    sent: list[tuple[int, float]], count: int, polls: list[tuple[float, int]]
) -> tuple[list[float], int]:
    """Per post: first poll showing it minus when its batch was sent; and how many never showed.

    Flushes write a prefix of the stream in one transaction, so "the newest visible post is
    k" means every post up to k is visible.
    """
    newest = [index for _, index in polls]
    latencies: list[float] = []
    unseen = 0
    bounds = [first for first, _ in sent[1:]] + [count]
    for (first, sent_at), end in zip(sent, bounds, strict=True):
        # Every post of a batch becomes visible in the same flush as its last post.
        at = bisect.bisect_left(newest, end - 1)
        if at == len(polls):
            unseen += end - first
            continue
        latencies.extend([polls[at][0] - sent_at] * (end - first))
    return latencies, unseen


def latency(spec: dict[str, Any]) -> dict[str, Any]:
    """Post-to-visible latency at a steady `rate` with a `flush_interval` flush."""
    url = spec["database"]
    store = Store(url=url)
    store.migrate()
    rate, seconds = float(spec["rate"]), float(spec["seconds"])
    source = PacedSource(rate=rate, seconds=seconds)
    polls: list[tuple[float, int]] = []
    stop = threading.Event()
    poller = threading.Thread(
        target=_poll,
        args=(url, stop, float(spec.get("poll_interval", 0.05)), time.monotonic, polls),
        name="visibility-poller",
        daemon=True,
    )
    poller.start()
    engine = LocalEngine(
        source=source,
        counter=PostCounter(),
        store=store,
        flush_interval=float(spec["flush_interval"]),
        flush_posts=1 << 40,  # flush by time only: the interval is what is being measured
    )
    started = time.perf_counter()
    summary = engine.run()
    elapsed = time.perf_counter() - started
    stop.set()
    poller.join(timeout=30)
    store.close()
    latencies, unseen = visibility_latencies(source.sent, source.count, polls)
    latencies.sort()

    def quantile(q: float) -> float | None:
        if not latencies:
            return None
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 4)

    gaps = [b[0] - a[0] for a, b in itertools.pairwise(polls)]
    return {
        "posts": summary.posts,
        "seconds": elapsed,
        "offered_rate": rate,
        "flush_interval": float(spec["flush_interval"]),
        "flushes": summary.flushes,
        "p50_s": quantile(0.50),
        "p90_s": quantile(0.90),
        "p99_s": quantile(0.99),
        "max_s": round(latencies[-1], 4) if latencies else None,
        "unseen": unseen,
        "polls": len(polls),
        "median_poll_gap_s": round(statistics.median(gaps), 4) if gaps else None,
    }
