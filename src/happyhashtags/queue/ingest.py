"""``ingest``: read a source, journal every message, publish the journal to JetStream in order.

Three threads. One reads the source; the caller's thread groups the lines of each read into
messages of up to `message_posts` lines (`happyhashtags.queue.framing`), gives each its
``Nats-Msg-Id`` (the post id for a message of one line, else a hash of the payload: JetStream
drops repeated publishes by it) and appends it to the `Spool` with its read time and format; a
`Publisher` on an asyncio loop thread publishes the spool in order.

A message counts as ingested only once JetStream acknowledged it. While NATS is unreachable the
reader keeps reading (the spool grows, bounded by its size); when the spool is full the reader
stops reading and says so. Nothing is dropped silently.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from happyhashtags.engines.base import StoppableEngine
from happyhashtags.errors import DecodeError
from happyhashtags.formats import Checker, Decoder, get_checker, get_decoder
from happyhashtags.model import Post
from happyhashtags.queue.framing import (
    DEFAULT_MESSAGE_BYTES,
    DEFAULT_MESSAGE_POSTS,
    frame_id,
    frames,
    normalize_line,
    split_message,
)
from happyhashtags.queue.jetstream import DEFAULT_DUPLICATE_WINDOW, LoopThread, require_nats
from happyhashtags.queue.publisher import Publisher
from happyhashtags.queue.spool import Spool
from happyhashtags.queue.url import QueueURL
from happyhashtags.sources.base import Batch, Source

__all__ = ["IngestSummary", "Ingestor", "message_id"]

log = logging.getLogger(__name__)

_MAX_ID = 256


def message_id(item: object, line: bytes) -> str:
    """The ``Nats-Msg-Id`` of a message of one line: its post id, or a hash of the line when it has
    none (not a post, no id, or undecodable)."""
    if isinstance(item, Post) and item.id:
        post_id = item.id
        if len(post_id) <= _MAX_ID and post_id.isascii() and post_id.isprintable():
            return post_id
    return "sha:" + hashlib.blake2b(line, digest_size=16).hexdigest()


@dataclass(slots=True)
class IngestSummary:
    """What an ingest run did (`published` and `duplicates` count messages, of up to
    `Ingestor.message_posts` lines each)."""

    lines: int = 0
    blank: int = 0
    undecodable: int = 0
    published: int = 0
    duplicates: int = 0
    backlog_bytes: int = 0
    elapsed: float = 0.0
    interrupted: bool = False


class Ingestor(StoppableEngine):
    """Reads a source into a JetStream stream through the spool (see the module docstring).

    `run` returns when the source has ended and everything read is acknowledged, or soon after a
    stop request (`request_stop`, or `handle_signal` installed for SIGINT/SIGTERM): then it gives
    the publisher up to `stop_timeout` seconds to drain, and leaves the rest in the spool for
    the next run. The source is read on a thread of its own, so a signal never has to interrupt
    a blocked read here.
    """

    stop_note = "what was read stays in the spool if not published"

    def __init__(
        self,
        *,
        source: Source,
        url: QueueURL,
        spool_dir: Path,
        spool_max_bytes: int = 1 << 30,
        replicas: int = 1,
        max_age: float = 7 * 86400.0,
        duplicate_window: float = DEFAULT_DUPLICATE_WINDOW,
        message_posts: int = DEFAULT_MESSAGE_POSTS,
        message_bytes: int = DEFAULT_MESSAGE_BYTES,
        window: int = 2048,
        ack_timeout: float = 10.0,
        stop_timeout: float = 5.0,
        durable_spool: bool = True,
        progress_every: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(source=source)
        self.url = url
        self.spool_dir = Path(spool_dir) / url.stream
        self.spool_max_bytes = spool_max_bytes
        self.replicas = replicas
        self.max_age = max_age
        self.duplicate_window = duplicate_window
        if message_posts < 1:
            raise ValueError("message_posts must be at least 1")
        self.message_posts = message_posts
        self.message_bytes = message_bytes
        self.window = window
        self.ack_timeout = ack_timeout
        self.stop_timeout = stop_timeout
        self.durable_spool = durable_spool
        self.progress_every = progress_every
        self._clock = clock
        self._dropped = 0
        self.summary = IngestSummary()

    def run(self) -> IngestSummary:
        """Ingest until the source ends (and all is acknowledged) or a stop is requested."""
        require_nats()
        decode = get_decoder(self.source.format)
        check = get_checker(self.source.format)
        summary = self.summary
        started = self._clock()
        spool = Spool(
            directory=self.spool_dir, max_bytes=self.spool_max_bytes, durable=self.durable_spool
        )
        publisher = Publisher(
            url=self.url,
            spool=spool,
            fmt=self.source.format,
            replicas=self.replicas,
            max_age=self.max_age,
            duplicate_window=self.duplicate_window,
            window=self.window,
            ack_timeout=self.ack_timeout,
        )
        thread = LoopThread("happyhashtags-ingest")
        done = thread.submit(publisher.run())
        self._last_progress = started
        try:
            self._read(decode, check, spool, publisher)
            self._wait_until_drained(spool, publisher, done.done)
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            self.source.close()
            if not summary.interrupted and self._stopping.is_set():
                summary.interrupted = True
            if summary.interrupted:
                deadline = self._clock() + self.stop_timeout
                while spool.pending_bytes and publisher.connected.is_set():
                    if self._clock() >= deadline or done.done():
                        break
                    time.sleep(0.05)
            publisher.stop()
            try:
                done.result(timeout=3)
            except Exception as exc:  # the publisher's own failure, reported below
                log.debug("publisher ended with %r", exc)
            thread.stop(timeout=2)
            spool.close()
            summary.published = publisher.published
            summary.duplicates = publisher.duplicates
            summary.backlog_bytes = spool.pending_bytes
            summary.elapsed = self._clock() - started
        if publisher.fatal is not None:
            raise publisher.fatal
        if summary.backlog_bytes:
            log.warning(
                "%.1f MB read from the source are not in JetStream yet: they stay in %s and the "
                "next ingest with this spool publishes them first",
                summary.backlog_bytes / 1e6,
                self.spool_dir,
            )
        return summary

    def _read(self, decode: Decoder, check: Checker, spool: Spool, publisher: Publisher) -> None:
        # The source is read in its own thread: a blocking read (a quiet pipe, a stream between
        # keep-alives) must not keep this one from noticing a stop or a publisher failure. The
        # small queue passes back-pressure on: when the spool is full, the source is not read.
        handoff: queue.Queue[Batch | BaseException | None] = queue.Queue(maxsize=2)
        reader = threading.Thread(
            target=self._read_source, args=(handoff,), name="happyhashtags-source", daemon=True
        )
        reader.start()
        unjournaled = 0
        while not self._stopping.is_set():
            if publisher.fatal is not None:
                raise publisher.fatal
            try:
                batch = handoff.get(timeout=0.1)
            except queue.Empty:
                continue
            if batch is None:
                return
            if isinstance(batch, BaseException):
                raise batch
            items = self._items(batch, decode, check)
            journaled = spool.append(items, stopping=self._stopping) if items else 0
            if journaled < len(items):
                unjournaled += sum(len(split_message(item[3])) for item in items[journaled:])
                break
            self._progress(spool, publisher)
        # Stopped: batches read but not journaled (the spool was full, or waiting in the
        # hand-off) are lost for sources that cannot be read again. Say so, with the number.
        reader.join(0.5)
        unjournaled += self._dropped
        with contextlib.suppress(queue.Empty):
            while True:
                left = handoff.get_nowait()
                if isinstance(left, Batch):
                    unjournaled += sum(1 for line in left.lines if line.strip())
        if unjournaled:
            log.error(
                "stopped with %d lines read from %s but not journaled: a file source is read "
                "again next time; from a live source they are lost",
                unjournaled,
                self.source.name,
            )

    def _read_source(self, handoff: queue.Queue[Batch | BaseException | None]) -> None:
        item: Batch | BaseException | None = None
        try:
            for batch in self.source.batches():
                while not self._stopping.is_set():
                    try:
                        handoff.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                else:
                    self._dropped += sum(1 for line in batch.lines if line.strip())
                    return
        except Exception as exc:  # handed to the main thread, which raises it
            item = exc
        with contextlib.suppress(queue.Full):
            handoff.put(item, timeout=1.0)

    def _items(
        self, batch: Batch, decode: Decoder, check: Checker
    ) -> list[tuple[float, str, str, bytes]]:
        """The spool records of a batch: messages of up to `message_posts` lines.

        A message of one line is named by its post id, so that line is decoded; the lines of
        a longer message are only checked, in one call per message, to count the undecodable
        ones. Either way an undecodable line is published all the same: process keeps it as
        a dead letter, with its context."""
        summary, fmt, received_at = self.summary, self.source.format, batch.received_at
        lines: list[bytes] = []
        for raw in batch.lines:
            line = raw.strip()
            if line:
                lines.append(normalize_line(line))
            else:
                summary.blank += 1
        summary.lines += len(lines)
        items = []
        for frame in frames(lines, max_lines=self.message_posts, max_bytes=self.message_bytes):
            if len(frame) == 1:
                try:
                    item: object = decode(frame[0], received_at)
                except DecodeError:
                    summary.undecodable += 1
                    item = None
                items.append((received_at, message_id(item, frame[0]), fmt, frame[0]))
            else:
                summary.undecodable += len(check(frame, received_at))
                payload = b"\n".join(frame)
                items.append((received_at, frame_id(frame, payload), fmt, payload))
        return items

    def _wait_until_drained(
        self, spool: Spool, publisher: Publisher, publisher_done: Callable[[], bool]
    ) -> None:
        while spool.pending_bytes and not self._stopping.is_set():
            if publisher.fatal is not None or publisher_done():
                return
            self._stopping.wait(0.05)
            self._progress(spool, publisher)

    def _progress(self, spool: Spool, publisher: Publisher) -> None:
        now = self._clock()
        if now - self._last_progress < self.progress_every:
            return
        self._last_progress = now
        log.info(
            "read %d messages; JetStream acknowledged %d (%d duplicates); %.1f MB in the spool",
            self.summary.lines,
            publisher.published + publisher.duplicates,
            publisher.duplicates,
            spool.pending_bytes / 1e6,
        )
