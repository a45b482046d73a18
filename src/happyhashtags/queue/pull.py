"""The asyncio side of `NatsSource`: one durable JetStream pull consumer, read with raw pull
requests (``$JS.API.CONSUMER.MSG.NEXT``) into a buffer. nats-py's own ``fetch`` waits per message
and was several times slower here."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription
    from nats.js.api import ConsumerInfo
    from nats.js.client import JetStreamContext

__all__ = ["PULL_BYTES", "PullConsumer", "ack_fields"]

PULL_BYTES = 8 << 20
"""Bytes of messages one pull request asks for at most (raised to fit the largest message)."""


class PullConsumer:
    """The asyncio side: one durable pull consumer and its delivery inbox."""

    def __init__(
        self, nc: NATS, js: JetStreamContext, *, stream: str, durable: str, ack_wait: float
    ):
        self.nc = nc
        self.js = js
        self.stream = stream
        self.durable = durable
        self.ack_wait = ack_wait
        self.buffer: deque[Msg] = deque()
        self.event = asyncio.Event()
        self.problem: str | None = None
        self.deleted = False
        self._sub: Subscription | None = None
        self._inbox = ""
        self._generation = 0
        self._request_open = False
        self._request_left = 0
        self._request_deadline = 0.0

    async def start_at(self, seq: int | None) -> ConsumerInfo:
        """(Re)create the durable consumer delivering from stream sequence `seq` (None: all)."""
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        from nats.js.errors import NotFoundError

        self._generation += 1
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None
        self.buffer.clear()
        self.problem = None
        self.deleted = False
        self._request_open = False
        with contextlib.suppress(NotFoundError):
            await self.js.delete_consumer(self.stream, self.durable)
        config = ConsumerConfig(
            name=self.durable,
            durable_name=self.durable,
            description="happyhashtags process (recreated at each start; see docs/queue.md)",
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if seq else DeliverPolicy.ALL,
            opt_start_seq=seq or None,
            ack_policy=AckPolicy.ALL,
            ack_wait=self.ack_wait,
            max_ack_pending=-1,
            max_deliver=-1,
        )
        info = await self.js.add_consumer(self.stream, config)
        generation = self._generation
        self._inbox = self.nc.new_inbox()

        async def on_message(msg: Msg) -> None:
            if generation == self._generation:
                self._on_message(msg)

        self._sub = await self.nc.subscribe(
            self._inbox, cb=on_message, pending_msgs_limit=-1, pending_bytes_limit=-1
        )
        return info

    def _on_message(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers and not msg.data else None
        if status is not None:
            if status == "100":  # idle heartbeat
                return
            self._request_open = False
            if status == "409":
                description = msg.headers.get("Description", "") if msg.headers else ""
                if "Deleted" in description:
                    self.deleted = True
        else:
            self.buffer.append(msg)
            self._request_left -= 1
            if self._request_left <= 0:
                self._request_open = False
        self.event.set()

    def connection_changed(self) -> None:
        # A pull request does not survive a reconnect: ask again at once.
        self._request_open = False
        self.event.set()

    async def fetch(self, count: int, wait: float) -> list[Msg]:
        """Up to `count` delivered messages, waiting up to `wait` seconds for the first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while not self.buffer:
            if self.problem is not None or self.deleted:
                return []
            now = loop.time()
            if not self._request_open or now > self._request_deadline:
                await self._request(count, wait)
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            self.event.clear()
            try:
                await asyncio.wait_for(self.event.wait(), remaining)
            except TimeoutError:
                return []
        if len(self.buffer) < count and self._request_open:
            # The rest of a burst is usually a few microseconds behind the first message.
            await asyncio.sleep(0.002)
        take = min(count, len(self.buffer))
        return [self.buffer.popleft() for _ in range(take)]

    async def _request(self, count: int, wait: float) -> None:
        if not self.nc.is_connected:
            return
        # A byte budget too: without one, a pull of `count` large messages can exceed the
        # server's per-connection pending limit (64 MB by default) while this process counts;
        # the server then drops them as a "slow consumer" and delivery stalls until they are
        # asked for again. At least twice the largest message NATS allows, so one always fits.
        budget = max(PULL_BYTES, 2 * self.nc.max_payload)
        payload = json.dumps(
            {"batch": count, "max_bytes": budget, "expires": int(wait * 1e9)}
        ).encode()
        subject = f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{self.durable}"
        await self.nc.publish(subject, payload, reply=self._inbox)
        self._request_open = True
        self._request_left = count
        self._request_deadline = asyncio.get_running_loop().time() + wait + 1.0

    async def info(self) -> ConsumerInfo:
        info: ConsumerInfo = await self.js.consumer_info(self.stream, self.durable, timeout=2)
        return info

    async def ack(self, reply: str) -> None:
        await self.nc.publish(reply, b"+ACK")


def ack_fields(msg: Msg) -> tuple[int, int, float, int]:
    """(delivery sequence, stream sequence, stored at, messages pending) from the reply subject:
    ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<delivery seq>.<ns>.<pending>``, or the
    form with a domain and account hash after ``ACK``. Parsed here because it runs per message
    and nats-py's parser builds a datetime and two objects each time."""
    tokens = (msg.reply or "").split(".")
    try:
        if len(tokens) == 9:
            return int(tokens[6]), int(tokens[5]), int(tokens[7]) / 1e9, int(tokens[8])
        if len(tokens) >= 11:
            return int(tokens[8]), int(tokens[7]), int(tokens[9]) / 1e9, int(tokens[10])
    except ValueError:
        pass
    meta = msg.metadata  # raises NotJSMessageError for anything else
    stamp = meta.timestamp.timestamp()
    return meta.sequence.consumer, meta.sequence.stream, stamp, meta.num_pending
