"""Bluesky's public firehose through Jetstream (``--source bluesky``), resumable by cursor.

Jetstream serves AT Protocol events as JSON over a WebSocket. Every event carries ``time_us``, the
instance's own receive time in microseconds, and a subscriber may ask for ``?cursor=<time_us>`` to
replay from that event on (inclusive) for about 36 hours. That cursor is this source's position:
the engine stores the ``time_us`` of the last event counted in the same transaction as the counts.

Exactly once, as far as the counts go: a reconnect or restart on the same instance asks for the
last cursor, dropping what comes before it. Another instance stamps events up to a few seconds
differently, so a fail-over rewinds `rewind_seconds` and drops the posts whose AT URI is in the
recent-ids window (the posts counted in the last `window_seconds`), which is stored with the
position so that it survives a restart. With `replay_seconds` (the session gap) a restart also
replays that much history before its cursor, so the counter rebuilds its anti-spam sessions.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

import msgspec

from happyhashtags.errors import ConfigError, SourceError
from happyhashtags.formats.bluesky import POST_COLLECTION
from happyhashtags.model import Checkpoint
from happyhashtags.sources.base import Batch, Clock, system_clock
from happyhashtags.sources.bluesky_protocol import (
    CONNECT_OPTIONS,
    DEFAULT_URL,
    RETENTION,
    ZSTD_MAGIC,
    event_head,
    failure_reason,
    failure_status,
    instance_key,
    subscribe_url,
    websockets_client,
)
from happyhashtags.timeutil import from_epoch

if TYPE_CHECKING:
    from websockets.sync.client import ClientConnection

    from happyhashtags.config import Settings

__all__ = [
    "DEFAULT_URL",
    "RETENTION",
    "BlueskySource",
    "SourceStats",
    "from_settings",
    "instance_key",
    "subscribe_url",
]

log = logging.getLogger(__name__)

Sleeper = Callable[[float], None]
"""Waits the given seconds (injected so back-off tests take no time)."""

_STATE_VERSION = 1


class _Line(NamedTuple):
    message: bytes
    position: int | None  # the cursor the engine stores once the line is counted, if known
    replay: bool
    seq: int  # window sequence numbers of the line's entry, if any: [seq, end)
    end: int


class _State(msgspec.Struct):
    v: int
    instance: str | None = None
    recent: list[tuple[int, str]] = []


_state_decoder = msgspec.json.Decoder(_State)


@dataclass(slots=True)
class SourceStats:
    """What a `BlueskySource` has done (for logs and tests)."""

    connections: int = 0
    failures: int = 0
    failovers: int = 0
    stalls: int = 0
    messages: int = 0
    dropped: int = 0  # already counted: before the cursor, or a post in the recent-ids window
    replayed: int = 0  # sent as replay to rebuild sessions


class BlueskySource:
    """Posts from Jetstream, with reconnects, fail-over between `urls` and exact resume.

    Implements `Source` and `Resumable`; the engine calls `resume` with the stored checkpoint.

    Args:
        urls: Jetstream subscribe URLs, tried in order; the next one after `failover_after`
            failed connections in a row.
        collections: sent as ``wantedCollections`` unless a URL names its own.
        zstd_dictionary: Jetstream's zstd dictionary; when given, compressed frames are asked for
            (``compress=true``) and decompressed with it.
        replay_seconds: history replayed on resume to rebuild anti-spam sessions (0: none).
        rewind_seconds: how far a fail-over to another instance rewinds the cursor.
        window_seconds / window_max: the recent-ids window (``time_us`` span, entries).
        stall_timeout: no message for this long: reconnect.
        heartbeat: after this long without a message, an empty batch (so the engine can flush).
        backoff_initial / backoff_max: reconnect delays double from the first up to the second,
            with jitter (each delay is uniformly between half and all of it).
        clock, monotonic, sleeper, rng: the wall clock (`Batch.received_at`, the cursor's age),
            the stall timer, the wait between attempts (default: one `close` cuts short), jitter.
    """

    name = "bluesky"
    format = "bluesky"

    def __init__(
        self,
        *,
        urls: Sequence[str] = (DEFAULT_URL,),
        collections: Sequence[str] = (POST_COLLECTION,),
        zstd_dictionary: bytes | None = None,
        replay_seconds: float = 0.0,
        rewind_seconds: float = 5.0,
        window_seconds: float = 10.0,
        window_max: int = 20_000,
        stall_timeout: float = 30.0,
        heartbeat: float = 1.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        failover_after: int = 3,
        batch_size: int = 1000,
        retention: float = RETENTION,
        consumer: str = "bluesky",
        clock: Clock = system_clock,
        monotonic: Clock = time.monotonic,
        sleeper: Sleeper | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not urls:
            raise ConfigError("the Bluesky source needs at least one Jetstream URL")
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("ws", "wss") or not parts.hostname:
                raise ConfigError(
                    f"invalid Jetstream URL {instance_key(url)!r}: use ws:// or wss://, like "
                    f"{DEFAULT_URL}"
                )
        if window_seconds < rewind_seconds:
            raise ConfigError("the recent-ids window must be at least as long as the rewind")
        self.total: int | None = None
        self.consumer = consumer
        self.stats = SourceStats()
        self.urls = tuple(urls)
        self._instances = [instance_key(u) for u in urls]
        self._collections = tuple(collections)
        self._dctx: Any = None
        if zstd_dictionary is not None:
            import zstandard

            self._dctx = zstandard.ZstdDecompressor(
                dict_data=zstandard.ZstdCompressionDict(zstd_dictionary)
            )
        self._replay_us = int(replay_seconds * 1e6)
        self._rewind_us = int(rewind_seconds * 1e6)
        self._window_us = int(window_seconds * 1e6)
        self._window_max = window_max
        self._stall_timeout = stall_timeout
        self._heartbeat = heartbeat
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._failover_after = max(1, failover_after)
        self._batch_size = batch_size
        self._retention = retention
        self._clock = clock
        self._monotonic = monotonic
        self._closed = threading.Event()
        self._sleep: Sleeper = sleeper or self._wait
        self._rng = rng or random.Random()
        # Connection state.
        self._conn: ClientConnection | None = None
        self._index = 0
        self._failures = 0  # failed attempts in a row, over all URLs (sets the delay)
        self._url_failures = 0  # ... on the current URL (sets the fail-over)
        self._rejections = 0  # handshakes refused with a client error (4xx), in a row
        # Position: `_last` is the newest time_us received, on the instance `_timeline`.
        self._last: int | None = None
        self._timeline: str | None = None
        self._floor: int | None = None  # events before this one (same timeline) were counted
        self._replay_from: int | None = None
        self._started = False  # the current connection delivered something new
        # The recent-ids window: (sequence, time_us, uri) of the posts sent to be counted.
        self._window: deque[tuple[int, int, str]] = deque()
        self._window_ids: set[str] = set()
        self._seq = 0
        # Window sequence numbers of the last batch sent to be counted: [start, end).
        self._batch_seq = self._batch_end = 0
        self._batch_timeline: str | None = None

    # -- Resumable ---------------------------------------------------------------------------

    def resume(self, checkpoint: Checkpoint | None) -> None:
        """Start after `checkpoint` (None or a non-positive position: the live tail)."""
        if checkpoint is None or checkpoint.position <= 0:
            return
        position = checkpoint.position
        instance, recent = _read_state(checkpoint.state)
        self._last = self._floor = position
        self._timeline = self._batch_timeline = instance
        if self._replay_us:
            self._replay_from = position - self._replay_us
        for time_us, uri in sorted(recent):
            self._remember(time_us, uri)
        self._batch_seq = self._batch_end = self._seq
        hours = (self._clock() - position / 1e6) / 3600
        when = from_epoch(position / 1e6).isoformat(timespec="seconds")
        log.info("resuming Bluesky from %s (%d recent post ids)", when, len(recent))
        if hours * 3600 > self._retention:
            log.warning(
                "the stored Bluesky cursor is %.0f hours old, older than Jetstream keeps (about "
                "%.0f): the posts from %s to Jetstream's oldest event are missed",
                *(hours, self._retention / 3600, when),
            )

    def checkpoint_state(self, position: int) -> str | None:
        """The recent-ids window up to `position` as JSON, with the instance it belongs to."""
        low = position - self._window_us
        recent = [
            [t, uri]
            for seq, t, uri in self._window
            if t >= low and (seq < self._batch_seq or (seq < self._batch_end and t <= position))
        ]
        return json.dumps(
            {"v": _STATE_VERSION, "instance": self._batch_timeline, "recent": recent},
            separators=(",", ":"),
        )

    def committed(self, position: int) -> None:
        """Nothing to acknowledge: Jetstream cursors are kept by the consumer alone."""

    # -- Source ------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop: `batches` returns promptly. Safe from a signal handler or another thread."""
        self._closed.set()
        conn = self._conn
        if conn is not None:
            # Cut the TCP connection rather than run the closing handshake: a plain system call
            # takes no lock a signal may have interrupted, and wakes a blocked receive at once
            # (a handshake can wait out its timeout behind a full receive queue).
            with contextlib.suppress(OSError):
                conn.socket.shutdown(socket.SHUT_RDWR)

    def batches(self) -> Iterator[Batch]:
        """Connect, read, reconnect and fail over until closed."""
        connect, errors = websockets_client()
        while not self._closed.is_set():
            index = self._index
            cursor = self._plan(self._instances[index])
            self._started = False
            try:
                with self._open(connect, index, cursor) as conn:
                    self.stats.connections += 1
                    self._conn = conn
                    try:
                        if not self._closed.is_set():
                            yield from self._read(conn, index, cursor, errors)
                    finally:
                        self._conn = None
            except errors as exc:
                if self._closed.is_set():
                    return
                if self._started:
                    where = self._instances[index]
                    log.warning(
                        "%s closed the connection (%s): reconnecting", where, failure_reason(exc)
                    )
                else:
                    self._note_failure(index, exc)
            if not self._closed.is_set():
                self._back_off()

    # -- internals ---------------------------------------------------------------------------

    def _wait(self, seconds: float) -> None:
        self._closed.wait(seconds)

    def _plan(self, instance: str) -> int | None:
        """The cursor for the next connection to `instance`; sets what counts as already read."""
        last = self._last
        if last is None:
            self._timeline = instance
            return None  # nothing read or stored yet: the live tail
        floor: int | None
        if self._timeline in (None, instance):
            floor = last if self._floor is None else max(self._floor, last)
            cursor = last
        else:
            # Another instance stamps the same events a little differently: rewind, and let the
            # recent-ids window recognise what was counted.
            floor = None if self._floor is None else self._floor - self._rewind_us
            cursor = last - self._rewind_us
            self._last = cursor
            log.info("switching to %s, rewinding %.1f s", instance, self._rewind_us / 1e6)
        if self._replay_from is not None:
            cursor = min(cursor, self._replay_from)
            self._replay_from = None
        self._timeline = instance
        self._floor = floor
        return cursor

    def _open(self, connect: Any, index: int, cursor: int | None) -> Any:
        """A context manager that connects (the handshake runs on entering it)."""
        compress = self._dctx is not None
        url = subscribe_url(
            self.urls[index], collections=self._collections, cursor=cursor, compress=compress
        )
        at = from_epoch(cursor / 1e6).isoformat(timespec="seconds") if cursor else "the live tail"
        log.info("connecting to %s from %s", self._instances[index], at)
        return connect(url, **CONNECT_OPTIONS)

    def _receive(self, conn: ClientConnection, deadline: float) -> bytes | None:
        """The next message, or None once closed or past `deadline` (`close` shuts the socket,
        which ends a wait at once)."""
        remaining = deadline - self._monotonic()
        if self._closed.is_set() or remaining <= 0:
            return None
        try:
            return self._inflate(conn.recv(timeout=remaining, decode=False))
        except TimeoutError:
            return None

    def _inflate(self, data: bytes) -> bytes:
        if self._dctx is None or not data.startswith(ZSTD_MAGIC):
            return data
        try:
            inflated: bytes = self._dctx.decompressobj().decompress(data)
        except Exception:  # zstandard.ZstdError: pass it on, the decoder dead-letters it
            return data
        return inflated

    def _read(
        self,
        conn: ClientConnection,
        index: int,
        cursor: int | None,
        errors: tuple[type[BaseException], ...],
    ) -> Iterator[Batch]:
        instance = self._instances[index]
        pending: list[_Line] = []
        stall_at = self._monotonic() + self._stall_timeout
        while True:
            if not pending:
                message = self._receive(conn, min(stall_at, self._monotonic() + self._heartbeat))
                if message is None:
                    if self._closed.is_set():
                        return
                    if self._monotonic() < stall_at:
                        # Quiet: an empty batch lets the engine flush what it counted.
                        yield Batch([], self._clock(), instance)
                        continue
                    self.stats.stalls += 1
                    log.warning(
                        "no message from %s for %.0f s: reconnecting", instance, self._stall_timeout
                    )
                    if not self._started:
                        self._note_failure(index, None)
                    return
                stall_at = self._monotonic() + self._stall_timeout
                while True:
                    line = self._intake(message, cursor)
                    if line is not None:
                        pending.append(line)
                        if len(pending) >= self._batch_size:
                            break
                    try:
                        message = self._inflate(conn.recv(timeout=0, decode=False))
                    except TimeoutError:
                        break
                    except errors:
                        break  # send what was read; the next receive raises again
                if not pending:
                    continue
            run, pending = _split(pending)
            lines = [line.message for line in run]
            first = run[0]
            if first.replay:
                self.stats.replayed += len(run)
                yield Batch(lines, self._clock(), instance, replay=True)
            elif first.position is None:  # before any time_us: no position to store
                yield Batch(lines, self._clock(), instance)
            else:
                self._batch_seq, self._batch_end = first.seq, run[-1].end
                self._batch_timeline = instance
                self._prune(first.position)
                cursors = [line.position or 0 for line in run]
                yield Batch(lines, self._clock(), instance, cursors=cursors)

    def _intake(self, message: bytes, cursor: int | None) -> _Line | None:
        time_us, uri = event_head(message)
        self.stats.messages += 1
        if time_us is not None:
            if not self._started and (cursor is None or time_us > cursor):
                self._started = True
                self._failures = self._url_failures = self._rejections = 0
            self._last = time_us
        kind = self._classify(time_us, uri)
        if kind is None:
            return None
        seq = self._seq
        if kind:
            return _Line(message, None, True, seq, seq)
        position = time_us if time_us is not None else self._last
        if uri is not None and position is not None:
            self._remember(position, uri)
        return _Line(message, position, False, seq, self._seq)

    def _classify(self, time_us: int | None, uri: str | None) -> bool | None:
        """False: count it; True: replay it (counted before); None: drop it."""
        floor = self._floor
        if time_us is not None and floor is not None and time_us <= floor:
            # Before the cursor: counted. At it (playback includes the cursor's event): other
            # events never count, and a post that was counted is in the window.
            counted = time_us < floor or uri is None or uri in self._window_ids
        else:
            counted = uri is not None and uri in self._window_ids
        if not counted:
            return False
        if uri is not None and self._replay_us:
            return True
        self.stats.dropped += 1
        return None

    def _remember(self, time_us: int, uri: str) -> None:
        self._window.append((self._seq, time_us, uri))
        self._window_ids.add(uri)
        self._seq += 1

    def _prune(self, time_us: int) -> None:
        """Forget posts older than the window before `time_us`, the start of the batch being sent
        (not the newest line read: the checkpoint may need what is older than that)."""
        window, ids, low = self._window, self._window_ids, time_us - self._window_us
        while window and (
            (window[0][1] < low and window[0][0] < self._batch_seq)
            or len(window) > self._window_max
        ):
            ids.discard(window.popleft()[2])

    def _note_failure(self, index: int, exc: BaseException | None) -> None:
        self.stats.failures += 1
        self._failures += 1
        self._url_failures += 1
        status, reason = failure_status(exc), failure_reason(exc)
        log.warning("Jetstream %s: %s", self._instances[index], reason)
        client_error = status is not None and 400 <= status < 500 and status not in (408, 429)
        self._rejections = self._rejections + 1 if client_error else 0
        if client_error and self._rejections >= len(self.urls):
            # Every URL refusing the subscription in turn (bad parameters) is not transient.
            raise SourceError(
                f"every Jetstream URL refused the subscription ({reason}): check the URLs "
                "and their query parameters (BLUESKY_JETSTREAM_URL)"
            )
        if len(self.urls) > 1 and (client_error or self._url_failures >= self._failover_after):
            self._index = (index + 1) % len(self.urls)
            self._url_failures = 0
            self.stats.failovers += 1
            log.warning("failing over to %s", self._instances[self._index])

    def _back_off(self) -> None:
        if self._failures == 0:
            # The connection delivered, then ended: reconnect soon, but not all clients at once.
            delay = self._rng.uniform(0, self._backoff_initial)
        else:
            base = self._backoff_initial * 2 ** max(0, self._failures - 1)
            delay = min(self._backoff_max, base) * (0.5 + 0.5 * self._rng.random())
        self._sleep(delay)


def _split(pending: list[_Line]) -> tuple[list[_Line], list[_Line]]:
    """The first batch's worth of `pending`, and the rest. Replayed and counted lines never share
    a batch, and no two counted lines in one batch share a time_us: so the engine's position (a
    time_us) tells exactly how far into the batch it counted."""
    first = pending[0]
    n = 1
    for line in pending[1:]:
        if line.replay != first.replay or (line.position is None) != (first.position is None):
            break
        if (
            not first.replay
            and line.position is not None
            and line.position == pending[n - 1].position
        ):
            break
        n += 1
    return pending[:n], pending[n:]


def _read_state(state: str | None) -> tuple[str | None, list[tuple[int, str]]]:
    try:
        parsed = _state_decoder.decode(state) if state else None
    except msgspec.DecodeError:
        parsed = None
        log.warning("ignoring an unreadable Bluesky checkpoint state")
    if parsed is None or parsed.v != _STATE_VERSION:
        return None, []
    return parsed.instance, parsed.recent


def from_settings(settings: Settings, _spec: str) -> BlueskySource:
    """``--source bluesky``: the URLs, compression and session gap from the settings."""
    dictionary: bytes | None = None
    if settings.bluesky_compress:
        path: Path | None = settings.bluesky_zstd_dictionary
        if path is None:
            raise ConfigError(
                "bluesky_compress needs Jetstream's zstd dictionary (pkg/models/zstd_dictionary "
                "in the Jetstream repository): set bluesky_zstd_dictionary to its path, or turn "
                "compression off"
            )
        try:
            dictionary = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the zstd dictionary {path}: {exc.strerror}") from None
    return BlueskySource(
        urls=settings.bluesky_urls or (DEFAULT_URL,),
        zstd_dictionary=dictionary,
        replay_seconds=settings.session_gap,
        stall_timeout=settings.bluesky_stall_timeout,
    )
