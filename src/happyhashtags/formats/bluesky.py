"""Bluesky Jetstream events: ``commit`` events that create an ``app.bsky.feed.post`` record.

Jetstream (https://github.com/bluesky-social/jetstream) turns the AT Protocol firehose into JSON,
one event per WebSocket message::

    {"did": "did:plc:...", "time_us": 1725911162329308, "kind": "commit",
     "commit": {"rev": "...", "operation": "create", "collection": "app.bsky.feed.post",
                "rkey": "3l3qo2vuowo2b", "cid": "bafy...",
                "record": {"$type": "app.bsky.feed.post", "text": "...", "createdAt": "...",
                           "facets": [...], "tags": [...]}}}

Only a create of a post is a `Post`; everything else (identity and account events, deletes,
updates, other collections) is `Skipped`. The record is decoded only for those creates, so the
other events cost one small parse.
"""

from __future__ import annotations

import calendar
from datetime import datetime

import msgspec

from happyhashtags.errors import DecodeError
from happyhashtags.model import Post, Skipped
from happyhashtags.text import extract_hashtags

__all__ = [
    "FUTURE_TOLERANCE",
    "POST_COLLECTION",
    "TAG_FEATURE",
    "decode_bluesky",
    "parse_created_at",
    "post_uri",
]

POST_COLLECTION = "app.bsky.feed.post"
TAG_FEATURE = "app.bsky.richtext.facet#tag"

FUTURE_TOLERANCE = 300.0
"""Seconds a post's client-set ``createdAt`` may lie after Jetstream's ``time_us`` before the
post is timed by ``time_us`` instead (a wrong device clock must not move counts into the future)."""


class _Commit(msgspec.Struct, gc=False):
    operation: str = ""
    collection: str = ""
    rkey: str = ""
    # Kept raw: records of other collections have other shapes and are never looked at. (An
    # empty Raw stands for "absent": msgspec does not decode Raw inside a union.)
    record: msgspec.Raw = msgspec.Raw()


class _Event(msgspec.Struct, gc=False):
    did: str = ""
    time_us: int | None = None
    kind: str = ""
    commit: _Commit | None = None


class _Feature(msgspec.Struct, gc=False):
    type: str = msgspec.field(name="$type", default="")
    tag: str | None = None


class _Facet(msgspec.Struct, gc=False):
    features: list[_Feature] = []


class _PostRecord(msgspec.Struct, gc=False):
    text: str = ""
    createdAt: str | None = None  # the lexicon's field name
    facets: list[_Facet] | None = None
    tags: list[str] | None = None


_event_decoder = msgspec.json.Decoder(_Event)
_record_decoder = msgspec.json.Decoder(_PostRecord)

_SKIP_KINDS = {"identity": Skipped("identity"), "account": Skipped("account")}
_SKIP_OPERATIONS = {"delete": Skipped("delete"), "update": Skipped("update")}
_OTHER_KIND = Skipped("other_kind")
_OTHER_COLLECTION = Skipped("other_collection")
_OTHER_OPERATION = Skipped("other_operation")
_HASH_SIGNS = "#＃"
_NULL = msgspec.Raw(b"null")


def post_uri(did: str, rkey: str) -> str:
    """The AT URI of a post: ``at://{did}/app.bsky.feed.post/{rkey}``."""
    return f"at://{did}/{POST_COLLECTION}/{rkey}"


def parse_created_at(value: str) -> float | None:
    """Seconds since the epoch of a record's ``createdAt`` (ISO 8601), or None if unreadable.

    A time without a zone is taken as UTC; digits beyond microseconds are ignored.

    >>> parse_created_at("2024-09-09T19:46:02.102Z")
    1725911162.102
    """
    try:
        parsed = datetime.fromisoformat(value)
    except (ValueError, TypeError):
        return None
    if parsed.tzinfo is None:
        return calendar.timegm(parsed.timetuple()) + parsed.microsecond / 1e6
    return parsed.timestamp()


def _hashtags(record: _PostRecord) -> tuple[str, ...] | None:
    extra = [t.lstrip(_HASH_SIGNS) for t in record.tags or ()]
    if not record.facets:
        # No facets at all: the client did not mark up the text, so its hashtags are found the
        # way every other source's are; `tags` (extra tags shown apart from the text) still add.
        if not any(extra):
            return None
        return tuple(extract_hashtags(record.text)) + tuple(t for t in extra if t)
    tags = [
        feature.tag.lstrip(_HASH_SIGNS)
        for facet in record.facets
        for feature in facet.features
        if feature.type == TAG_FEATURE and feature.tag
    ]
    tags.extend(extra)
    return tuple(t for t in tags if t)


def _event_time(created_at: str | None, reference: float) -> float:
    if created_at:
        created = parse_created_at(created_at)
        if created is not None and created <= reference + FUTURE_TOLERANCE:
            return created
    return reference


def decode_bluesky(line: bytes, received_at: float) -> Post | Skipped:
    """Decode one Jetstream event.

    A create of an ``app.bsky.feed.post`` record becomes a `Post`: id the AT URI, author the
    DID, text ``record.text``, hashtags the ``#tag`` facets plus ``record.tags`` (None, meaning
    "extract from the text", when the record has no facets and no tags), event time
    ``record.createdAt`` unless it is missing, unreadable or more than `FUTURE_TOLERANCE` seconds
    after the event's ``time_us`` (then ``time_us``; `received_at` when that is missing too).

    Raises:
        DecodeError: the line is not JSON, or not an event of the documented shape.
    """
    try:
        event = _event_decoder.decode(line)
    except msgspec.ValidationError as exc:
        raise DecodeError("invalid_shape", str(exc)) from None
    except msgspec.DecodeError as exc:
        raise DecodeError("malformed_json", str(exc)) from None
    if event.kind != "commit":
        if not event.kind:
            raise DecodeError("unrecognized", "not a Jetstream event (no kind)")
        return _SKIP_KINDS.get(event.kind, _OTHER_KIND)
    commit = event.commit
    if commit is None:
        raise DecodeError("invalid_shape", "commit event without commit")
    if commit.collection != POST_COLLECTION:
        return _OTHER_COLLECTION
    if commit.operation != "create":
        return _SKIP_OPERATIONS.get(commit.operation, _OTHER_OPERATION)
    if not event.did or not commit.rkey or not commit.record or commit.record == _NULL:
        raise DecodeError("invalid_shape", "post create without did, rkey or record")
    try:
        record = _record_decoder.decode(commit.record)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise DecodeError("invalid_shape", f"post record: {exc}") from None
    reference = event.time_us / 1e6 if event.time_us is not None else received_at
    return Post(
        id=post_uri(event.did, commit.rkey),
        author=event.did,
        event_time=_event_time(record.createdAt, reference),
        text=record.text,
        hashtags=_hashtags(record),
    )
