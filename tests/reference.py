"""An independent reference count, written from the rules text alone (not from the package's code).

The point is a second implementation that the real pipeline is compared against, cell for cell.
It favours obviousness over speed: plain `json`, its own walk of the payloads, `unicodedata` for
normalization, the `regex` module's ``\\X`` for grapheme clusters, unbounded sets and dicts.
Only hashtag extraction from text is shared (`happyhashtags.extract_hashtags`, which is checked
separately against the twitter-text conformance cases).

The rules, as this module reads them:

* Each line is one message. A blank line is skipped. A line that is not JSON, or JSON that is not
  an object, or a post whose fields have the wrong types, is a dead letter. An object with a
  ``data`` object is an X API v2 stream message; an object with ``text``/``full_text``/
  ``extended_tweet`` and ``id_str`` is a v1.1 status; any other object (delete and limit notices,
  ``{"errors": [...]}``) is skipped.
* Text and hashtags: v2 uses the original from ``includes.tweets`` for a ``retweeted`` reference,
  else ``data``; then ``note_tweet`` (text and entities) when it has text. v1.1 uses
  ``retweeted_status`` when present, else the status; then ``extended_tweet`` (``full_text`` and
  its entities), else ``full_text``, else ``text``. Hashtags come from ``entities.hashtags`` when
  the entities object is present (``tag`` in v2, ``text`` in v1.1), else from the text.
* Key: NFKC then casefold; a tag counts once per post.
* Happy: any marker matches. A marker that is one emoji grapheme cluster matches a whole cluster
  of the text, both compared without skin-tone modifiers and variation selectors; other markers
  match as substrings.
* Identity: v2 ``data.id`` / v1.1 ``id_str``; a repeated id counts once (unbounded memory here).
  Author: v2 ``author_id`` / v1.1 ``user.id_str``. Event time: ``created_at``, else read time.
* Buckets: floor(event time / size) * size since the epoch, UTC.
* Sessions (gap > 0): per author, in arrival order; a post more than the gap after the latest event
  time of the author's session starts a new session; within a session a (author, hashtag) pair
  adds at most 1 to tweets (first post) and 1 to happy_tweets (first happy post). Authorless posts
  bypass sessions; posts without hashtags still start and extend sessions.
* Retweets count as the retweeter's posts, or are skipped entirely with ``retweets=False``.
"""

from __future__ import annotations

import json
import math
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import regex

from happyhashtags import extract_hashtags

__all__ = [
    "MARKER_WORDS",
    "TAG_SPELLINGS",
    "Dead",
    "Reference",
    "ReferencePost",
    "count_reference",
    "crafted_stream",
    "decode_reference",
    "is_happy_reference",
    "normalize_reference",
    "parse_created_at",
]

_MONTHS = {
    m: i
    for i, m in enumerate(
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], 1
    )
}
_SKIN_TONES = {chr(c) for c in range(0x1F3FB, 0x1F400)}
_VARIATION_SELECTORS = {"\ufe0e", "\ufe0f"}
_EMOJI_CHAR = regex.compile(r"[\p{Extended_Pictographic}\p{Regional_Indicator}\u20e3]")
_CLUSTER = regex.compile(r"\X")


class Dead(Exception):
    """The line is unusable (a dead letter); `reason` is this module's own category."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ReferencePost:
    """What the reference reads out of one post message."""

    id: str | None
    author: str | None
    event_time: float | None
    text: str
    hashtags: list[str]
    hashtags_from_entities: bool
    is_retweet: bool


@dataclass
class Reference:
    """The reference's result for a list of lines."""

    counts: dict[tuple[datetime, str], tuple[int, int]] = field(default_factory=dict)
    skipped: Counter[str] = field(default_factory=Counter)
    dead: Counter[str] = field(default_factory=Counter)
    blank: int = 0
    posts: int = 0
    duplicates: int = 0
    retweets_skipped: int = 0

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    @property
    def dead_total(self) -> int:
        return sum(self.dead.values())


# -- pieces ----------------------------------------------------------------------------------


def normalize_reference(tag: str) -> str:
    """The counting key of a hashtag: NFKC, then casefold."""
    return unicodedata.normalize("NFKC", tag).casefold()


def _strip_modifiers(cluster: str) -> str:
    return "".join(c for c in cluster if c not in _SKIN_TONES and c not in _VARIATION_SELECTORS)


def _is_emoji_marker(marker: str) -> bool:
    clusters = _CLUSTER.findall(marker)
    return len(clusters) == 1 and _EMOJI_CHAR.search(marker) is not None


def is_happy_reference(text: str, markers: Iterable[str]) -> bool:
    """Whether `text` holds any of `markers` (emoji by whole cluster, others as substrings)."""
    clusters: set[str] | None = None
    for marker in markers:
        if _is_emoji_marker(marker):
            if clusters is None:
                clusters = {_strip_modifiers(c) for c in _CLUSTER.findall(text)}
            if _strip_modifiers(marker) in clusters:
                return True
        elif marker and marker in text:
            return True
    return False


def parse_created_at(value: str) -> float:
    """Seconds since the epoch of a v2 ISO 8601 or v1.1 ``Wed Oct 10 20:19:24 +0000 2018`` time."""
    parts = value.split()
    if len(parts) == 6 and parts[1] in _MONTHS:
        _weekday, month, day, clock, offset, year = parts
        hour, minute, second = (int(x) for x in clock.split(":"))
        sign = -1 if offset[0] == "-" else 1
        shift = sign * (int(offset[1:3]) * 3600 + int(offset[3:5]) * 60)
        local = datetime(int(year), _MONTHS[month], int(day), hour, minute, second, tzinfo=UTC)
        return (local - timedelta(seconds=shift)).timestamp()
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise Dead(f"bad-{what}")
    return value


def _optional_string(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    return _string(value, key)


def _entity_tags(entities: Any, key: str) -> list[str]:
    if not isinstance(entities, dict):
        raise Dead("bad-entities")
    hashtags = entities.get("hashtags") or []
    if not isinstance(hashtags, list):
        raise Dead("bad-entities")
    tags = []
    for item in hashtags:
        if not isinstance(item, dict):
            raise Dead("bad-entities")
        tags.append(_string(item.get(key), "entities"))
    return tags


def _text_and_tags(text: Any, entities: Any, key: str) -> tuple[str, list[str], bool]:
    text = _string(text, "text")
    if entities is not None:
        return text, _entity_tags(entities, key), True
    return text, extract_hashtags(text), False


def _time(obj: dict[str, Any]) -> float | None:
    value = obj.get("created_at")
    if value is None:
        return None
    try:
        return parse_created_at(_string(value, "created_at"))
    except (ValueError, IndexError):
        raise Dead("bad-created_at") from None


def _decode_v2(message: dict[str, Any]) -> ReferencePost:
    data = message["data"]
    if not isinstance(data, dict):
        raise Dead("bad-data")
    chosen = data
    is_retweet = False
    references = data.get("referenced_tweets") or []
    if not isinstance(references, list):
        raise Dead("bad-referenced_tweets")
    includes = message.get("includes") or {}
    included = includes.get("tweets") or [] if isinstance(includes, dict) else []
    for ref in references:
        if isinstance(ref, dict) and ref.get("type") == "retweeted":
            is_retweet = True
            for original in included:
                if isinstance(original, dict) and original.get("id") == ref.get("id"):
                    chosen = original
                    break
            break
    note = chosen.get("note_tweet")
    if isinstance(note, dict) and note.get("text"):
        text, tags, from_entities = _text_and_tags(note["text"], note.get("entities"), "tag")
    else:
        text, tags, from_entities = _text_and_tags(
            chosen.get("text"), chosen.get("entities"), "tag"
        )
    return ReferencePost(
        id=_optional_string(data, "id"),
        author=_optional_string(data, "author_id"),
        event_time=_time(data),
        text=text,
        hashtags=tags,
        hashtags_from_entities=from_entities,
        is_retweet=is_retweet,
    )


def _decode_v1(status: dict[str, Any]) -> ReferencePost:
    retweeted = status.get("retweeted_status")
    chosen = retweeted if isinstance(retweeted, dict) else status
    extended = chosen.get("extended_tweet")
    if isinstance(extended, dict) and "full_text" in extended:
        text, tags, from_entities = _text_and_tags(
            extended["full_text"], extended.get("entities"), "text"
        )
    elif "full_text" in chosen:
        text, tags, from_entities = _text_and_tags(
            chosen["full_text"], chosen.get("entities"), "text"
        )
    else:
        text, tags, from_entities = _text_and_tags(
            chosen.get("text"), chosen.get("entities"), "text"
        )
    user = status.get("user")
    author = _optional_string(user, "id_str") if isinstance(user, dict) else None
    return ReferencePost(
        id=_optional_string(status, "id_str"),
        author=author,
        event_time=_time(status),
        text=text,
        hashtags=tags,
        hashtags_from_entities=from_entities,
        is_retweet=isinstance(retweeted, dict),
    )


def decode_reference(line: bytes) -> ReferencePost | str:
    """A post, or the kind of non-post message (a string) it is. Raises `Dead` for bad input."""
    try:
        message = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise Dead("not-json") from None
    if not isinstance(message, dict):
        raise Dead("not-an-object")
    if "data" in message:
        return _decode_v2(message)
    if "id_str" in message and any(k in message for k in ("text", "full_text", "extended_tweet")):
        return _decode_v1(message)
    for kind in ("delete", "limit", "errors", "scrub_geo", "status_withheld", "user_withheld"):
        if kind in message:
            return kind
    return "other"


# -- counting --------------------------------------------------------------------------------


@dataclass
class _Session:
    latest: float
    counted: set[str] = field(default_factory=set)
    happy: set[str] = field(default_factory=set)


def count_reference(
    lines: Iterable[bytes],
    *,
    bucket_seconds: int = 3600,
    markers: Iterable[str] = (":)",),
    session_gap: float = 0.0,
    retweets: bool = True,
    received_at: float | Callable[[int], float] | None = None,
) -> Reference:
    """Count `lines` by the rules. `received_at` is the read time (or a function of the line's
    0-based index): the event time of posts without ``created_at``, or with one more than five
    minutes after it. None: the lines were read after every post's time (as when a test
    generates them and reads them now), and every post has one."""
    markers = tuple(markers)
    result = Reference()
    cells: dict[tuple[int, str], list[int]] = {}
    seen_ids: set[str] = set()
    sessions: dict[str, _Session] = {}
    for index, raw in enumerate(lines):
        if not raw.strip():
            result.blank += 1
            continue
        try:
            item = decode_reference(raw.strip())
        except Dead as exc:
            result.dead[exc.reason] += 1
            continue
        if isinstance(item, str):
            result.skipped[item] += 1
            continue
        # An id counts as seen even when its post is then skipped as a retweet.
        if item.id is not None:
            if item.id in seen_ids:
                result.duplicates += 1
                continue
            seen_ids.add(item.id)
        if item.is_retweet and not retweets:
            result.retweets_skipped += 1
            continue
        result.posts += 1
        event = item.event_time
        if received_at is not None:
            read = received_at(index) if callable(received_at) else received_at
            if event is None or event > read + 300.0:
                event = read
        elif event is None:
            raise ValueError("a post without created_at needs the read time (received_at)")
        bucket = math.floor(event) // bucket_seconds * bucket_seconds
        happy = is_happy_reference(item.text, markers)
        tags = {normalize_reference(t) for t in item.hashtags} - {""}
        session: _Session | None = None
        if session_gap > 0 and item.author is not None:
            session = sessions.get(item.author)
            if session is None or event > session.latest + session_gap:
                session = sessions[item.author] = _Session(latest=event)
            else:
                session.latest = max(session.latest, event)
        for tag in tags:
            add_tweet = add_happy = True
            if session is not None:
                add_tweet = tag not in session.counted
                session.counted.add(tag)
                add_happy = happy and tag not in session.happy
                if happy:
                    session.happy.add(tag)
            else:
                add_happy = happy
            if add_tweet or add_happy:
                cell = cells.setdefault((bucket, tag), [0, 0])
                cell[0] += int(add_tweet)
                cell[1] += int(add_happy)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    result.counts = {
        (epoch + timedelta(seconds=b), tag): (t, h) for (b, tag), (t, h) in cells.items()
    }
    return result


# -- crafted input ---------------------------------------------------------------------------
# Deterministic mixed streams for comparing the pipeline with the reference: both X formats,
# retweets with and without their originals, long posts, repeated ids, Unicode spellings of one
# tag, happy markers of every kind, posts with and without authors and times, notices, and bad
# lines. Not part of the reference's logic; here so that every test file builds streams alike.

TAG_SPELLINGS = [
    "Café", "CAFÉ", "cafe\u0301", "café",  # one key: café
    "straße", "STRASSE", "Strasse",  # one key: strasse
    "ＴＡＧ", "tag", "Tag",  # one key: tag (fullwidth letters fold under NFKC)
    "東京", "İstanbul", "Python", "python", "Sunshine", "ñandú", "Ελλάδα", "x1",
]  # fmt: skip
MARKER_WORDS = [
    ":)", "\U0001f44d\U0001f3fd", "\U0001f60a", "\u263a\ufe0f", "\u2764\ufe0f\u200d\U0001f525",
    ":(", ":-)", "\u2764\ufe0f", "yay:)yay",
]  # fmt: skip
_WORDS = [
    "the",
    "sun",
    "is",
    "out",
    "today",
    "we",
    "go",
    "home",
    "again",
    "late",
    "night",
    "coffee",
]
_BAD_LINES = [
    b"{not json at all",
    b'{"data": {"id": "1", "text": "cut off',
    b"\xff\xfe\x00 binary junk",
    b"[1, 2, 3]",
    b"12345",
    b'{"data": {"id": "77", "text": 5}}',
    b'{"data": {"id": "78", "text": "x #y", "created_at": "yesterday"}}',
    b'{"id_str": "79", "text": "x #y", "created_at": "Someday soon"}',
]


def _iso(t: float) -> str:
    moment = datetime.fromtimestamp(t, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _v1_time(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%a %b %d %H:%M:%S +0000 %Y")


def crafted_stream(
    seed: int,
    count: int,
    *,
    start: float = 1_714_557_600.0,  # 2024-05-01T10:00:00Z
    span: float = 3 * 3600.0,
    authors: int = 4,
    ids: int | None = None,
    bad: bool = True,
    timeless: bool = True,
) -> list[bytes]:
    """`count` lines of a mixed X stream, the same for the same arguments.

    `ids` bounds the pool of post ids (repeats are duplicates); `bad` adds blank, malformed and
    notice lines; `timeless` adds posts without ``created_at`` (counted at read time).
    """
    import random

    rng = random.Random(seed)
    id_pool = ids or count * 4
    lines: list[bytes] = []

    def text_and_tags() -> tuple[str, list[str]]:
        words = [rng.choice(_WORDS) for _ in range(rng.randint(0, 4))]
        tags = [rng.choice(TAG_SPELLINGS) for _ in range(rng.choice((0, 1, 1, 2, 3)))]
        parts = words + ["#" + t for t in tags]
        if rng.random() < 0.5:
            parts.insert(rng.randint(0, len(parts)), rng.choice(MARKER_WORDS))
        rng.shuffle(parts)
        return " ".join(parts), tags

    def entities(tags: list[str], key: str) -> dict[str, Any]:
        # Sometimes leave a tag out, to prove that entities win over extraction.
        kept = tags[:-1] if tags and rng.random() < 0.2 else tags
        return {"hashtags": [{key: t, "start": 0, "end": 1} for t in kept]}

    while len(lines) < count:
        roll = rng.random()
        if bad and roll < 0.04:
            lines.append(rng.choice([b"", b"   ", b"\t"]))
            continue
        if bad and roll < 0.08:
            lines.append(rng.choice(_BAD_LINES))
            continue
        if bad and roll < 0.11:
            notice = rng.choice(
                [
                    {"delete": {"status": {"id": 1, "id_str": "1", "user_id": 2}}},
                    {"limit": {"track": rng.randint(1, 99)}},
                    {"errors": [{"title": "operational-disconnect"}]},
                ]
            )
            lines.append(json.dumps(notice).encode())
            continue
        post_id = str(10**18 + rng.randrange(id_pool))
        author = str(500 + rng.randrange(authors)) if rng.random() < 0.9 else None
        t = start + rng.random() * span
        text, tags = text_and_tags()
        if rng.random() < 0.6:
            data: dict[str, Any] = {
                "id": post_id,
                "text": text,
                "edit_history_tweet_ids": [post_id],
            }
            if author is not None:
                data["author_id"] = author
            if not (timeless and rng.random() < 0.05):
                data["created_at"] = _iso(t)
            if rng.random() < 0.5:
                data["entities"] = entities(tags, "tag")
            message: dict[str, Any] = {"data": data}
            if rng.random() < 0.2:
                original_text, original_tags = text_and_tags()
                original: dict[str, Any] = {"id": "o" + post_id, "text": original_text}
                if rng.random() < 0.5:
                    original["entities"] = entities(original_tags, "tag")
                if rng.random() < 0.3:
                    note_text, note_tags = text_and_tags()
                    original["note_tweet"] = {"text": note_text + " long"}
                    if rng.random() < 0.5:
                        original["note_tweet"]["entities"] = entities(note_tags, "tag")
                data["text"] = ("RT @someone: " + text)[:40]
                data.pop("entities", None)
                data["referenced_tweets"] = [{"type": "retweeted", "id": original["id"]}]
                if rng.random() < 0.9:
                    message["includes"] = {"tweets": [original], "users": [{"id": "1"}]}
            elif rng.random() < 0.1:
                data["note_tweet"] = {"text": text + " and more #Note"}
            if rng.random() < 0.2:
                message["matching_rules"] = [{"id": "1", "tag": "crafted"}]
            lines.append(json.dumps(message, ensure_ascii=rng.random() < 0.5).encode())
        else:
            status: dict[str, Any] = {"id": int(post_id), "id_str": post_id, "text": text}
            status["created_at"] = _v1_time(t)
            status["user"] = {"id": 1, "id_str": author} if author is not None else None
            if rng.random() < 0.6:
                status["entities"] = entities(tags, "text")
            if rng.random() < 0.2:
                status["extended_tweet"] = {"full_text": text + " #Extended"}
                if rng.random() < 0.5:
                    status["extended_tweet"]["entities"] = entities([*tags, "Extended"], "text")
            elif rng.random() < 0.1:
                status["full_text"] = text + " #Full"
            if rng.random() < 0.15:
                original_text, original_tags = text_and_tags()
                status["retweeted_status"] = {
                    "id_str": "9" + post_id,
                    "text": original_text,
                    "created_at": _v1_time(t - 3600),
                    "user": {"id_str": "999"},
                    "entities": entities(original_tags, "text"),
                }
            lines.append(json.dumps(status).encode())
    return lines
