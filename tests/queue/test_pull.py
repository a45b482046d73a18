"""The pull consumer's requests (queue/pull.py) against the real NATS server."""

from __future__ import annotations

import asyncio
import time

import pytest

from happyhashtags.queue import pull
from happyhashtags.queue.pull import PullConsumer


def test_pulls_ask_for_a_byte_budget_and_go_on_when_the_server_ends_one_for_it(
    nats_url: str, unique_name: str, stream: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without a byte budget a pull of many large messages can outrun the server's pending limit
    # for this connection (a "slow consumer": messages dropped, delivery stalled). With one, the
    # server ends a request once its budget is spent (a 409 status), and the consumer must ask
    # again at once, not wait for the request to expire: 12 messages of 600 KB need several
    # pulls of twice the largest allowed message (1 MB by default), well within one expiry.
    import nats

    monkeypatch.setattr(pull, "PULL_BYTES", 1)  # the budget is then 2 * max_payload
    payload = b"x" * 600_000
    requests: list[bytes] = []

    async def scenario() -> tuple[int, float]:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        try:
            await js.add_stream(name=stream, subjects=[f"{stream}.>"])
            for i in range(12):
                await js.publish(f"{stream}.posts", payload + str(i).encode())
            consumer = PullConsumer(nc, js, stream=stream, durable=unique_name, ack_wait=30.0)
            await consumer.start_at(None)
            publish = nc.publish

            async def spy(subject: str, data: bytes = b"", **kwargs: object) -> None:
                if ".MSG.NEXT." in subject:
                    requests.append(data)
                await publish(subject, data, **kwargs)  # type: ignore[arg-type]

            nc.publish = spy  # type: ignore[method-assign]
            received = 0
            started = time.monotonic()
            while received < 12 and time.monotonic() - started < 20:
                received += len(await consumer.fetch(1000, 5.0))
            return received, time.monotonic() - started
        finally:
            await nc.close()

    received, seconds = asyncio.run(scenario())
    assert received == 12
    assert seconds < 5.0  # no pull waited out its 5 s expiry
    assert len(requests) >= 3
    budget = 2 * 1024 * 1024
    assert all(b'"max_bytes": %d' % budget in request for request in requests)
