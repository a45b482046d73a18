"""`Publisher`: publishes ingest's spool to a JetStream stream, in order, each message once.

It runs on an asyncio loop thread, keeps a bounded window of unacknowledged messages, and moves
the spool's acknowledged offset over the contiguous prefix JetStream has acknowledged (`PubAck`).
See `happyhashtags.queue.ingest` for the reading side.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from happyhashtags.errors import ConfigError
from happyhashtags.queue.jetstream import (
    DEFAULT_DUPLICATE_WINDOW,
    HEADER_FORMAT,
    HEADER_MSG_ID,
    HEADER_RECEIVED_AT,
    Backoff,
    connect,
    ensure_stream,
    publish_subject,
    stream_created,
)
from happyhashtags.queue.spool import Spool
from happyhashtags.queue.url import QueueURL

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg

__all__ = ["Publisher"]

log = logging.getLogger(__name__)


class _Stalled(Exception):
    """JetStream did not acknowledge in time, or refused: resend from the first unacknowledged."""


class _Inflight:
    __slots__ = ("acked", "end", "expected", "msg_id", "offset", "sent_at")

    def __init__(
        self, offset: int, end: int, sent_at: float, msg_id: str, expected: str | None
    ) -> None:
        self.offset = offset
        self.end = end
        self.sent_at = sent_at
        self.msg_id = msg_id
        self.expected = expected
        self.acked = False


_WRONG_LAST_MSG_ID = 10070
HEADER_EXPECTED_LAST = "Nats-Expected-Last-Msg-Id"


class Publisher:
    """Publishes a `Spool` to a JetStream stream, in order, until stopped.

    At most `window` messages are unacknowledged at a time. When the oldest waits longer than
    `ack_timeout` (NATS down, JetStream without a quorum) or JetStream refuses one, the window
    is dropped and publishing starts again, after a back-off, from the first unacknowledged
    message: repeats are dropped by JetStream's duplicate window (``Nats-Msg-Id``).

    Order: each message names the id of the message that must precede it in the stream
    (``Nats-Expected-Last-Msg-Id``), so when one is lost (a crash of the server with messages
    in flight, a leader change) JetStream refuses the ones after it instead of storing them
    ahead of it; they are sent again, in order. Which messages JetStream will drop as repeats
    is predicted from the ids it confirmed; a wrong guess costs one more round, never the order.
    One ingest per stream: another publisher breaks the chain, and ingest stops saying so.
    """

    def __init__(
        self,
        *,
        url: QueueURL,
        spool: Spool,
        fmt: str,
        replicas: int = 1,
        max_age: float = 0.0,
        duplicate_window: float = DEFAULT_DUPLICATE_WINDOW,
        window: int = 2048,
        ack_timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.spool = spool
        self.fmt = fmt
        self.replicas = replicas
        self.max_age = max_age
        self.duplicate_window = duplicate_window
        self.window = window
        self.ack_timeout = ack_timeout
        self.published = 0
        self.duplicates = 0
        self.too_large = 0
        self.fatal: BaseException | None = None
        self._last_stored: str | None = None
        self._stored_ids: dict[str, float] = {}
        self._pump_ids: set[str] = set()
        self._first_offset = -1
        self._foreign = 0
        self._stream_created: str | None = None
        self.connected = threading.Event()
        self._clock = clock
        self._inbox = ""
        self._subject = url.subject
        self._queue: deque[_Inflight] = deque()
        self._inflight: dict[int, _Inflight] = {}
        self._refused: str | None = None
        self._last_seq = 0
        self._outage_since: float | None = None
        self._outage_logged = float("-inf")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._retry: asyncio.Event | None = None

    # -- control (any thread) -----------------------------------------------------------------

    def notify(self) -> None:
        """New records are in the spool."""
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def stop(self) -> None:
        """Stop publishing soon (what is not acknowledged stays in the spool)."""
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)

    # -- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect (for ever), make sure the stream exists, publish until `stop`."""
        self._loop = asyncio.get_running_loop()
        self._wake, self._stop = asyncio.Event(), asyncio.Event()
        self.spool.on_append = self.notify
        self._retry = asyncio.Event()
        connecting = asyncio.ensure_future(
            connect(self.url, name="happyhashtags-ingest", on_reconnect=self._retry.set)
        )
        stopping = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({connecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not connecting.done():
            connecting.cancel()
            return
        stopping.cancel()
        nc = connecting.result()
        self.connected.set()
        try:
            await self._publish_until_stopped(nc)
        finally:
            self.spool.save()
            with contextlib.suppress(asyncio.TimeoutError, OSError):
                await asyncio.wait_for(nc.close(), timeout=2)

    async def _publish_until_stopped(self, nc: NATS) -> None:
        from nats.errors import Error as NatsError
        from nats.js.errors import Error as JetStreamError

        assert self._stop is not None
        js = nc.jetstream(timeout=5)
        self._inbox = nc.new_inbox()
        await nc.subscribe(self._inbox + ".*", cb=self._on_ack)
        backoff = Backoff(initial=0.5, maximum=5.0)
        while not self._stop.is_set():
            try:
                info = await ensure_stream(
                    js,
                    self.url,
                    fmt=self.fmt,
                    replicas=self.replicas,
                    max_age=self.max_age,
                    duplicate_window=self.duplicate_window,
                )
                self._subject = publish_subject(self.url, info)
                created = stream_created(info)
                if created != self._stream_created:
                    # A new stream (or a recreated one): nothing of ours is in it yet.
                    self._stream_created = created
                    self._last_stored = None
                    self._stored_ids.clear()
                await self._pump(nc, backoff)
            except ConfigError as exc:
                self.fatal = exc
                return
            except (TimeoutError, _Stalled, NatsError, JetStreamError, OSError) as exc:
                self._outage(str(exc) or type(exc).__name__)
                await self._pause(backoff.next())

    async def _pause(self, seconds: float) -> None:
        """Wait `seconds`, or less if stopped or reconnected meanwhile."""
        assert self._stop is not None
        assert self._retry is not None
        self._retry.clear()
        waits = {
            asyncio.ensure_future(self._stop.wait()),
            asyncio.ensure_future(self._retry.wait()),
        }
        _done, pending = await asyncio.wait(
            waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()

    async def _pump(self, nc: NATS, backoff: Backoff) -> None:
        assert self._wake is not None
        assert self._stop is not None
        self._queue.clear()
        self._inflight.clear()
        self._pump_ids.clear()
        self._refused = None
        self._forget_old_ids()
        next_offset = self.spool.acked
        self._first_offset = next_offset
        previous = self._last_stored
        last_save = self._clock()
        limit = nc.max_payload - 4096  # room for the headers
        while not self._stop.is_set():
            # Cleared before looking, so an acknowledgement that arrives meanwhile is not missed.
            self._wake.clear()
            room = self.window - len(self._queue)
            if room > 0:
                records = self.spool.read(next_offset, room)
                now = self._clock()
                for record in records:
                    entry = _Inflight(record.offset, record.end, now, record.msg_id, previous)
                    self._queue.append(entry)
                    self._inflight[record.offset] = entry
                    if len(record.payload) > limit:
                        self._refuse_too_large(entry, len(record.payload))
                        continue
                    headers = {
                        HEADER_MSG_ID: record.msg_id,
                        HEADER_RECEIVED_AT: repr(record.received_at),
                        HEADER_FORMAT: record.format,
                    }
                    if previous is not None:
                        headers[HEADER_EXPECTED_LAST] = previous
                    if (
                        record.msg_id not in self._stored_ids
                        and record.msg_id not in self._pump_ids
                    ):
                        # Expected to be stored (not a repeat): the next one must follow it.
                        previous = record.msg_id
                        self._pump_ids.add(record.msg_id)
                    await nc.publish(
                        self._subject,
                        record.payload,
                        reply=f"{self._inbox}.{record.offset}",
                        headers=headers,
                    )
                if records:
                    next_offset = records[-1].end
            if self._advance():
                backoff.reset()
                self._recovered()
            if self.fatal is not None:
                return
            if self._refused is not None:
                raise _Stalled(f"JetStream refused a message: {self._refused}")
            now = self._clock()
            if self._queue and now - self._queue[0].sent_at > self.ack_timeout:
                raise _Stalled(f"no acknowledgement from JetStream for {self.ack_timeout:g} s")
            if now - last_save >= 0.2:
                self.spool.save()
                self._forget_old_ids()
                last_save = now
            if self.spool.end > next_offset and len(self._queue) < self.window:
                continue
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=0.5)

    def _refuse_too_large(self, entry: _Inflight, size: int) -> None:
        # It can never be published; keeping it would block everything behind it.
        self.too_large += 1
        entry.acked = True
        log.error(
            "message %s is %d bytes, more than NATS accepts (max_payload): NOT PUBLISHED",
            entry.msg_id,
            size,
        )

    def _forget_old_ids(self) -> None:
        """Forget stored ids JetStream no longer treats as repeats (with a minute to spare)."""
        horizon = self._clock() - max(self.duplicate_window - 60.0, 0.0)
        stored = self._stored_ids
        while stored:
            oldest = next(iter(stored))
            if stored[oldest] >= horizon:
                break
            del stored[oldest]

    def _advance(self) -> bool:
        """Move the spool's acknowledged offset over the acknowledged prefix."""
        end = None
        queue = self._queue
        while queue and queue[0].acked:
            entry = queue.popleft()
            self._inflight.pop(entry.offset, None)
            end = entry.end
        if end is None:
            return False
        self.spool.acknowledge(end)
        return True

    async def _on_ack(self, msg: Msg) -> None:
        token = msg.subject.rpartition(".")[2]
        entry = self._inflight.get(int(token)) if token.isdigit() else None
        if entry is None or entry.acked:
            return
        status = msg.headers.get("Status") if msg.headers else None
        if status == "503":
            self._refused = f"no stream listens on {self._subject} (JetStream down?)"
        elif status:
            self._refused = f"status {status}"
        else:
            try:
                reply: dict[str, Any] = msgspec.json.decode(msg.data)
            except msgspec.DecodeError:
                reply = {"error": {"description": "unreadable acknowledgement"}}
            error = reply.get("error")
            if error:
                self._on_refusal(entry, error)
            else:
                entry.acked = True
                self._foreign = 0
                stored = self._stored_ids
                stored.pop(entry.msg_id, None)
                stored[entry.msg_id] = self._clock()
                if reply.get("duplicate"):
                    self.duplicates += 1
                else:
                    self.published += 1
                    seq = int(reply.get("seq", 0))
                    if seq < self._last_seq:
                        log.warning("JetStream stored a message out of order (seq %d)", seq)
                    self._last_seq = max(self._last_seq, seq)
                    self._last_stored = entry.msg_id
        if self._wake is not None:
            self._wake.set()

    def _on_refusal(self, entry: _Inflight, error: Any) -> None:
        code = error.get("err_code") if isinstance(error, dict) else None
        description = error.get("description", error) if isinstance(error, dict) else error
        if self._refused is None:
            self._refused = str(description)
        if code != _WRONG_LAST_MSG_ID:
            return
        if entry.offset == self._first_offset and entry.expected is not None:
            # The first message of a round names the last message JetStream confirmed storing
            # for us: if that is not the stream's last message, someone else publishes too.
            self._foreign += 1
            if self._foreign >= 3:
                self.fatal = ConfigError(
                    f"stream {self.url.stream} receives messages from another publisher (or was "
                    "purged): ingest keeps the source's order only in a stream of its own; use "
                    "one stream per ingest"
                )
                if self._stop is not None:
                    self._stop.set()

    def _outage(self, reason: str) -> None:
        now = self._clock()
        if self._outage_since is None:
            self._outage_since = now
        if now - self._outage_logged >= 10.0:
            self._outage_logged = now
            log.warning(
                "NATS %s is not taking messages (%s): SPOOLING to %s, %.1f MB waiting",
                self.url.display,
                reason,
                self.spool.directory,
                self.spool.pending_bytes / 1e6,
            )

    def _recovered(self) -> None:
        if self._outage_since is not None:
            log.warning(
                "NATS %s takes messages again after %.0f s: draining the spool (%.1f MB waiting)",
                self.url.display,
                self._clock() - self._outage_since,
                self.spool.pending_bytes / 1e6,
            )
            self._outage_since = None
            self._outage_logged = float("-inf")
