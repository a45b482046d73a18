"""X (Twitter) payloads: API v2 stream messages and API v1.1 statuses, told apart per line.

One msgspec schema covers both shapes (v2 keeps the tweet under ``data``, v1.1 at the top level),
so a line is decoded once, with only the fields counting needs; everything else in the payload is
skipped by the decoder without building Python objects for it.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Sequence
from datetime import datetime

import msgspec

from happyhashtags._twins import compiled_or
from happyhashtags.aggregate import PostCounter
from happyhashtags.errors import DecodeError
from happyhashtags.formats import KeyPartitioner, LinesCounted, PartitionKey, refused_lines
from happyhashtags.model import Post, Skipped

__all__ = [
    "FUTURE_TOLERANCE",
    "count_x_lines",
    "decode_x",
    "parse_v1_time",
    "parse_v2_time",
    "partition_x_lines",
    "py_count_x_lines",
    "py_x_undecodable",
    "undecodable_x_lines",
]


class _Hashtag(msgspec.Struct, gc=False):
    tag: str | None = None  # v2
    text: str | None = None  # v1.1


class _Entities(msgspec.Struct, gc=False):
    hashtags: list[_Hashtag] = []


class _V2Reference(msgspec.Struct, gc=False):
    type: str = ""
    id: str = ""


class _V2NoteTweet(msgspec.Struct, gc=False):
    text: str = ""
    entities: _Entities | None = None


class _V2Tweet(msgspec.Struct, gc=False):
    id: str | None = None
    text: str = ""
    # A string, read by `_x_time` (compiled: no datetime object is built) or `parse_v2_time`.
    created_at: str | None = None
    author_id: str | None = None
    entities: _Entities | None = None
    referenced_tweets: list[_V2Reference] | None = None
    # Posts longer than 280 characters carry their full text here (tweet.fields=note_tweet).
    note_tweet: _V2NoteTweet | None = None


class _V2Includes(msgspec.Struct, gc=False):
    tweets: list[_V2Tweet] = []


class _V1User(msgspec.Struct, gc=False):
    id_str: str | None = None
    id: int | None = None


class _V1Extended(msgspec.Struct, gc=False):
    full_text: str = ""
    entities: _Entities | None = None


class _V1Status(msgspec.Struct, gc=False):
    id_str: str | None = None
    id: int | None = None
    text: str | None = None
    full_text: str | None = None
    created_at: str | None = None
    entities: _Entities | None = None
    extended_tweet: _V1Extended | None = None
    user: _V1User | None = None
    retweeted_status: _V1Status | None = None


_ABSENT = msgspec.Raw()


class _Envelope(_V1Status, gc=False):
    # v2 stream message
    data: _V2Tweet | None = None
    includes: _V2Includes | None = None
    # Notices are kept as raw JSON, never decoded; an absent one is the empty Raw (falsy). Not
    # `Raw | None`: msgspec then accepts only null, and every notice would fail validation.
    errors: msgspec.Raw = _ABSENT
    # v1.1 stream notices that are not statuses
    delete: msgspec.Raw = _ABSENT
    limit: msgspec.Raw = _ABSENT
    scrub_geo: msgspec.Raw = _ABSENT
    status_withheld: msgspec.Raw = _ABSENT
    user_withheld: msgspec.Raw = _ABSENT
    warning: msgspec.Raw = _ABSENT
    disconnect: msgspec.Raw = _ABSENT


_decoder = msgspec.json.Decoder(_Envelope)

_MONTHS = {
    m: i
    for i, m in enumerate(
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"],
        start=1,
    )
}


def parse_v1_time(value: str) -> float:
    """Seconds since the epoch of a v1.1 time such as ``Wed Oct 10 20:19:24 +0000 2018``.

    Hand-parsed because `strptime` costs about ten times more and this runs once per post.
    """
    try:
        _, month, day, clock, offset, year = value.split()
        hour, minute, second = clock.split(":")
        seconds = calendar.timegm(
            (int(year), _MONTHS[month], int(day), int(hour), int(minute), int(second), 0, 0, 0)
        )
        sign = -1 if offset[0] == "-" else 1
        seconds -= sign * (int(offset[1:3]) * 3600 + int(offset[3:5]) * 60)
    except (ValueError, KeyError, IndexError):
        raise DecodeError("bad_time", f"unreadable created_at {value[:60]!r}") from None
    return float(seconds)


FUTURE_TOLERANCE = 300.0
"""Seconds a post's ``created_at`` may lie after the time its line was read before the post is
timed by the read time instead. A far-future time (a skewed clock, a bad export) would
otherwise open a bucket in the future and move the sessions' watermark there, which expires
every live session: anti-spam sessions would be off for the rest of the run."""


def parse_v2_time(value: str) -> float:
    """Seconds since the epoch of an ISO 8601 time such as ``2022-10-10T20:19:24.000Z``."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise DecodeError("bad_time", f"unreadable created_at {value[:60]!r}") from None
    if parsed.tzinfo is None:
        # X always sends UTC; a naive time from an export is taken as UTC too.
        return calendar.timegm(parsed.timetuple()) + parsed.microsecond / 1e6
    return parsed.timestamp()


def _tags(entities: _Entities | None) -> tuple[str, ...] | None:
    if entities is None:
        return None
    hashtags = entities.hashtags
    if not hashtags:
        return ()
    return tuple([t for h in hashtags if (t := h.tag or h.text)])


def _no_fast_time(value: str) -> float | None:
    """The pure-Python twin of ``_speedups.parse_x_time``: always "let parse_v2_time read it"."""
    return None


def _v2_post(message: _Envelope, tweet: _V2Tweet, received_at: float) -> Post:
    source = tweet
    is_retweet = False
    if tweet.referenced_tweets:
        for ref in tweet.referenced_tweets:
            if ref.type == "retweeted":
                is_retweet = True
                # The retweet's own text is truncated ("RT @user: ...") and loses hashtags.
                if message.includes is not None:
                    for included in message.includes.tweets:
                        if included.id == ref.id:
                            source = included
                            break
                break
    if source.note_tweet is not None and source.note_tweet.text:
        # The note's own entities; without them its hashtags are extracted from its text (the
        # tweet's entities index the truncated text and miss the tags past the cut).
        text, entities = source.note_tweet.text, source.note_tweet.entities
    else:
        text, entities = source.text, source.entities
    created = tweet.created_at
    if created is None:
        event_time = received_at
    else:
        fast = _x_time(created)
        event_time = parse_v2_time(created) if fast is None else fast
    if event_time > received_at + FUTURE_TOLERANCE:
        event_time = received_at
    # Positional: this runs once per post, and keywords cost a little more.
    return Post(
        tweet.id,
        tweet.author_id,
        event_time,
        text,
        _tags(entities),
        is_retweet,
    )


def _v1_post(status: _Envelope, received_at: float) -> Post:
    source: _V1Status = status.retweeted_status or status
    if source.extended_tweet is not None:
        text, entities = source.extended_tweet.full_text, source.extended_tweet.entities
    else:
        text = source.full_text if source.full_text is not None else (source.text or "")
        entities = source.entities
    post_id = status.id_str if status.id_str is not None else str(status.id)
    author = None
    if status.user is not None:
        author = status.user.id_str or (str(status.user.id) if status.user.id else None)
    created = status.created_at
    event_time = parse_v1_time(created) if created else received_at
    if event_time > received_at + FUTURE_TOLERANCE:
        event_time = received_at
    return Post(
        id=post_id,
        author=author,
        event_time=event_time,
        text=text,
        hashtags=_tags(entities),
        is_retweet=status.retweeted_status is not None,
    )


def decode_x(line: bytes, received_at: float) -> Post | Skipped:
    """Decode one X API v2 stream message or v1.1 status.

    Raises:
        DecodeError: the line is not JSON, not an object of a known shape, or has a bad time.
    """
    try:
        message = _decoder.decode(line)
    except msgspec.ValidationError as exc:
        detail = str(exc)
        reason = "bad_time" if "created_at" in detail else "invalid_shape"
        raise DecodeError(reason, detail) from None
    except msgspec.DecodeError as exc:
        raise DecodeError("malformed_json", str(exc)) from None
    return _message_item(message, received_at)


def _message_item(message: _Envelope, received_at: float) -> Post | Skipped:
    if message.data is not None:
        return _v2_post(message, message.data, received_at)
    if message.id_str is not None or (message.id is not None and message.text is not None):
        return _v1_post(message, received_at)
    if message.errors:
        return Skipped("errors")
    for notice in ("delete", "limit", "scrub_geo", "status_withheld", "user_withheld", "warning"):
        if getattr(message, notice):
            return Skipped(notice)
    if message.disconnect:
        return Skipped("disconnect")
    raise DecodeError("unrecognized", "neither an X API v2 message nor a v1.1 status")


def _item_of(message: _Envelope | None, line: bytes, received_at: float) -> Post | Skipped:
    """`decode_x` for a line whose `message` the compiled `count_x_lines` decoded already (None:
    the decoder refused the line, and `decode_x` says why)."""
    if message is None:
        return decode_x(line, received_at)
    return _message_item(message, received_at)


def py_count_x_lines(
    counter: PostCounter, lines: Iterable[bytes], received_at: float
) -> LinesCounted:
    """Decode each line with `decode_x` and count its posts with `counter.add_many`.

    This pure-Python function defines the behaviour of `count_x_lines`, whose compiled twin
    (``_speedups.count_x_lines``) does both in one pass where the counter's state is compiled.
    """
    posts: list[Post] = []
    skipped: dict[str, int] = {}
    rejects: list[tuple[int, DecodeError]] = []
    for index, line in enumerate(lines):
        try:
            item = decode_x(line, received_at)
        except DecodeError as exc:
            rejects.append((index, exc))
            continue
        if isinstance(item, Post):
            posts.append(item)
        else:
            skipped[item.reason] = skipped.get(item.reason, 0) + 1
    counter.add_many(posts)
    return len(posts), skipped, rejects


def count_x_lines(counter: PostCounter, lines: Sequence[bytes], received_at: float) -> LinesCounted:
    """Decode X lines and count their posts: what `py_count_x_lines` does, compiled where the
    counter's state is (`PostCounter.compiled`), which saves building a `Post` per line. A
    subclass that overrides `add_many` gets its posts through it, as with `py_count_x_lines`."""
    if counter.compiled and counter.__class__.add_many is PostCounter.add_many:
        return _count_x_lines(counter, lines, received_at)
    return py_count_x_lines(counter, lines, received_at)


def py_x_undecodable(lines: Iterable[bytes], received_at: float) -> list[int]:
    """The indices of the lines `decode_x` refuses: the definition of the compiled
    ``_speedups.x_undecodable``, which decodes only the lines its scan cannot vouch for."""
    return refused_lines(decode_x, lines, received_at)


def undecodable_x_lines(lines: Sequence[bytes], received_at: float) -> list[int]:
    """The X `Checker`: which lines `decode_x` refuses, found without decoding the lines the
    compiled scanner reads (about three times faster where the module is built)."""
    return _x_undecodable(lines, received_at)


class _V2AuthorProbe(msgspec.Struct, gc=False):
    id: str | None = None
    author_id: str | None = None


class _V1UserProbe(msgspec.Struct, gc=False):
    id_str: str | None = None


class _AuthorProbe(msgspec.Struct, gc=False):
    data: _V2AuthorProbe | None = None
    user: _V1UserProbe | None = None
    id_str: str | None = None


_probe = msgspec.json.Decoder(_AuthorProbe)


def _no_author_key(line: bytes) -> bytes | None:
    """The pure-Python twin of ``_speedups.x_author_key``: always "let the probe read it"."""
    return None


def partition_key_x(line: bytes) -> bytes:
    """The key that keeps an author's posts together when lines are spread over workers.

    The author id when there is one (sessions are per author), else the post id (so copies of a
    post meet in one worker), else the line itself. Much cheaper than `decode_x`: only two or
    three fields are read, and where the compiled module is built a v2 message's author is
    read from the JSON text without decoding it (``_speedups.x_author_key``), faster again.
    """
    if line.__class__ is bytes:
        key = _author_key(line)
        if key is not None:
            return key
    return _probe_key(line)


def _probe_key(line: bytes) -> bytes:
    """`partition_key_x` by decoding the few fields it needs: the definition."""
    try:
        probe = _probe.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return line
    data = probe.data
    if data is not None:
        key = data.author_id or data.id
    elif probe.user is not None and probe.user.id_str:
        key = probe.user.id_str
    else:
        key = probe.id_str
    return key.encode() if key else line


def _py_partition(lines: Sequence[bytes], table: bytes, key: PartitionKey) -> bytes:
    """The pure-Python twin of ``_speedups.x_partition``: `key` for every line."""
    return KeyPartitioner(key)(lines, table)


def partition_x_lines(lines: Sequence[bytes], table: bytes) -> bytes:
    """The X `Partitioner`: each line's part by `partition_key_x`, whose author scan runs
    over the whole batch in one compiled call where the module is built."""
    return _partition(lines, table, partition_key_x)


# The compiled twins, where happyhashtags._speedups is built; each twin above defines them.
_x_time = compiled_or("parse_x_time", _no_fast_time)
_author_key = compiled_or("x_author_key", _no_author_key)
_count_x_lines = compiled_or("count_x_lines", py_count_x_lines)
_partition = compiled_or("x_partition", _py_partition)
_x_undecodable = compiled_or("x_undecodable", py_x_undecodable)
