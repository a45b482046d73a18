"""A fake Jetstream: a real WebSocket server on 127.0.0.1 replaying scripted events.

It speaks Jetstream's subscribe protocol as far as a client can see it: events are JSON text
messages in the real shape (``did``, ``time_us``, ``kind``: commit/identity/account, ``commit.{rev,
operation, collection, rkey, cid, record}``); ``cursor`` replays from that ``time_us`` on,
inclusive (a cursor older than the first event starts at the first, as when it is past
retention); ``wantedCollections`` filters commits (identity and account events always pass);
``compress=true`` sends binary zstd frames made with the dictionary the fake was given. Without a
cursor the whole script is "the live tail".

Per connection, `script` says how it ends: ``("drop", n)`` cuts the TCP connection after n
messages, ``("close", n)`` closes it with a close frame, ``("stall", n)`` goes silent with the
connection open; past the script, every event is sent and the connection stays open (idle, as
the live tail is when nothing happens). `refuse` answers the next handshakes with HTTP 503 (or
`refuse_status`); after `accept` accepted connections, every later handshake is refused (an
instance gone down). `preamble` messages (raw, not events) open every connection.

    with FakeJetstream(events, script=[("drop", 3)]) as server:
        source = BlueskySource(urls=[server.url])
"""

from __future__ import annotations

import copy
import hashlib
import socket
import threading
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
import zstandard
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

POST = "app.bsky.feed.post"
TAG = "app.bsky.richtext.facet#tag"

Event = dict[str, Any]


def iso(time_us: int) -> str:
    """A record ``createdAt`` for a time in microseconds, as Bluesky clients write it."""
    moment = datetime.fromtimestamp(time_us / 1e6, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _cid(seed: str) -> str:
    return "bafyrei" + hashlib.sha256(seed.encode()).hexdigest()[:52]


def _rev(time_us: int) -> str:
    return "3l" + format(time_us, "x")[-11:]


def commit_event(
    did: str,
    time_us: int,
    *,
    operation: str,
    collection: str,
    rkey: str,
    record: dict[str, Any] | None = None,
) -> Event:
    """A ``kind: commit`` event; creates and updates carry the record and its CID."""
    commit: dict[str, Any] = {
        "rev": _rev(time_us),
        "operation": operation,
        "collection": collection,
        "rkey": rkey,
    }
    if record is not None:
        commit["record"] = record
        commit["cid"] = _cid(f"{did}/{collection}/{rkey}/{operation}")
    return {"did": did, "time_us": time_us, "kind": "commit", "commit": commit}


def post_record(
    text: str,
    *,
    hashtags: Sequence[str] = (),
    tags: Sequence[str] | None = None,
    facets: bool = True,
    created_at: str | None = None,
    links: Sequence[str] = (),
) -> dict[str, Any]:
    """An ``app.bsky.feed.post`` record: `text` followed by `hashtags` (``#tag`` facets with
    UTF-8 byte offsets unless `facets` is false) and `links` (link facets)."""
    parts = [text] if text else []
    features: list[dict[str, Any]] = []
    for kind, values in (("tag", hashtags), ("link", links)):
        for value in values:
            shown = f"#{value}" if kind == "tag" else value
            start = len(" ".join(parts).encode()) + (1 if parts else 0)
            parts.append(shown)
            feature = (
                {"$type": TAG, "tag": value}
                if kind == "tag"
                else {"$type": "app.bsky.richtext.facet#link", "uri": value}
            )
            features.append(
                {
                    "$type": "app.bsky.richtext.facet",
                    "index": {"byteStart": start, "byteEnd": start + len(shown.encode())},
                    "features": [feature],
                }
            )
    record: dict[str, Any] = {"$type": POST, "text": " ".join(parts), "langs": ["en"]}
    if created_at is not None:
        record["createdAt"] = created_at
    if facets and features:
        record["facets"] = features
    if tags is not None:
        record["tags"] = list(tags)
    return record


def post_event(
    did: str,
    rkey: str,
    time_us: int,
    text: str = "hello",
    *,
    created_at: str | None = "",
    **record: Any,
) -> Event:
    """A post create; `created_at` "" means: at `time_us` (None: no ``createdAt``)."""
    when = iso(time_us) if created_at == "" else created_at
    return commit_event(
        did,
        time_us,
        operation="create",
        collection=POST,
        rkey=rkey,
        record=post_record(text, created_at=when, **record),
    )


def delete_event(did: str, rkey: str, time_us: int, collection: str = POST) -> Event:
    """A record delete (no record, no CID)."""
    return commit_event(did, time_us, operation="delete", collection=collection, rkey=rkey)


def like_event(did: str, rkey: str, time_us: int, subject: str) -> Event:
    """A like of the post at AT URI `subject`."""
    record = {
        "$type": "app.bsky.feed.like",
        "createdAt": iso(time_us),
        "subject": {"cid": _cid(subject), "uri": subject},
    }
    return commit_event(
        did, time_us, operation="create", collection="app.bsky.feed.like", rkey=rkey, record=record
    )


def identity_event(did: str, time_us: int, handle: str) -> Event:
    """An identity (handle) update."""
    return {
        "did": did,
        "time_us": time_us,
        "kind": "identity",
        "identity": {"did": did, "handle": handle, "seq": time_us // 1000, "time": iso(time_us)},
    }


def account_event(did: str, time_us: int, *, active: bool = True) -> Event:
    """An account status change."""
    account: dict[str, Any] = {"active": active, "did": did, "seq": time_us // 1000}
    account["time"] = iso(time_us)
    if not active:
        account["status"] = "deactivated"
    return {"did": did, "time_us": time_us, "kind": "account", "account": account}


def firehose(posts: int, *, start_us: int, step_us: int = 100_000) -> list[Event]:
    """A mixed stream with `posts` post creates, one author each, hashtags ``all`` and ``p{i}``
    (every third one happy), interleaved with identity, account, like and delete events and a
    post update; `time_us` grows by `step_us` per event."""
    events: list[Event] = []
    t = start_us
    for i in range(posts):
        did = f"did:plc:author{i:05d}"
        rkey = f"3k{i:011d}"
        happy = " :)" if i % 3 == 0 else ""
        events.append(post_event(did, rkey, t, f"post {i}{happy}", hashtags=("all", f"p{i}")))
        t += step_us
        extra = i % 5
        if extra == 1:
            events.append(identity_event(did, t, f"user{i}.bsky.social"))
        elif extra == 2:
            events.append(account_event(did, t, active=i % 2 == 0))
        elif extra == 3:
            events.append(like_event(did, f"3l{i:011d}", t, f"at://{did}/{POST}/{rkey}"))
        elif extra == 4:
            events.append(delete_event(did, f"3z{i:011d}", t))
        else:
            update = post_event(did, rkey, t, f"post {i} edited", hashtags=("edited",))
            update["commit"]["operation"] = "update"
            events.append(update)
        t += step_us
    return events


def shifted(events: Iterable[Event], offset_us: int) -> list[Event]:
    """The same events as another instance stamps them: every `time_us` moved by `offset_us`."""
    out = []
    for event in events:
        moved = copy.deepcopy(event)
        moved["time_us"] += offset_us
        out.append(moved)
    return out


class FakeJetstream:
    """The fake server; use as a context manager (or `start`/`stop`)."""

    def __init__(
        self,
        events: Sequence[Event],
        *,
        script: Sequence[tuple[str, int]] = (),
        refuse: int = 0,
        refuse_status: int = 503,
        accept: int | None = None,
        preamble: Sequence[bytes] = (),
        zstd_dictionary: bytes | None = None,
        path: str = "/subscribe",
    ) -> None:
        self.events = sorted(events, key=lambda e: int(e["time_us"]))
        self.script = list(script)
        self.refuse = refuse
        self.refuse_status = refuse_status
        self.accept = accept
        self.preamble = list(preamble)  # raw messages sent first on every connection
        self.connected = threading.Event()  # set at every accepted connection (clear to reuse)
        self.path = path
        self.requests: list[dict[str, list[str]]] = []  # query of every handshake, refused too
        self.sent: list[int] = []  # messages sent on each accepted connection
        self._dictionary = zstd_dictionary
        self._lock = threading.Lock()
        self._accepted = 0
        self._port = 0
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def url(self) -> str:
        assert self._port, "start the server first"
        return f"ws://127.0.0.1:{self._port}{self.path}"

    @property
    def cursors(self) -> list[int | None]:
        """The cursor each handshake asked for (None: the live tail)."""
        return [int(q["cursor"][0]) if "cursor" in q else None for q in self.requests]

    def start(self) -> FakeJetstream:
        self._server = serve(
            self._handle,
            "127.0.0.1",
            0,
            process_request=self._process_request,
            compression=None,
            ping_interval=None,
        )
        self._port = int(self._server.socket.getsockname()[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-jetstream", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> FakeJetstream:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        query = parse_qs(urlsplit(request.path).query)
        with self._lock:
            self.requests.append(query)
            if urlsplit(request.path).path != self.path:
                return conn.respond(404, "not found\n")
            if self.refuse > 0:
                self.refuse -= 1
                return conn.respond(self.refuse_status, "unavailable\n")
            if self.accept is not None and self._accepted >= self.accept:
                return conn.respond(503, "unavailable\n")
            self._accepted += 1
        return None

    def _handle(self, conn: ServerConnection) -> None:
        assert conn.request is not None
        query = parse_qs(urlsplit(conn.request.path).query)
        with self._lock:
            number = len(self.sent)
            self.sent.append(0)
            how, limit = self.script[number] if number < len(self.script) else ("idle", -1)
        self.connected.set()
        cursor = int(query["cursor"][0]) if "cursor" in query else None
        wanted = query.get("wantedCollections")
        compressor = None
        if query.get("compress") == ["true"] and self._dictionary is not None:
            compressor = zstandard.ZstdCompressor(
                dict_data=zstandard.ZstdCompressionDict(self._dictionary)
            )
        try:
            for raw in self.preamble:
                conn.send(raw.decode())
            for event in self.events:
                if cursor is not None and event["time_us"] < cursor:
                    continue
                if not _wants(wanted, event):
                    continue
                if limit >= 0 and self.sent[number] >= limit:
                    break
                data = msgspec.json.encode(event)
                if compressor is not None:
                    conn.send(compressor.compress(data))
                else:
                    conn.send(data.decode())
                with self._lock:
                    self.sent[number] += 1
            if how == "drop":
                conn.socket.shutdown(socket.SHUT_RDWR)
                return
            if how == "close":
                conn.close(1011, "going away")
                return
            # stall / idle: keep the connection open until the client or the server ends it.
            while not self._stop.is_set():
                try:
                    conn.recv(timeout=0.1)
                except TimeoutError:
                    continue
        except (ConnectionClosed, OSError):
            return


def _wants(wanted: list[str] | None, event: Event) -> bool:
    if not wanted or event.get("kind") != "commit":
        return True
    collection = str(event["commit"]["collection"])
    for pattern in wanted:
        if pattern.endswith(".*"):
            if collection.startswith(pattern[:-1]):
                return True
        elif collection == pattern:
            return True
    return False
