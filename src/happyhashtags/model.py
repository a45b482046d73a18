"""Frozen value types shared by every source, engine and sink."""

from __future__ import annotations

import msgspec

__all__ = ["Checkpoint", "DeadLetter", "Post", "Skipped"]


class Post(msgspec.Struct, frozen=True, gc=False):
    """One post, reduced to what counting needs.

    Times are seconds since the Unix epoch, UTC (a float is cheaper than a datetime on the
    hot path; `happyhashtags.timeutil` converts at the edges).

    Attributes:
        id: the post's id in its network (X: the tweet id; Bluesky: the AT URI), or None.
        author: a stable author id (X: user id; Bluesky: DID), or None when the payload has none.
        event_time: when the post was created, or when it was read if the payload has no time.
        text: the text whose happy markers count (for a retweet, the original's full text).
        hashtags: the hashtags as written, from the payload's entities; None means "extract them
            from `text`".
        is_retweet: whether the post is a retweet/repost of another post.
    """

    id: str | None
    author: str | None
    event_time: float
    text: str
    hashtags: tuple[str, ...] | None = None
    is_retweet: bool = False


class Skipped(msgspec.Struct, frozen=True, gc=False):
    """A well-formed message that is not a post (a delete notice, a rate-limit notice, ...)."""

    reason: str


class DeadLetter(msgspec.Struct, frozen=True, gc=False):
    """Input that could not be used, kept for inspection in the `dead_letters` table."""

    received_at: float
    source: str
    reason: str
    detail: str
    raw: bytes


class Checkpoint(msgspec.Struct, frozen=True):
    """How far a resumable source's input has been counted, stored with the counts it covers.

    Attributes:
        position: a source-defined, increasing position (a JetStream sequence, a Jetstream
            ``time_us`` cursor, ...): everything up to and including it is counted.
        state: source-defined extra state to restore with it (JSON text), or None.
    """

    position: int
    state: str | None = None
