"""What ingest, process and status share: an asyncio loop for sync callers, the NATS connection
(reconnecting for ever), the stream's settings and the message headers."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from happyhashtags.errors import ConfigError, MissingExtraError
from happyhashtags.queue.url import QueueURL

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.js.api import StreamInfo
    from nats.js.client import JetStreamContext

__all__ = [
    "DEFAULT_DUPLICATE_WINDOW",
    "HEADER_FORMAT",
    "HEADER_MSG_ID",
    "HEADER_RECEIVED_AT",
    "Backoff",
    "LoopThread",
    "connect",
    "ensure_stream",
    "publish_subject",
    "require_nats",
    "stream_created",
    "stream_format",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

HEADER_MSG_ID = "Nats-Msg-Id"
HEADER_RECEIVED_AT = "Happyhashtags-Received-At"
"""When ingest read the message (seconds since the epoch): the event time of posts without one."""
HEADER_FORMAT = "Happyhashtags-Format"
"""The decoder the message needs (``x``, ``bluesky``)."""

DEFAULT_DUPLICATE_WINDOW = 600.0
"""JetStream drops a message whose ``Nats-Msg-Id`` it stored this recently (10 minutes: more than
X's 5-minute backfill and an ingest restart)."""

_FORMAT_IN_DESCRIPTION = re.compile(r"\bformat=([A-Za-z0-9_.-]+)")


def require_nats() -> None:
    """Raise `MissingExtraError` unless nats-py is installed."""
    try:
        import nats  # noqa: F401
    except ImportError:
        raise MissingExtraError("the NATS JetStream queue", "nats") from None


class Backoff:
    """Exponential back-off delays: `initial`, doubling, capped at `maximum`."""

    def __init__(self, *, initial: float = 0.5, maximum: float = 30.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self._next = initial

    def next(self) -> float:
        """The delay to wait now; the following one doubles."""
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        return delay

    def reset(self) -> None:
        """Start again from `initial` (after a success)."""
        self._next = self.initial


class LoopThread:
    """An asyncio event loop running in a daemon thread, so synchronous code can use nats-py.

    The loop keeps running between calls, so the client answers the server's pings and
    reconnects while the caller is busy counting or waiting for the database.
    """

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule `coro` on the loop; return a future for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` on the loop and wait for its result (cancelling it if the wait is cut
        short, by a timeout or a KeyboardInterrupt from a signal handler)."""
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()
            raise

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run `callback(*args)` on the loop; safe from any thread and from signal handlers."""
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(callback, *args)

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel what still runs on the loop, stop it and wait for the thread."""
        if self.loop.is_closed():
            return

        async def _cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=timeout) if tasks else None

        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            self.run(_cancel_all(), timeout=timeout + 1)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.loop.close()


class _RateLimitedLog:
    """Logs the first of a run of repeated problems, then at most every `every` seconds."""

    def __init__(self, every: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self._clock = clock
        self._last = float("-inf")

    def __call__(self, message: str, *args: object) -> None:
        now = self._clock()
        if now - self._last >= self.every:
            self._last = now
            log.warning(message, *args)

    def reset(self) -> None:
        self._last = float("-inf")


async def connect(
    url: QueueURL,
    *,
    name: str,
    on_disconnect: Callable[[], None] | None = None,
    on_reconnect: Callable[[], None] | None = None,
) -> NATS:
    """Connect to NATS, trying for ever (cancel the task to give up), and keep reconnecting
    after every disconnection. Problems are logged as warnings, at most every 30 seconds."""
    import nats

    warn = _RateLimitedLog()
    holder: list[NATS] = []

    async def error_cb(exc: Exception) -> None:
        warn("NATS at %s: %s (retrying)", url.display, _describe(exc))

    async def disconnected_cb() -> None:
        # nats-py also calls this between failed first attempts and when we close the client:
        # only a lost connection counts.
        if holder and not holder[0].is_closed:
            log.warning("lost the connection to NATS at %s; reconnecting", url.display)
            if on_disconnect is not None:
                on_disconnect()

    async def reconnected_cb() -> None:
        warn.reset()
        log.warning("reconnected to NATS at %s", url.display)
        if on_reconnect is not None:
            on_reconnect()

    client: NATS = await nats.connect(
        servers=list(url.servers),
        name=name,
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        connect_timeout=2,
        ping_interval=10,
        max_outstanding_pings=3,
        error_cb=error_cb,
        disconnected_cb=disconnected_cb,
        reconnected_cb=reconnected_cb,
        # Subjects come from a validated URL; the per-character check is a hot-path cost.
        skip_subject_validation=True,
        pending_size=64 << 20,
    )
    holder.append(client)
    return client


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def stream_format(info: StreamInfo) -> str | None:
    """The message format recorded in the stream's description by `ensure_stream`, if any."""
    match = _FORMAT_IN_DESCRIPTION.search(info.config.description or "")
    return match.group(1) if match else None


def stream_created(info: StreamInfo) -> str | None:
    """When the stream was created (ISO 8601), to tell a recreated stream from the original."""
    return info.created.isoformat() if info.created is not None else None


def publish_subject(url: QueueURL, info: StreamInfo) -> str:
    """The subject to publish to: the URL's, if the stream takes it, else the stream's first
    literal subject."""
    subjects = info.config.subjects or []
    if url.subject in subjects or not subjects:
        return url.subject
    for subject in subjects:
        if "*" not in subject and ">" not in subject:
            return subject
    return url.subject


async def ensure_stream(
    js: JetStreamContext,
    url: QueueURL,
    *,
    fmt: str,
    replicas: int,
    max_age: float,
    duplicate_window: float,
) -> StreamInfo:
    """The stream `url` names, created if absent (file storage, limits retention).

    Raises:
        ConfigError: the stream exists and holds messages of another format.
    """
    from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
    from nats.js.errors import BadRequestError, NotFoundError

    try:
        info = await js.stream_info(url.stream)
    except NotFoundError:
        config = StreamConfig(
            name=url.stream,
            description=f"happyhashtags: raw posts, format={fmt}",
            subjects=[url.subject],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            num_replicas=replicas,
            max_age=max_age or None,
            duplicate_window=duplicate_window,
            discard=DiscardPolicy.OLD,
        )
        try:
            info = await js.add_stream(config)
        except BadRequestError:
            # Created by someone else meanwhile (or a real error, which stream_info reports).
            info = await js.stream_info(url.stream)
        else:
            log.info(
                "created stream %s (file storage, %d replica(s), max age %s, duplicate window %s)",
                url.stream,
                replicas,
                f"{max_age:g} s" if max_age else "none",
                f"{duplicate_window:g} s",
            )
            return info
    existing = stream_format(info)
    if existing is not None and existing != fmt:
        raise ConfigError(
            f"stream {url.stream} holds {existing!r} messages, not {fmt!r}: use another stream "
            "for this source"
        )
    config = info.config
    if config.retention not in (None, RetentionPolicy.LIMITS):
        log.warning(
            "stream %s uses %s retention: process needs limits retention to replay messages "
            "after a restart",
            url.stream,
            config.retention,
        )
    if config.storage == StorageType.MEMORY:
        log.warning("stream %s keeps messages in memory: a NATS restart loses them", url.stream)
    if (config.duplicate_window or 0) < 60:
        log.warning(
            "stream %s drops duplicate publishes only within %g s: retries after that are stored "
            "twice (the counter's id check still counts them once)",
            url.stream,
            config.duplicate_window or 0,
        )
    return info
