"""Jetstream's wire, as `sources.bluesky` uses it: where to subscribe and how, what it needs of
each event (its cursor and, for a post, its AT URI), and how a failed connection is described."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec

from happyhashtags.errors import MissingExtraError
from happyhashtags.formats.bluesky import POST_COLLECTION, post_uri

__all__ = [
    "CONNECT_OPTIONS",
    "DEFAULT_URL",
    "RETENTION",
    "ZSTD_MAGIC",
    "event_head",
    "failure_reason",
    "failure_status",
    "instance_key",
    "subscribe_url",
    "websockets_client",
]

DEFAULT_URL = "wss://jetstream2.us-east.bsky.network/subscribe"
RETENTION = 36 * 3600.0
"""About how long public Jetstream instances keep events for cursor playback (seconds)."""

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
"""How a zstd frame starts: a compressed message (``compress=true``) begins with it."""

CONNECT_OPTIONS: dict[str, Any] = {  # websockets.sync.client.connect's keywords
    "open_timeout": 10.0,
    "close_timeout": 2.0,
    "max_size": 16 << 20,  # a message larger than this ends the connection
    "max_queue": 1024,  # messages buffered before reading from the socket pauses
    "compression": None,  # Jetstream's own zstd is better than permessage-deflate
    "user_agent_header": "happyhashtags",
}


class _HeadCommit(msgspec.Struct, gc=False):
    operation: str = ""
    collection: str = ""
    rkey: str = ""


class _Head(msgspec.Struct, gc=False):
    """What the source needs from each event: its cursor and, for a post create, its URI."""

    did: str = ""
    time_us: int | None = None
    commit: _HeadCommit | None = None


_head_decoder = msgspec.json.Decoder(_Head)


def event_head(message: bytes) -> tuple[int | None, str | None]:
    """An event's ``time_us`` and, for a post create, the post's AT URI (None when absent)."""
    try:
        head = _head_decoder.decode(message)
    except msgspec.DecodeError:
        return None, None  # the decoder dead-letters it
    c = head.commit
    if c and c.operation == "create" and c.collection == POST_COLLECTION and head.did and c.rkey:
        return head.time_us, post_uri(head.did, c.rkey)
    return head.time_us, None


def instance_key(url: str) -> str:
    """The instance a URL points to, as ``scheme://host[:port]/path``: no credentials, no query.

    Used for logs, batch origins and the checkpoint state, so never holds a secret.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def subscribe_url(
    url: str,
    *,
    collections: Sequence[str] = (POST_COLLECTION,),
    cursor: int | None = None,
    compress: bool = False,
) -> str:
    """The Jetstream subscription URL: `url` plus ``wantedCollections`` (unless `url` names its
    own), ``cursor`` and ``compress=true``; other query parameters of `url` are kept.

    >>> subscribe_url("wss://js.example/subscribe", cursor=1725911162329308)
    'wss://js.example/subscribe?wantedCollections=app.bsky.feed.post&cursor=1725911162329308'
    """
    parts = urlsplit(url)
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if k not in ("cursor", "compress")
    ]
    if not any(k == "wantedCollections" for k, _ in query):
        query.extend(("wantedCollections", c) for c in collections)
    if cursor is not None:
        query.append(("cursor", str(cursor)))
    if compress:
        query.append(("compress", "true"))
    return urlunsplit(parts._replace(query=urlencode(query, safe=":*")))


def failure_status(exc: BaseException | None) -> int | None:
    """The HTTP status of a refused WebSocket handshake, else None."""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def failure_reason(exc: BaseException | None) -> str:
    """A failed or lost connection in a few words, for the log (None: it stalled)."""
    if exc is None:
        return "stalled"
    status = failure_status(exc)
    if status is not None:
        return f"HTTP {status}"
    return str(exc) or type(exc).__name__


def websockets_client() -> tuple[Any, tuple[type[BaseException], ...]]:
    """The websockets library's ``connect`` and the errors a connection may raise.

    Raises:
        MissingExtraError: the ``bluesky`` extra is not installed.
    """
    try:
        from websockets.exceptions import WebSocketException
        from websockets.sync.client import connect
    except ImportError:
        raise MissingExtraError("the Bluesky source", "bluesky") from None
    return connect, (WebSocketException, OSError, TimeoutError)
