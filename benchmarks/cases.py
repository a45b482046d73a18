"""The benchmark cases. Each runs in a fresh subprocess, started by `benchmarks.run` as
``python -m benchmarks.cases SPEC_FILE``, so its peak RSS is its own and no state leaks between
cases. Only the work is timed: interpreter start-up, imports and migrations are not.

A case writes its result (a JSON object) to the file named by the spec's ``result`` key:
``posts`` and ``seconds`` (the timed work), ``peak_rss_mb`` (this process's high-water mark),
``children_peak_rss_mb`` (the largest child's, for the worker processes of ``run-workers2``),
plus case-specific details. A case that cannot run here says so with ``unavailable``.
"""

from __future__ import annotations

import cProfile
import importlib
import io
import itertools
import json
import logging
import pstats
import resource
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from benchmarks.data import CpuMeter
from happyhashtags.aggregate import PostCounter
from happyhashtags.engines.local import LocalEngine, RunSummary
from happyhashtags.engines.parallel import ParallelEngine
from happyhashtags.formats.x import decode_x
from happyhashtags.sources.files import FileSource
from happyhashtags.storage.store import Store

__all__ = ["CASES", "Spec", "peak_rss"]

Spec = dict[str, Any]
"""What a case is told: ``case``, ``file``, ``database``, ``result`` and case options."""

_CHUNK = 4096  # lines read (untimed) per timed decode loop: bounded memory at any file size


def peak_rss() -> dict[str, float]:
    """High-water RSS in MB of this process and of its largest finished child (Linux: KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"peak_rss_mb": round(own, 1), "children_peak_rss_mb": round(children, 1)}


# -- decoding only: the floor ----------------------------------------------------------------------


class _MinimalTweet(msgspec.Struct, gc=False):
    id: str = ""
    author_id: str = ""
    created_at: str = ""
    text: str = ""


class _MinimalMessage(msgspec.Struct, gc=False):
    data: _MinimalTweet | None = None


def _chunks(path: Path) -> Iterator[list[bytes]]:
    with path.open("rb") as lines:
        while chunk := list(itertools.islice(lines, _CHUNK)):
            yield chunk


def _decode_loop(path: Path, decode: Callable[[bytes], object]) -> dict[str, Any]:
    seconds = 0.0
    posts = 0
    clock = time.perf_counter
    for chunk in _chunks(path):
        started = clock()
        for line in chunk:
            decode(line)
        seconds += clock() - started
        posts += len(chunk)
    return {"posts": posts, "seconds": seconds}


def decode_floor(spec: Spec) -> dict[str, Any]:
    """msgspec decoding of every line with the package's own partial X schema, nothing else."""
    from happyhashtags.formats import x

    decoder = getattr(x, "_decoder", None)
    if decoder is None:
        return {"unavailable": "happyhashtags.formats.x._decoder (the msgspec Decoder) is gone"}
    return _decode_loop(Path(spec["file"]), decoder.decode)


def decode_minimal(spec: Spec) -> dict[str, Any]:
    """msgspec decoding into a minimal struct (data.id, author_id, created_at, text)."""
    return _decode_loop(Path(spec["file"]), msgspec.json.Decoder(_MinimalMessage).decode)


def decode_post(spec: Spec) -> dict[str, Any]:
    """The engine's own decoder, line to `Post`: decoding plus building the post."""
    received_at = time.time()
    return _decode_loop(Path(spec["file"]), lambda line: decode_x(line, received_at))


def count_lines(spec: Spec) -> dict[str, Any]:
    """The engine's inner loop without I/O: `count_x_lines` decoding and counting each chunk
    into one `PostCounter` with the CLI's defaults (sessions on), nothing written."""
    from happyhashtags.formats.x import count_x_lines

    counter = PostCounter()
    received_at = time.time()
    seconds = 0.0
    posts = 0
    clock = time.perf_counter
    for chunk in _chunks(Path(spec["file"])):
        chunk = [line.rstrip(b"\n") for line in chunk]  # as sources hand lines over
        started = clock()
        counted, _, _ = count_x_lines(counter, chunk, received_at)
        seconds += clock() - started
        posts += counted
    return {"posts": posts, "seconds": seconds, "compiled": counter.compiled}


# -- end to end into Postgres ----------------------------------------------------------------------


def _migrated_store(url: str) -> Store:
    store = Store(url=url)
    store.migrate()
    return store


def _summary_details(summary: RunSummary) -> dict[str, Any]:
    return {
        "posts": summary.posts,
        "lines": summary.lines,
        "counted": summary.counted,
        "duplicates": summary.duplicates,
        "dead_letters": summary.dead_letters,
        "skipped": dict(summary.skipped),
        "flushes": summary.flushes,
        "engine_elapsed": round(summary.elapsed, 4),
    }


def _engine(spec: Spec, store: Store, workers: int) -> LocalEngine | ParallelEngine:
    # The library with the CLI's defaults: sessions on (30 min gap), 1 h buckets, flushes every
    # 100,000 posts or 5 s.
    source = FileSource([spec["file"]])
    counter = PostCounter()
    if workers > 1:
        return ParallelEngine(source=source, counter=counter, store=store, workers=workers)
    return LocalEngine(source=source, counter=counter, store=store)


def run_engine(spec: Spec, workers: int = 1) -> dict[str, Any]:
    """``happyhashtags run --source FILE`` through the library, timed around `run()`."""
    store = _migrated_store(spec["database"])
    engine = _engine(spec, store, workers)
    with CpuMeter() as cpu:
        started = time.perf_counter()
        summary = engine.run()
        seconds = time.perf_counter() - started
    store.close()
    started_by = getattr(engine, "start_method", None)  # fork or spawn, for --workers
    return {
        **_summary_details(summary),
        "seconds": seconds,
        **cpu.result,
        "workers": workers,
        "start": started_by,
    }


def run_workers2(spec: Spec) -> dict[str, Any]:
    """The same with ``--workers 2`` (`ParallelEngine`): one reader, two counting processes."""
    return run_engine(spec, workers=2)


def _lazy(module: str, name: str) -> Callable[[Spec], dict[str, Any]]:
    # Imported on use: `--workers 2` may spawn processes that re-import this module, and a
    # heavier module would make the harness, not the engine, slower to start workers.
    function: Callable[[Spec], dict[str, Any]] = getattr(
        importlib.import_module(f"benchmarks.{module}"), name
    )
    return function


def run_seed(spec: Spec) -> dict[str, Any]:
    """The seed-style baseline (see `benchmarks.seed_baseline`), on the file's first posts."""
    from benchmarks import seed_baseline

    url = spec["database"]
    seed_baseline.create_table(url)
    started = time.perf_counter()
    posts = seed_baseline.run_seed_baseline(Path(spec["file"]), url, spec.get("limit"))
    return {"posts": posts, "seconds": time.perf_counter() - started}


def profile_run(spec: Spec) -> dict[str, Any]:
    """The ``run`` case under cProfile: the top functions by own time and by cumulative time.

    cProfile sees the main thread only; the overlapped database write runs on the engine's
    writer thread, so it shows up here only as time spent waiting for it (`_collect`).
    """
    store = _migrated_store(spec["database"])
    engine = _engine(spec, store, 1)
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    summary = engine.run()
    profiler.disable()
    seconds = time.perf_counter() - started
    store.close()
    texts = {}
    for order, limit in (("tottime", spec.get("top", 25)), ("cumulative", 15)):
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.strip_dirs().sort_stats(order).print_stats(limit)
        texts[order] = out.getvalue()
    return {
        **_summary_details(summary),
        "seconds": seconds,
        "profile_tottime": texts["tottime"],
        "profile_cumulative": texts["cumulative"],
    }


CASES: dict[str, Callable[[Spec], dict[str, Any]]] = {
    "decode-floor": decode_floor,
    "decode-minimal": decode_minimal,
    "decode-post": decode_post,
    "count-lines": count_lines,
    "run": run_engine,
    "run-workers2": run_workers2,
    "seed-baseline": run_seed,
    "process": lambda spec: _lazy("queue_case", "run_process")(spec),
    "profile": profile_run,
    "memory": lambda spec: _lazy("soak", "memory")(spec),
    "latency": lambda spec: _lazy("soak", "latency")(spec),
}
"""Case name -> the function that runs it in this subprocess."""


def main(argv: list[str]) -> int:
    """Run the case named in the JSON spec file ``argv[0]``; write its result to
    ``spec['result']``."""
    spec: Spec = json.loads(Path(argv[0]).read_text())
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    result = CASES[spec["case"]](spec)
    if "unavailable" not in result:
        result.update(peak_rss())
        seconds = result["seconds"]
        result["posts_per_second"] = result["posts"] / seconds if seconds > 0 else 0.0
    Path(spec["result"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
