"""The ``process`` case: counting from a NATS JetStream stream into Postgres.

`benchmarks.run` puts the file on a uniquely named stream once per session with
``happyhashtags ingest`` (timed for information only), and deletes the stream afterwards. Each
repeat of the case then reads the whole stream with a new durable consumer into a new database,
timed from the first read to the last commit (the engine's `limit` stops it at the file's last
post, so no idle wait is timed). Where the queue commands are missing, the case reports why
instead of a number.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.data import CpuMeter
from benchmarks.services import DEFAULT_NATS_URL, port_open

__all__ = ["delete_stream", "ingest", "run_process", "unavailable_reason"]

_IDLE_EXIT = 5.0  # a safety net only: the case stops at the expected number of posts


def unavailable_reason(nats_url: str = DEFAULT_NATS_URL) -> str | None:
    """Why the case cannot run here, or None when it can."""
    for module in ("happyhashtags.queue", "happyhashtags.commands.queue"):
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:
            found = False
        if not found:
            return f"{module} does not exist yet (the queue commands are not written)"
    try:
        commands = importlib.import_module("happyhashtags.commands.queue")
        queue = importlib.import_module("happyhashtags.queue")
    except ImportError as exc:
        return f"the queue modules do not import: {exc}"
    names = {getattr(c, "name", None) for c in getattr(commands, "COMMANDS", [])}
    missing = sorted({"ingest", "process"} - names)
    if missing:
        return f"happyhashtags.commands.queue has no {' or '.join(missing)} command yet"
    if not hasattr(queue, "NatsSource"):
        return "happyhashtags.queue has no NatsSource (the library side of process) yet"
    if not port_open(nats_url, 4222):
        return f"NATS is not listening at {nats_url}"
    return None


def ingest(path: Path, queue_url: str, *, timeout: float) -> dict[str, Any]:
    """``happyhashtags ingest`` the file into the stream; how long it took, or why it failed."""
    with tempfile.TemporaryDirectory(prefix="hh-bench-spool-") as spool:
        command = [
            sys.executable,
            "-m",
            "happyhashtags",
            "--log-level=warning",
            "ingest",
            f"--source={path}",
            f"--spool-dir={spool}",
        ]
        # The queue URL may hold credentials: the environment, not the command line, carries it.
        env = {**os.environ, "HAPPYHASHTAGS_QUEUE": queue_url}
        started = time.perf_counter()
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False, env=env
        )
        seconds = time.perf_counter() - started
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        return {"failed": f"ingest exited {done.returncode}: {tail}"}
    return {"seconds": seconds, "output": done.stdout.strip(), "warnings": done.stderr.strip()}


def delete_stream(nats_url: str, stream: str) -> None:
    """Delete the stream and the snapshot object store `process` made for it, if there."""
    asyncio.run(_delete(nats_url, stream))


async def _delete(nats_url: str, stream: str) -> None:
    import nats

    from happyhashtags.queue.state import delete_stream

    connection = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=1)
    try:
        await delete_stream(connection.jetstream(), stream)
    finally:
        await connection.close()


def run_process(spec: dict[str, Any]) -> dict[str, Any]:
    """Time ``happyhashtags process`` (the library, as the command wires it) draining the
    stream named in ``spec['queue']`` with a new consumer into a new database."""
    reason = unavailable_reason(spec.get("nats", DEFAULT_NATS_URL))
    if reason is not None:
        return {"unavailable": reason}
    if not spec.get("queue"):
        return {"unavailable": spec.get("queue_error", "the file was not put on a stream")}
    from happyhashtags.aggregate import PostCounter
    from happyhashtags.engines.local import LocalEngine
    from happyhashtags.queue import NatsSource, parse_queue_url
    from happyhashtags.storage.store import Store

    expected = int(spec["expected_posts"])
    store = Store(url=spec["database"])
    store.migrate()
    counter = PostCounter()
    with NatsSource(
        url=parse_queue_url(spec["queue"]),
        consumer=spec["consumer"],
        counter=counter,
        idle_exit=_IDLE_EXIT,
    ) as source:
        if not source.connect():  # connecting is start-up, like the migration: not timed
            raise RuntimeError(f"could not connect to {spec['queue']}")
        # As the process command builds it: waits for the database for ever, stops at `limit`.
        engine = LocalEngine(
            source=source, counter=counter, store=store, limit=expected, write_retry=float("inf")
        )
        with CpuMeter() as cpu:
            started = time.perf_counter()
            summary = engine.run()
            seconds = time.perf_counter() - started
    store.close()
    if summary.posts != expected:
        raise RuntimeError(f"process counted {summary.posts:,} posts, expected {expected:,}")
    return {
        "posts": summary.posts,
        "lines": summary.lines,
        "counted": summary.counted,
        "duplicates": summary.duplicates,
        "dead_letters": summary.dead_letters,
        "flushes": summary.flushes,
        "seconds": seconds,
        **cpu.result,
        "consumer": spec["consumer"],
    }
