"""`NatsSource`: `process` reads the stream in order through a durable JetStream pull consumer.

Exactly once, with the engine: the engine writes the counts and the last stream sequence they
cover in one database transaction, then calls `committed`, and only then are the messages
acknowledged (``AckAll`` up to that sequence). On start the engine hands `resume` the committed
checkpoint; the consumer is recreated to deliver from just after the counter snapshot that
checkpoint names (see `happyhashtags.queue.state`): messages up to the committed sequence come
back as ``Batch(replay=True)`` and rebuild the counter's state without being counted, later ones
are counted. Whatever the server redelivers at or below what was read is skipped.

Order matters (sessions follow arrival order), so delivery is checked: the consumer sequence of
each delivery must follow the previous one. A gap (a pull answered while the connection was
down) would let the server redeliver the missed messages later, out of order; the consumer is
then recreated at the first sequence not yet read.

nats-py is asyncio; the engine is synchronous. The source runs an event loop in a thread
(`LoopThread`), so the client keeps answering pings and reconnecting while the engine counts or
waits for the database, and its sync methods wait on that loop.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from happyhashtags.aggregate import PostCounter
from happyhashtags.errors import ConfigError
from happyhashtags.model import Checkpoint
from happyhashtags.queue.jetstream import (
    HEADER_FORMAT,
    HEADER_RECEIVED_AT,
    Backoff,
    LoopThread,
    connect,
    require_nats,
    stream_created,
    stream_format,
)
from happyhashtags.queue.pull import PullConsumer, ack_fields
from happyhashtags.queue.state import (
    SnapshotError,
    SnapshotRef,
    SnapshotStore,
    dump_counter,
    load_counter_into,
    snapshot_ref,
)
from happyhashtags.queue.url import QueueURL
from happyhashtags.sources.base import Batch, Clock, LineBlock, system_clock

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg
    from nats.js.api import StreamInfo
    from nats.js.client import JetStreamContext

__all__ = ["NatsSource"]

log = logging.getLogger(__name__)

_CONSUMER_NAME_BAD = set(" \t\r\n.*>/\\")


class NatsSource:
    """The messages of a JetStream stream, as a resumable `Source` for the engine.

    Use it as a context manager, connect, then give it to a `LocalEngine`:

    >>> with NatsSource(url=parse_queue_url("nats://127.0.0.1:4222/POSTS"), consumer="c",
    ...                 counter=counter) as source:  # doctest: +SKIP
    ...     if source.connect():
    ...         LocalEngine(source=source, counter=counter, store=store).run()

    Args:
        counter: the engine's counter, so its state can be snapshotted and restored after a
            restart (without it, a restart starts with empty sessions and no remembered ids).
        batch_size: messages asked for per pull.
        fetch_wait: how long one pull waits for messages before the engine gets an empty batch
            (its chance to flush on time).
        idle_exit: end (and let the engine finish) once the stream has been drained and quiet
            for this many seconds; None: run until closed.
        snapshot_every: seconds between counter snapshots (a restart replays at most about
            this much of the stream).
        ack_wait: JetStream's redelivery timeout; redeliveries are skipped, so it only needs to
            be long enough not to waste bandwidth.
    """

    total: int | None = None

    def __init__(
        self,
        *,
        url: QueueURL,
        consumer: str,
        counter: PostCounter | None = None,
        batch_size: int = 1000,
        fetch_wait: float = 1.0,
        idle_exit: float | None = None,
        snapshot_every: float = 60.0,
        ack_wait: float = 300.0,
        clock: Clock = system_clock,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not consumer or _CONSUMER_NAME_BAD & set(consumer):
            raise ConfigError(
                f"invalid consumer name {consumer!r}: no spaces, dots, slashes, '*' or '>'"
            )
        self.url = url
        self.name = url.display
        self.format = "x"
        self.consumer = consumer
        self.counter = counter
        self.batch_size = batch_size
        self.fetch_wait = fetch_wait
        self.idle_exit = idle_exit
        self.snapshot_every = snapshot_every
        self.ack_wait = ack_wait
        self._clock = clock
        self._monotonic = monotonic
        self._closed = threading.Event()
        self._thread: LoopThread | None = None
        self._nc: NATS | None = None
        self._pull: PullConsumer | None = None
        self._snapshots: SnapshotStore | None = None
        self._info: StreamInfo | None = None
        self._resume_position = 0
        self._committed = 0
        self._read_upto = 0
        self._expected_delivery = 1
        self._unacked: deque[tuple[int, str]] = deque()
        self._acks: list[Any] = []
        self._pending = 0
        self._last_time = 0.0
        self._caught_up = False
        self._last_activity = monotonic()
        self.idle_tail = 0.0
        """Seconds the stream had been quiet when `idle_exit` stopped the source (else 0)."""
        self._snapshot_due = monotonic() + snapshot_every
        self._snapshot_uploading = False
        self._durable_snapshot: SnapshotRef | None = None
        self._referenced: SnapshotRef | None = None
        self._pruned_below = 0
        self._suspect_delivered = 0
        self._warned_format = False
        self.taken_over = False

    # -- connecting ---------------------------------------------------------------------------

    def connect(self) -> bool:
        """Connect to NATS and find the stream, waiting (and saying so) until both are there.

        Returns False if `close` was called first.
        """
        require_nats()
        thread = self._thread = LoopThread("happyhashtags-process")
        on_change = self._connection_changed
        connecting = thread.submit(
            connect(
                self.url,
                name="happyhashtags-process",
                on_disconnect=on_change,
                on_reconnect=on_change,
            )
        )
        while not connecting.done():
            if self._closed.wait(0.1):
                connecting.cancel()
                return False
        nc = self._nc = connecting.result()
        js = nc.jetstream(timeout=5)
        info = self._wait_for_stream(js)
        if info is None:
            return False
        self._info = info
        self.format = stream_format(info) or self._format_of_first_message(js, info) or "x"
        self._pull = PullConsumer(
            nc, js, stream=self.url.stream, durable=self.consumer, ack_wait=self.ack_wait
        )
        self._snapshots = SnapshotStore(
            js, stream=self.url.stream, replicas=info.config.num_replicas or 1
        )
        log.info(
            "reading stream %s (%s messages, format %s) as consumer %s",
            self.url.display,
            f"{info.state.messages:,}",
            self.format,
            self.consumer,
        )
        return True

    def _wait_for_stream(self, js: JetStreamContext) -> StreamInfo | None:
        from nats.errors import Error as NatsError
        from nats.js.errors import NotFoundError

        assert self._thread is not None
        backoff = Backoff(initial=0.5, maximum=10.0)
        said = False
        while not self._closed.is_set():
            try:
                return self._thread.run(js.stream_info(self.url.stream), timeout=10)
            except NotFoundError:
                if not said:
                    log.warning(
                        "stream %s does not exist yet: waiting for ingest to create it",
                        self.url.display,
                    )
                    said = True
            except (NatsError, TimeoutError, OSError) as exc:
                log.warning(
                    "cannot read stream %s yet: %s", self.url.display, exc or type(exc).__name__
                )
            self._closed.wait(backoff.next())
        return None

    def _format_of_first_message(self, js: JetStreamContext, info: StreamInfo) -> str | None:
        if not info.state.messages or self._thread is None:
            return None
        try:
            first = self._thread.run(js.get_msg(self.url.stream, info.state.first_seq), timeout=5)
        except Exception:
            return None
        headers = first.headers or {}
        value = headers.get(HEADER_FORMAT)
        return str(value) if value else None

    def _connection_changed(self) -> None:
        if self._pull is not None:
            self._pull.connection_changed()

    # -- Resumable ----------------------------------------------------------------------------

    def resume(self, checkpoint: Checkpoint | None) -> None:
        """Start reading after `checkpoint` (None: from the stream's start), replaying what the
        counter's state needs first."""
        thread, pull, info = self._thread, self._pull, self._info
        if thread is None or pull is None or info is None:
            raise RuntimeError("NatsSource.resume before connect")
        position = checkpoint.position if checkpoint else 0
        state = _parse_state(checkpoint.state if checkpoint else None)
        self._check_stream_identity(state, info, position)
        start = position + 1 if checkpoint else 0
        if checkpoint is not None and self.counter is not None:
            ref = SnapshotRef.from_dict(state.get("snapshot"))
            if ref is not None and ref.position > position:
                log.warning("ignoring a counter snapshot newer than the committed position")
                ref = None
            start = self._restore_counter(ref) + 1
        first = info.state.first_seq
        if checkpoint is not None and position + 1 < first:
            log.error(
                "messages %d to %d expired from stream %s before they were counted (max age?): "
                "they are lost to these counts",
                position + 1,
                first - 1,
                self.url.stream,
            )
        elif start and start < first <= position:
            log.warning(
                "messages %d to %d, needed to rebuild sessions exactly, expired from the stream: "
                "sessions open before message %d are rebuilt partially",
                start,
                first - 1,
                first,
            )
        if start and start <= position:
            log.info(
                "replaying messages %d to %d to rebuild the counter's state (not counted again)",
                start,
                position,
            )
        self._resume_position = self._committed = position
        self._read_upto = max(start - 1, 0)
        self._open_consumer(start or None)

    def _restore_counter(self, ref: SnapshotRef | None) -> int:
        """Load the snapshot into the counter; return the position it covers (0: none)."""
        assert self.counter is not None
        assert self._thread is not None
        if ref is None:
            return 0
        try:
            assert self._snapshots is not None
            blob = self._thread.run(self._snapshots.get(ref.name), timeout=120)
            load_counter_into(self.counter, blob, ref)
        except SnapshotError as exc:
            log.warning(
                "cannot use the counter snapshot %s (%s): rebuilding the state by replaying the "
                "stream from its start",
                ref.name,
                exc,
            )
            return 0
        except Exception as exc:
            log.warning(
                "cannot read the counter snapshot %s (%s): replaying from the start", ref.name, exc
            )
            return 0
        log.info("restored the counter's state as of message %d", ref.position)
        self._durable_snapshot = self._referenced = ref
        return ref.position

    def _check_stream_identity(
        self, state: dict[str, Any], info: StreamInfo, position: int
    ) -> None:
        recorded_stream, recorded_created = state.get("stream"), state.get("created")
        created = stream_created(info)
        if recorded_stream and recorded_stream != self.url.stream:
            raise ConfigError(
                f"consumer {self.consumer!r} in this database counted stream {recorded_stream}, "
                f"not {self.url.stream}: use another --consumer name (and database)"
            )
        if recorded_created and created and recorded_created != created:
            raise ConfigError(
                f"consumer {self.consumer!r} counted stream {self.url.stream} up to message "
                f"{position}, but the stream was recreated since ({recorded_created} -> "
                f"{created}): its sequence numbers start again. Count it into a new database"
            )

    def checkpoint_state(self, position: int) -> str | None:
        """What to store with `position`: the stream's identity and the latest durable counter
        snapshot. Also starts a new snapshot when one is due (the counter was just drained, so
        its state is exactly "up to `position`")."""
        if self.counter is not None and self._monotonic() >= self._snapshot_due:
            self._start_snapshot(position)
        ref = self._durable_snapshot
        self._referenced = ref
        info = self._info
        state: dict[str, Any] = {
            "stream": self.url.stream,
            "created": stream_created(info) if info is not None else None,
            "snapshot": ref.as_dict() if ref is not None else None,
        }
        return json.dumps(state, separators=(",", ":"))

    def _start_snapshot(self, position: int) -> None:
        if self._snapshot_uploading or self._thread is None or self._snapshots is None:
            return
        assert self.counter is not None
        self._snapshot_due = self._monotonic() + self.snapshot_every
        blob = dump_counter(self.counter)
        name = f"{self.consumer}.{position}"
        ref = snapshot_ref(position, name, blob, self.counter)
        self._snapshot_uploading = True
        future = self._thread.submit(self._snapshots.put(name, blob))

        def done(result: Any) -> None:
            self._snapshot_uploading = False
            if result.cancelled() or result.exception() is not None:
                log.warning("could not store a counter snapshot: %s", result.exception())
                return
            self._durable_snapshot = ref
            log.debug("stored counter snapshot %s (%d bytes)", name, len(blob))

        future.add_done_callback(done)

    def committed(self, position: int) -> None:
        """The counts up to `position` are committed: acknowledge the messages up to it."""
        self._committed = position
        last = None
        while self._unacked and self._unacked[0][0] <= position:
            last = self._unacked.popleft()
        if last is not None:
            self._ack(last[1])
        ref = self._referenced
        if ref is not None and ref.position > self._pruned_below and self._thread is not None:
            # Older snapshots are referenced by no committed checkpoint any more.
            assert self._snapshots is not None
            self._thread.submit(self._snapshots.prune(f"{self.consumer}.", ref.position))
            self._pruned_below = ref.position

    def _ack(self, reply: str) -> None:
        if self._thread is None or self._pull is None:
            return
        self._acks = [f for f in self._acks if not f.done()]
        self._acks.append(self._thread.submit(self._pull.ack(reply)))

    # -- Source -------------------------------------------------------------------------------

    def batches(self) -> Iterator[Batch]:
        """Batches of messages in stream order (replayed ones first), empty batches while the
        stream is quiet, until closed (or idle for `idle_exit` after draining the stream)."""
        from nats.errors import Error as NatsError
        from nats.js.errors import Error as JetStreamError

        thread, pull = self._thread, self._pull
        if thread is None or pull is None:
            raise RuntimeError("NatsSource.batches before connect and resume")
        backoff = Backoff(initial=0.2, maximum=5.0)
        while not self._closed.is_set():
            if pull.deleted:
                # Only an explicit delete does this: another process started with the same
                # consumer name. Two would both count, so this one stops.
                log.error(
                    "consumer %s was deleted, most likely by another process started with the "
                    "same --consumer: stopping so that only one counts",
                    self.consumer,
                )
                self.taken_over = True
                return
            try:
                if pull.problem is not None:
                    log.warning(
                        "%s: recreating it at message %d", pull.problem, self._read_upto + 1
                    )
                    self._open_consumer(self._read_upto + 1)
                messages = thread.run(pull.fetch(self.batch_size, self.fetch_wait))
                if not messages:
                    self._check_idle(thread, pull)
                backoff.reset()
            except (NatsError, JetStreamError, TimeoutError, OSError) as exc:
                log.warning("reading %s: %s", self.url.display, exc or type(exc).__name__)
                messages = []
                self._caught_up = False  # unknown until NATS answers again
                self._closed.wait(backoff.next())
            if not messages:
                if self._should_exit():
                    return
                yield Batch([], self._clock(), self.url.stream, 0, cursors=[])
                continue
            self._last_activity = self._monotonic()
            yield from self._runs(messages)

    def _check_idle(self, thread: LoopThread, pull: PullConsumer) -> None:
        from nats.js.errors import NotFoundError

        try:
            info = thread.run(pull.info(), timeout=5)
        except NotFoundError:
            pull.problem = "the consumer is gone"
            return
        self._caught_up = not info.num_pending and not pull.buffer
        delivered = info.delivered.consumer_seq if info.delivered else 0
        if delivered < self._expected_delivery or pull.buffer:
            self._suspect_delivered = 0
        elif delivered == self._suspect_delivered:
            # Twice in a row, a whole pull apart: the server delivered messages that never
            # arrived (a pull answered while the connection was down).
            pull.problem = f"{delivered - self._expected_delivery + 1} deliveries were lost"
            self._suspect_delivered = 0
        else:
            self._suspect_delivered = delivered

    def _should_exit(self) -> bool:
        if self.idle_exit is None or not self._caught_up:
            return False
        if self._monotonic() - self._last_activity < self.idle_exit:
            return False
        log.info("stream drained and idle for %g s: stopping (--idle-exit)", self.idle_exit)
        self.idle_tail = self._monotonic() - self._last_activity
        return True

    def _open_consumer(self, start: int | None) -> None:
        assert self._thread is not None
        assert self._pull is not None
        backoff = Backoff(initial=0.5, maximum=10.0)
        while not self._closed.is_set():
            try:
                info = self._thread.run(self._pull.start_at(start), timeout=15)
            except Exception as exc:
                log.warning(
                    "cannot create consumer %s yet: %s", self.consumer, exc or type(exc).__name__
                )
                self._closed.wait(backoff.next())
                continue
            self._expected_delivery = 1
            self._caught_up = not info.num_pending
            return

    def _runs(self, messages: list[Msg]) -> Iterator[Batch]:
        """Split messages into batches of one kind (replayed or new) and one read time, with
        consecutive sequences, dropping redeliveries. A message of several lines gives as many
        lines, each with the message's sequence as its cursor. A batch's lines are one
        `LineBlock`, its messages' payloads joined as lines are within one (queue.framing):
        the compiled counter reads it in place, with no bytes object per line."""
        stream = self.url.stream
        payloads: list[bytes] = []
        seqs: list[int] = []
        key: tuple[bool, float] | None = None
        last_replayed = None
        for msg in messages:
            delivery, seq, timestamp, pending = ack_fields(msg)
            if delivery != self._expected_delivery:
                if delivery > self._expected_delivery and self._pull is not None:
                    self._pull.problem = (
                        f"deliveries {self._expected_delivery} to {delivery - 1} were lost"
                    )
                break
            self._expected_delivery = delivery + 1
            self._pending = pending
            if seq <= self._read_upto:
                continue  # a redelivery of something already read
            self._read_upto = seq
            self._last_time = timestamp
            headers = msg.headers or {}
            received_at = _received_at(headers.get(HEADER_RECEIVED_AT), self._last_time)
            self._check_format(headers.get(HEADER_FORMAT))
            replay = seq <= self._resume_position
            if replay:
                last_replayed = msg.reply
            else:
                self._unacked.append((seq, msg.reply))
            if key != (replay, received_at) or (seqs and seq != seqs[-1] + 1):
                if payloads and key is not None:
                    yield self._batch(stream, payloads, seqs, key)
                payloads, seqs, key = [], [], (replay, received_at)
            # A message may carry several lines (queue.framing): they share its sequence.
            payloads.append(msg.data)
            seqs += [seq] * len(LineBlock(msg.data))
        if payloads and key is not None:
            yield self._batch(stream, payloads, seqs, key)
        if last_replayed is not None:
            self._ack(last_replayed)  # at or below the committed position

    @staticmethod
    def _batch(
        stream: str, payloads: list[bytes], seqs: list[int], key: tuple[bool, float]
    ) -> Batch:
        replay, received_at = key
        lines = LineBlock(b"\n".join(payloads))
        return Batch(
            lines, received_at, stream, seqs[0], cursors=None if replay else seqs, replay=replay
        )

    def _check_format(self, value: str | None) -> None:
        if value and value != self.format and not self._warned_format:
            self._warned_format = True
            log.warning(
                "stream %s holds %r messages though its format is %r: they will likely become "
                "dead letters",
                self.url.stream,
                value,
                self.format,
            )

    # -- progress, closing --------------------------------------------------------------------

    @property
    def position(self) -> int:
        """The last stream sequence read."""
        return self._read_upto

    def lag(self) -> tuple[int, float]:
        """(messages not yet read, seconds between the last message read and now), from the
        last delivery's metadata."""
        if not self._pending:
            return 0, 0.0
        return self._pending, max(0.0, self._clock() - self._last_time)

    def close(self) -> None:
        """Stop reading: `batches` returns soon. Safe from a signal handler."""
        self._closed.set()
        if self._thread is not None and self._pull is not None:
            self._thread.call_soon(self._pull.event.set)

    def disconnect(self) -> None:
        """Send the last acknowledgements and close the connection."""
        self.close()
        thread, nc = self._thread, self._nc
        if thread is None:
            return
        for future in self._acks:
            try:
                future.result(timeout=2)
            except Exception as exc:
                log.debug("acknowledgement not sent: %s", exc)
        if nc is not None:
            try:
                thread.run(nc.flush(timeout=2), timeout=3)
                thread.run(nc.close(), timeout=3)
            except Exception as exc:
                log.debug("closing the NATS connection: %s", exc)
        thread.stop(timeout=2)
        self._thread = None

    def __enter__(self) -> NatsSource:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.disconnect()


def _received_at(value: str | None, fallback: float) -> float:
    if value:
        try:
            return float(value)
        except ValueError:
            pass
    return fallback


def _parse_state(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        state = json.loads(text)
    except ValueError:
        return {}
    return state if isinstance(state, dict) else {}
