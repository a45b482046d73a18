"""``status``: the stream's size, each consumer's committed position, its lag, the dead letters."""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from happyhashtags.errors import SourceError, StorageError
from happyhashtags.queue.jetstream import require_nats, stream_format
from happyhashtags.queue.url import QueueURL
from happyhashtags.storage.schema import dead_letters
from happyhashtags.storage.store import Store, database_url_for_display

if TYPE_CHECKING:
    from nats.js.client import JetStreamContext

__all__ = ["ConsumerStatus", "QueueStatus", "queue_status"]


@dataclass(slots=True)
class ConsumerStatus:
    """One consumer: its committed position (from the database) and how far behind it is."""

    name: str
    position: int | None = None
    updated_at: datetime | None = None
    position_time: datetime | None = None
    lag_messages: int | None = None
    lag_seconds: float | None = None
    acked_upto: int | None = None
    unacknowledged: int | None = None


@dataclass(slots=True)
class QueueStatus:
    """What `happyhashtags status` shows."""

    queue: str
    stream: str
    format: str | None = None
    messages: int = 0
    bytes: int = 0
    first_seq: int = 0
    last_seq: int = 0
    first_time: datetime | None = None
    last_time: datetime | None = None
    storage: str | None = None
    replicas: int | None = None
    max_age: float | None = None
    duplicate_window: float | None = None
    database: str | None = None
    database_error: str | None = None
    dead_letters: int | None = None
    consumers: list[ConsumerStatus] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: times as ISO 8601 strings."""

        def convert(value: Any) -> Any:
            if isinstance(value, datetime):
                return value.isoformat()
            if isinstance(value, list):
                return [convert(v) for v in value]
            if isinstance(value, dict):
                return {k: convert(v) for k, v in value.items()}
            return value

        result: dict[str, Any] = convert(asdict(self))
        return result


def queue_status(
    *, url: QueueURL, store: Store | None, consumers: list[str] | None = None, timeout: float = 5.0
) -> QueueStatus:
    """Gather the status of the stream `url` names and of its consumers recorded in `store`.

    `consumers` limits the report to those names (default: every consumer the database knows,
    or none without a database).

    Raises:
        SourceError: NATS cannot be reached, or the stream does not exist.
    """
    require_nats()
    status = QueueStatus(queue=url.display, stream=url.stream)
    positions: dict[str, tuple[int, datetime]] = {}
    if store is not None:
        status.database = database_url_for_display(store.url)
        try:
            positions = {name: (cp.position, at) for name, (cp, at) in store.positions().items()}
            with store.engine.connect() as connection:
                count = connection.execute(sa.select(sa.func.count()).select_from(dead_letters))
                status.dead_letters = int(count.scalar_one())
        except (StorageError, sa.exc.SQLAlchemyError) as exc:
            status.database_error = str(exc).splitlines()[0]
    names = consumers if consumers else sorted(positions)
    asyncio.run(_fill_from_nats(status, url, names, positions, timeout))
    return status


async def _fill_from_nats(
    status: QueueStatus,
    url: QueueURL,
    names: list[str],
    positions: dict[str, tuple[int, datetime]],
    timeout: float,
) -> None:
    import nats
    from nats.js.errors import NotFoundError

    try:
        nc = await asyncio.wait_for(
            nats.connect(
                servers=list(url.servers),
                name="happyhashtags-status",
                allow_reconnect=False,
                # nats-py retries a first connection this many times per server (0: for ever).
                max_reconnect_attempts=1,
                reconnect_time_wait=0.2,
                connect_timeout=timeout,
                error_cb=_quiet,
            ),
            timeout=timeout * 3,
        )
    except Exception as exc:
        raise SourceError(
            f"cannot reach NATS at {url.display}: {exc or type(exc).__name__}"
        ) from None
    try:
        js = nc.jetstream(timeout=timeout)
        try:
            info = await js.stream_info(url.stream)
        except NotFoundError:
            raise SourceError(f"stream {url.stream} does not exist on {url.display}") from None
        state, config = info.state, info.config
        status.format = stream_format(info)
        status.messages, status.bytes = state.messages, state.bytes
        status.first_seq, status.last_seq = state.first_seq, state.last_seq
        status.storage = str(getattr(config.storage, "value", config.storage))
        status.replicas = config.num_replicas
        status.max_age = config.max_age
        status.duplicate_window = config.duplicate_window
        if state.messages:
            status.first_time = await _time_of(js, url.stream, state.first_seq)
            status.last_time = await _time_of(js, url.stream, state.last_seq)
        for name in names:
            status.consumers.append(await _consumer(js, status, name, positions.get(name)))
    finally:
        await nc.close()


async def _quiet(_exc: Exception) -> None:
    # nats-py logs every failed attempt by default; the one error raised says it all.
    return None


async def _consumer(
    js: JetStreamContext,
    status: QueueStatus,
    name: str,
    position: tuple[int, datetime] | None,
) -> ConsumerStatus:
    from nats.js.errors import Error as JetStreamError

    result = ConsumerStatus(name=name)
    if position is not None:
        result.position, result.updated_at = position
        read = max(position[0], status.first_seq - 1)
        result.lag_messages = max(0, status.last_seq - read)
        if result.lag_messages == 0:
            result.lag_seconds = 0.0
        elif status.last_time is not None:
            at = None
            if position[0] >= status.first_seq:
                at = result.position_time = await _time_of(js, status.stream, position[0])
            at = at or status.first_time
            if at is not None:
                result.lag_seconds = max(0.0, (status.last_time - at).total_seconds())
    try:
        info = await js.consumer_info(status.stream, name)
    except JetStreamError:
        return result
    result.acked_upto = info.ack_floor.stream_seq if info.ack_floor else None
    result.unacknowledged = info.num_ack_pending
    return result


async def _time_of(js: JetStreamContext, stream: str, seq: int) -> datetime | None:
    from nats.js.errors import Error as JetStreamError

    try:
        message = await js.get_msg(stream, seq)
    except JetStreamError:
        return None
    return message.time
