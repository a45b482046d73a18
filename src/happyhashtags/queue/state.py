"""Counter snapshots: how `process` restarts with the state an uninterrupted run would have.

The counter's state (its anti-spam sessions and the post ids it remembers) cannot be rebuilt
from a fixed window of the stream: a session lasts as long as its author never pauses longer than
the gap, so an author posting every ten minutes keeps one session, and the hashtags it has seen,
for days. Storing the whole state with every flush would make each commit megabytes.

So `process` snapshots the counter every minute or so, right after a flush drained it (its
state is then exactly "the stream up to position P"), into a JetStream object store, and names
the snapshot (with its SHA-256) in the consumer's checkpoint, in the same transaction as the
counts. After a restart it loads that snapshot, checks the digest, and replays the messages after
the snapshot's position up to the committed position through `PostCounter.replay`, which updates
state exactly as `add` does, without counting. The result is the counter an uninterrupted run
holds at that position, bit for bit: sessions, remembered ids, even when stale state is dropped.

The snapshot is the counter pickled (the counter is kept picklable for workers and Spark) and
compressed. Because the digest comes from the database, a snapshot altered in NATS is refused,
never unpickled.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import pickle
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import zstandard

from happyhashtags.aggregate import COMPILED, PostCounter

if TYPE_CHECKING:
    from nats.js.client import JetStreamContext
    from nats.js.object_store import ObjectStore

__all__ = [
    "SnapshotRef",
    "SnapshotStore",
    "counter_fingerprint",
    "delete_stream",
    "dump_counter",
    "load_counter_into",
    "snapshot_bucket",
]

log = logging.getLogger(__name__)

_CONFIG = (
    "bucket_seconds",
    "session_gap",
    "allowed_lateness",
    "count_retweets",
    "dedupe_capacity",
    "max_sessions",
    "max_session_keys",
)

_STATE_FORMAT = 4  # 3: session keys in one string; 4: ids as 64-bit keys (0.1.0 development)


class SnapshotError(Exception):
    """A snapshot could not be used (missing, altered, or made with other settings)."""


@dataclass(frozen=True, slots=True)
class SnapshotRef:
    """Where a counter snapshot is and what it must hash to, as recorded in a checkpoint."""

    position: int
    name: str
    sha256: str
    config: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "name": self.name,
            "sha256": self.sha256,
            "config": self.config,
        }

    @classmethod
    def from_dict(cls, data: Any) -> SnapshotRef | None:
        try:
            return cls(
                int(data["position"]), str(data["name"]), str(data["sha256"]), str(data["config"])
            )
        except (TypeError, KeyError, ValueError):
            return None


def counter_fingerprint(counter: PostCounter) -> str:
    """The counting settings a snapshot is only valid for (bucket, sessions, markers, ...)."""
    values: dict[str, object] = {name: getattr(counter, name, None) for name in _CONFIG}
    # The layout of the pickled state: snapshots of an older layout are refused (and the state is
    # rebuilt by replaying the stream), never half understood.
    values["state_format"] = _STATE_FORMAT
    # The compiled sessions pickle to another form than their pure-Python twin: a snapshot taken
    # with one is refused by the other (and the state rebuilt), not misread.
    values["compiled"] = COMPILED
    happy = getattr(counter, "happy", None)
    values["happy"] = list(getattr(happy, "markers", ()))
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def dump_counter(counter: PostCounter) -> bytes:
    """The counter's state, pickled and compressed. Call right after a drain."""
    raw = pickle.dumps(counter, protocol=pickle.HIGHEST_PROTOCOL)
    return zstandard.ZstdCompressor(level=1).compress(raw)


def load_counter_into(counter: PostCounter, blob: bytes, ref: SnapshotRef) -> None:
    """Give `counter` (fresh, with the current settings) the state stored in `blob`.

    Raises:
        SnapshotError: the blob does not match the digest recorded in the database, or the
            snapshot was made with other counting settings (or with the compiled state where
            this build has none, or the reverse).
    """
    if hashlib.sha256(blob).hexdigest() != ref.sha256:
        raise SnapshotError("its SHA-256 differs from the one recorded in the database")
    if counter_fingerprint(counter) != ref.config:
        raise SnapshotError("it was made with other counting settings or another build")
    try:
        raw = zstandard.ZstdDecompressor().decompress(blob)
    except zstandard.ZstdError as exc:
        raise SnapshotError(f"it does not decompress: {exc}") from None
    # Safe: the bytes hash to the digest our own database transaction recorded.
    stored = pickle.loads(raw)  # noqa: S301
    if not isinstance(stored, PostCounter):
        raise SnapshotError("it does not hold a counter")
    stored.drain()  # it was taken after a drain: nothing pending, but be sure
    stats = counter.stats
    counter.__setstate__(stored.__getstate__())
    counter.stats = stats  # this run's statistics start at zero


def snapshot_ref(position: int, name: str, blob: bytes, counter: PostCounter) -> SnapshotRef:
    """The reference to record for `blob`, the snapshot of `counter` at `position`."""
    return SnapshotRef(
        position, name, hashlib.sha256(blob).hexdigest(), counter_fingerprint(counter)
    )


def snapshot_bucket(stream: str) -> str:
    """The JetStream object store that holds `stream`'s counter snapshots."""
    return f"happyhashtags-state-{stream}"


async def delete_stream(js: JetStreamContext, stream: str) -> None:
    """Delete `stream` and its snapshot object store, where they exist."""
    from nats.js.errors import NotFoundError

    with contextlib.suppress(NotFoundError):
        await js.delete_stream(stream)
    with contextlib.suppress(NotFoundError):
        await js.delete_object_store(snapshot_bucket(stream))


class SnapshotStore:
    """Counter snapshots in a JetStream object store named after the stream (async API)."""

    def __init__(self, js: JetStreamContext, *, stream: str, replicas: int = 1) -> None:
        self.js = js
        self.bucket = snapshot_bucket(stream)
        self.replicas = replicas
        self._store: ObjectStore | None = None

    async def _open(self) -> ObjectStore:
        if self._store is not None:
            return self._store
        from nats.js.api import ObjectStoreConfig, StorageType
        from nats.js.errors import BucketNotFoundError

        try:
            store = await self.js.object_store(self.bucket)
        except BucketNotFoundError:
            store = await self.js.create_object_store(
                self.bucket,
                ObjectStoreConfig(
                    description="happyhashtags: counter snapshots of process",
                    storage=StorageType.FILE,
                    replicas=self.replicas,
                ),
            )
        self._store = store
        return store

    async def put(self, name: str, blob: bytes) -> None:
        store = await self._open()
        await store.put(name, blob)

    async def get(self, name: str) -> bytes:
        from nats.js.errors import ObjectNotFoundError

        store = await self._open()
        try:
            result = await store.get(name)
        except ObjectNotFoundError:
            raise SnapshotError(f"no snapshot {name!r} in {self.bucket}") from None
        data = result.data
        if data is None:
            raise SnapshotError(f"snapshot {name!r} is empty")
        return bytes(data)

    async def prune(self, prefix: str, before: int) -> None:
        """Delete the snapshots named ``<prefix><position>`` with a position below `before`
        (never a newer one: it may be uploading, about to be referenced)."""
        from nats.js.errors import NotFoundError

        store = await self._open()
        try:
            infos = await store.list()
        except NotFoundError:
            return
        for info in infos:
            suffix = info.name[len(prefix) :] if info.name.startswith(prefix) else ""
            if suffix.isdigit() and int(suffix) < before and not info.deleted:
                with contextlib.suppress(NotFoundError):
                    await store.delete(info.name)
