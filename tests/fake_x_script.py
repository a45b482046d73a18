"""What the fake X API (`fake_x_api`) says and does: X's paths, payloads and error bodies, and
the steps a test scripts for one streaming connection (`Posts`, `Drop`, `Respond`, ...)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_BODIES",
    "EXPANSIONS",
    "FILTERED",
    "FIRST_POST_ID",
    "NOT_FOUND",
    "OPERATIONAL_DISCONNECT",
    "PROBLEMS",
    "RULES",
    "RULE_CONFIGURATION",
    "SAMPLE",
    "STREAM_PATHS",
    "TWEET_FIELDS",
    "UNAUTHORIZED",
    "Action",
    "Drop",
    "End",
    "Hangup",
    "KeepAlive",
    "Posts",
    "Raw",
    "Respond",
    "SplitPost",
    "Stall",
    "StreamError",
    "make_post",
]

FILTERED = "/2/tweets/search/stream"
SAMPLE = "/2/tweets/sample/stream"
RULES = "/2/tweets/search/stream/rules"
STREAM_PATHS = {"x-filtered": FILTERED, "x-sample": SAMPLE}

# X's error documents, as it sends them.
# fmt: off
UNAUTHORIZED = {"title": "Unauthorized", "type": "about:blank", "status": 401,
                "detail": "Unauthorized"}
TOO_MANY_CONNECTIONS = {
    "title": "ConnectionException",
    "detail": "This stream is currently at the maximum allowed connection limit.",
    "connection_issue": "TooManyConnections",
    "type": "https://api.twitter.com/2/problems/streaming-connection",
}
RULE_CONFIGURATION = {
    "title": "ConnectionException",
    "detail": "You must define rules using the POST /2/tweets/search/stream/rules endpoint before "
              "connecting to filtered stream.",
    "connection_issue": "RuleConfigurationIssue",
    "type": "https://api.twitter.com/2/problems/streaming-connection",
}
SERVICE_UNAVAILABLE = {"title": "Service Unavailable", "detail": "Service Unavailable",
                       "type": "about:blank", "status": 503}
CLIENT_FORBIDDEN = {
    "client_id": "12345678",
    "detail": "When authenticating requests to the Twitter API v2 endpoints, you must use keys "
              "and tokens from a Twitter developer App that is attached to a Project. You can "
              "create a project via the developer portal.",
    "registration_url": "https://developer.twitter.com/en/docs/projects/overview",
    "title": "Client Forbidden", "required_enrollment": "Appropriate Level of API Access",
    "reason": "client-not-enrolled", "type": "https://api.twitter.com/2/problems/client-forbidden",
}
NOT_FOUND = {"title": "Not Found Error", "detail": "Sorry, that page does not exist.",
             "type": "https://api.twitter.com/2/problems/resource-not-found"}
OPERATIONAL_DISCONNECT = {"errors": [{
    "title": "operational-disconnect",
    "disconnect_type": "OperationalDisconnect",
    "detail": "This stream has been disconnected for operational reasons.",
    "type": "https://api.twitter.com/2/problems/operational-disconnect",
}]}
DEFAULT_BODIES: dict[int, dict[str, Any]] = {
    401: UNAUTHORIZED, 403: CLIENT_FORBIDDEN, 409: RULE_CONFIGURATION,
    429: TOO_MANY_CONNECTIONS, 503: SERVICE_UNAVAILABLE,
}
TWEET_FIELDS = {
    "attachments", "author_id", "card_uri", "context_annotations", "conversation_id",
    "created_at", "edit_controls", "edit_history_tweet_ids", "entities", "geo", "id",
    "in_reply_to_user_id", "lang", "non_public_metrics", "note_tweet", "organic_metrics",
    "possibly_sensitive", "promoted_metrics", "public_metrics", "referenced_tweets",
    "reply_settings", "source", "text", "withheld",
}
EXPANSIONS = {
    "attachments.media_keys", "attachments.poll_ids", "author_id", "edit_history_tweet_ids",
    "entities.mentions.username", "geo.place_id", "in_reply_to_user_id", "referenced_tweets.id",
    "referenced_tweets.id.author_id",
}
# fmt: on
FIRST_POST_ID = 1_800_000_000_000_000_000
PROBLEMS = "https://api.twitter.com/2/problems"


def make_post(number: int) -> tuple[str, bytes]:
    """Post `number` as a stream message (no line end): its id and its JSON bytes.

    Each post has one hashtag of its own, ``#p<number>``, a happy marker, and multi-byte UTF-8
    text around them, so a test can check every post was counted exactly once and a chunk can be
    split inside a character.
    """
    post_id = str(FIRST_POST_ID + number)
    tag = f"p{number}"
    prefix = "Grüße aus 東京 ☕ "
    text = f"{prefix}#{tag} :)"
    start = len(prefix)
    message = {
        "data": {
            "id": post_id,
            "text": text,
            "created_at": "2026-01-01T12:00:00.000Z",
            "author_id": str(1000 + number),
            "lang": "de",
            "edit_history_tweet_ids": [post_id],
            "entities": {"hashtags": [{"start": start, "end": start + len(tag) + 1, "tag": tag}]},
        },
        "includes": {
            "users": [{"id": str(1000 + number), "name": "Zoë", "username": f"u{number}"}]
        },
        "matching_rules": [{"id": "1700000000000000001", "tag": "happy"}],
    }
    return post_id, json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()


# -- what one connection does, step by step ---------------------------------------------------


@dataclass(frozen=True)
class Respond:
    """Answer the request with `status` and X's error body for it, then wait for the next
    request on the same keep-alive connection. ``reset_in`` sets ``x-rate-limit-reset`` to
    that many seconds after now on the server's clock (None: the usual 15-minute window);
    ``no_reset`` leaves the header out."""

    status: int
    body: dict[str, Any] | None = None
    reset_in: float | None = None
    no_reset: bool = False


@dataclass(frozen=True)
class Posts:
    """Send `count` posts: one HTTP chunk each, or all in one chunk when `packed`."""

    count: int
    packed: bool = False


@dataclass(frozen=True)
class KeepAlive:
    """Send `count` keep-alive lines (``\\r\\n``), `every` seconds apart (real time)."""

    count: int = 1
    every: float = 0.0


@dataclass(frozen=True)
class SplitPost:
    """Send one post in three HTTP chunks: cut inside a multi-byte UTF-8 character, and
    between its ``\\r`` and ``\\n``."""


@dataclass(frozen=True)
class Raw:
    """Send `data` as one HTTP chunk, as is."""

    data: bytes


@dataclass(frozen=True)
class StreamError:
    """Send an in-stream error object (default: an operational disconnect), then end the
    response, as X does."""

    body: dict[str, Any] = field(default_factory=lambda: OPERATIONAL_DISCONNECT)


@dataclass(frozen=True)
class Stall:
    """Send nothing for `seconds` (real time; the server's `stop` ends it early), then drop."""

    seconds: float = 30.0


@dataclass(frozen=True)
class Drop:
    """Close the TCP connection in the middle of the chunked body (no final chunk)."""


@dataclass(frozen=True)
class End:
    """End the response cleanly (the final zero-length chunk), then close."""


@dataclass(frozen=True)
class Hangup:
    """Close the TCP connection without sending any response (a network-level failure)."""


Action = Respond | Posts | KeepAlive | SplitPost | Raw | StreamError | Stall | Drop | End | Hangup
