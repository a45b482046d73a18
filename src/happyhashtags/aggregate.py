"""Counting: posts become per-bucket, per-hashtag counts of posts and happy posts."""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from hashlib import blake2b
from typing import TYPE_CHECKING

from happyhashtags._twins import compiled_or
from happyhashtags.happy import DEFAULT_MARKERS, HappyMatcher
from happyhashtags.model import Post
from happyhashtags.sessions import HAPPY_MASK, ONE_TWEET, Cells, SessionTracker
from happyhashtags.text import extract_hashtags, normalize_hashtag

__all__ = [
    "COMPILED",
    "CountKey",
    "CounterStats",
    "Counts",
    "PostCounter",
    "PyRecentIds",
    "RecentIds",
    "merge_counts",
    "restore_recent_ids",
]

CountKey = tuple[int, str]
"""(bucket start in seconds since the epoch, normalized hashtag)."""

Counts = dict[CountKey, list[int]]
"""Pending counts: key -> [tweets, happy_tweets]."""


def merge_counts(into: Counts, other: Counts) -> Counts:
    """Add `other` into `into` and return `into`."""
    for key, (tweets, happy) in other.items():
        cell = into.get(key)
        if cell is None:
            into[key] = [tweets, happy]
        else:
            cell[0] += tweets
            cell[1] += happy
    return into


def id_key(post_id: str) -> int:
    """A stable 64-bit key for a post id (see `PyRecentIds`)."""
    if post_id.isdecimal() and len(post_id) <= 19:
        return int(post_id)  # below 10**19 < 2**64
    return int.from_bytes(blake2b(post_id.encode(), digest_size=8).digest(), "big")


class PyRecentIds:
    """The last `capacity` post ids, to count a redelivered or duplicated post once.

    Keeps 64-bit keys, not the ids: a million X ids as strings would take ~100 MB. An id of 1
    to 19 digits (X's) is its own key; any other a stable 64-bit BLAKE2 hash (not `hash()`,
    which is salted per process: a counter restored in another process must still recognise
    its ids). Two different ids share a key with a chance of about 1 in 10^7 per million ids,
    which at worst drops one post from the counts.

    This pure-Python class defines the behaviour; `RecentIds` is its compiled twin
    (``_speedups.IdRing``, a quarter of the memory) where that is built, and this otherwise.
    Both pickle to the same form, so a snapshot taken by one loads into the other.
    """

    __slots__ = ("_order", "_seen", "capacity")

    def __init__(self, capacity: int = 1_000_000) -> None:
        self.capacity = capacity
        self._seen: set[int] = set()
        self._order: deque[int] = deque()

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, post_id: str) -> bool:
        """Remember `post_id`; False if it was already among the recent ids."""
        # id_key's common case (an X id) inline: this runs once per post.
        key = int(post_id) if len(post_id) <= 19 and post_id.isdecimal() else id_key(post_id)
        return self.add_key(key)

    def add_key(self, key: int) -> bool:
        """Remember a key as `id_key` makes it; False if it was already remembered."""
        if key in self._seen:
            return False
        if self.capacity <= 0:
            return True
        self._seen.add(key)
        self._order.append(key)
        if len(self._order) > self.capacity:
            self._seen.discard(self._order.popleft())
        return True

    def keys(self) -> array[int]:
        """The remembered keys, oldest first."""
        return array("Q", self._order)

    def __reduce__(self) -> tuple[Callable[[int, array[int]], RecentIds], tuple[int, array[int]]]:
        return restore_recent_ids, (self.capacity, self.keys())


if TYPE_CHECKING:
    RecentIds = PyRecentIds
else:
    RecentIds = compiled_or("IdRing", PyRecentIds)

COMPILED = RecentIds is not PyRecentIds
"""Whether the compiled counter state (``happyhashtags._speedups``) is in use."""


def restore_recent_ids(capacity: int, keys: array[int]) -> RecentIds:
    """Rebuild remembered ids from `keys` (oldest first): how both twins unpickle."""
    ids = RecentIds(capacity)
    for key in keys:
        ids.add_key(key)
    return ids


@dataclass(slots=True)
class CounterStats:
    """What a `PostCounter` has seen."""

    posts: int = 0
    duplicates: int = 0
    retweets_skipped: int = 0
    with_hashtags: int = 0
    happy: int = 0
    counted: int = 0  # posts that added to at least one count


class PostCounter:
    """Applies the counting rules to posts and accumulates counts until drained.

    The rules (see docs/what-counts.md): a post seen before (by id) is ignored; retweets count
    unless `count_retweets` is false; each distinct normalized hashtag adds one post, and one
    happy post if the text holds a happy marker, to its bucket; with sessions on
    (`session_gap` > 0) an author adds each hashtag at most once per session.

    This is the hot path of every engine: it is written for speed (locals, no per-tag calls)
    and kept picklable, so workers and Spark executors can run it.

    >>> counter = PostCounter(session_gap=0)
    >>> counter.add(Post(id="1", author="a", event_time=7200.5, text="sunny #Day :)"))
    >>> counter.drain()
    {(7200, 'day'): [1, 1]}
    """

    __slots__ = (
        "_buckets",
        "_ids",
        "_norm",
        "_raw_keys",
        "_sessions",
        "allowed_lateness",
        "bucket_seconds",
        "count_retweets",
        "dedupe_capacity",
        "happy",
        "max_session_keys",
        "max_sessions",
        "session_gap",
        "stats",
    )

    def __init__(
        self,
        *,
        bucket_seconds: int = 3600,
        happy: HappyMatcher | None = None,
        session_gap: float = 1800.0,
        count_retweets: bool = True,
        dedupe_capacity: int = 1_000_000,
        allowed_lateness: float = 3600.0,
        max_sessions: int = 500_000,
        max_session_keys: int = 2_000_000,
    ) -> None:
        if bucket_seconds <= 0 or bucket_seconds != int(bucket_seconds):
            raise ValueError("bucket_seconds must be a positive whole number")
        self.bucket_seconds = int(bucket_seconds)
        self.happy = happy if happy is not None else HappyMatcher(DEFAULT_MARKERS)
        self.session_gap = session_gap
        self.count_retweets = count_retweets
        self.dedupe_capacity = dedupe_capacity
        self.allowed_lateness = allowed_lateness
        self.max_sessions = max_sessions
        self.max_session_keys = max_session_keys
        self.stats = CounterStats()
        self._ids = RecentIds(dedupe_capacity)
        self._sessions = (
            SessionTracker(
                gap=session_gap,
                allowed_lateness=allowed_lateness,
                max_sessions=max_sessions,
                max_session_keys=max_session_keys,
            )
            if session_gap > 0
            else None
        )
        # bucket start -> {hashtag: packed (tweets, happy_tweets)} (see Cells): no tuple keys.
        self._buckets: dict[int, Cells] = {}
        # Hashtag as written -> counting key. Bounded: cleared when it grows past 2**16.
        self._norm: dict[str, str] = {}
        # The same for the compiled scanner, from the hashtag's UTF-8 (``_speedups.RawTagKeys``,
        # made on first use; it pickles empty).
        self._raw_keys: object = None

    def __getstate__(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __setstate__(self, state: dict[str, object]) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)

    @property
    def pending(self) -> int:
        """How many (bucket, hashtag) cells are waiting to be drained."""
        return sum(len(b) for b in self._buckets.values())

    @property
    def sessions(self) -> SessionTracker | None:
        """The session tracker (None when sessions are off)."""
        return self._sessions

    def _normalize(self, tag: str) -> str:
        norm = self._norm
        if len(norm) >= 65_536:
            norm.clear()
        key = normalize_hashtag(tag)
        if "\x00" in key:
            # Entities can carry any string; PostgreSQL text cannot hold NUL.
            key = key.replace("\x00", "\ufffd")
        norm[tag] = key
        return key

    def _keys(self, tags: Sequence[str]) -> list[str]:
        norm = self._norm
        keys: list[str] = []
        for tag in tags:
            key = norm.get(tag)
            if key is None:
                key = self._normalize(tag)
            if key not in keys:
                keys.append(key)
        return keys

    def add(self, post: Post) -> None:
        """Count one post."""
        self.add_many((post,))

    @property
    def compiled(self) -> bool:
        """Whether this counter's state is the compiled classes, so that the compiled counting
        loops (``_speedups.add_posts``, ``count_x_lines``) can run on it."""
        return (
            COMPILED
            and self._ids.__class__ is RecentIds
            and (self._sessions is None or self._sessions.__class__ is SessionTracker)
        )

    def add_many(self, posts: Iterable[Post]) -> None:
        """Count posts, in order: the engines' hot path.

        Compiled (``_speedups.add_posts``) where the state is; `_py_add_many`, its twin,
        defines the behaviour.
        """
        if self.compiled:
            _add_posts(self, posts)
        else:
            _py_add_many(self, posts)

    def replay(self, post: Post) -> None:
        """Rebuild state from a post counted before (after a restart): remember its id and feed
        its author's session, without counting anything."""
        if post.id is not None and not self._ids.add(post.id):
            return
        if (post.is_retweet and not self.count_retweets) or self._sessions is None:
            return
        if post.author is None:
            return
        tags = post.hashtags if post.hashtags is not None else extract_hashtags(post.text)
        keys = self._keys(tags) if tags else []
        happy = bool(keys) and self.happy.matches(post.text)
        self._sessions.admit_into(None, post.author, post.event_time, keys, happy)

    def restore(self, counts: Counts) -> None:
        """Put drained counts back (a write failed and will be retried)."""
        for (bucket, key), (tweets, happy) in counts.items():
            cells = self._buckets.setdefault(bucket, {})
            cells[key] = cells.get(key, 0) + tweets * ONE_TWEET + happy

    def drain(self) -> Counts:
        """Return the counts accumulated since the last drain, and start afresh."""
        buckets, self._buckets = self._buckets, {}
        return {
            (bucket, key): [cell // ONE_TWEET, cell & HAPPY_MASK]
            for bucket, cells in buckets.items()
            for key, cell in cells.items()
            if cell
        }


def _py_add_many(counter: PostCounter, posts: Iterable[Post]) -> None:
    """`PostCounter.add_many` in Python: the behaviour its compiled twin must match (its lookups
    are hoisted per batch; this runs once per post)."""
    remember = counter._ids.add
    count_retweets = counter.count_retweets
    norm = counter._norm
    matches = counter.happy.matches
    bucket_seconds = counter.bucket_seconds
    buckets = counter._buckets
    admit = counter._sessions.admit_into if counter._sessions is not None else None
    last_bucket: int | None = None
    cells: Cells = {}
    seen = duplicates = retweets = with_hashtags = happy_posts = counted = 0
    try:
        for post in posts:
            seen += 1
            post_id = post.id
            # RecentIds.add is the one definition of "seen before": replay() uses it too,
            # and a restarted consumer must recognise exactly what this remembered.
            if post_id is not None and not remember(post_id):
                duplicates += 1
                continue
            if post.is_retweet and not count_retweets:
                retweets += 1
                continue
            tags: Sequence[str] | None = post.hashtags
            if tags is None:
                tags = extract_hashtags(post.text)
            author = post.author
            if not tags:
                if admit is not None and author is not None:
                    # A post without hashtags still extends (or starts) its author's session.
                    admit(None, author, post.event_time, (), False)
                continue
            with_hashtags += 1
            if len(tags) == 1:
                key = norm.get(tags[0])
                keys: Sequence[str] = (key if key is not None else counter._normalize(tags[0]),)
            else:
                keys = counter._keys(tags)
            happy = matches(post.text)
            if happy:
                happy_posts += 1
            # Floor division, so times before the epoch fall in the bucket below, too.
            bucket = int(post.event_time // bucket_seconds) * bucket_seconds
            if bucket != last_bucket:
                found = buckets.get(bucket)
                if found is None:
                    found = buckets[bucket] = {}
                cells, last_bucket = found, bucket
            if admit is not None and author is not None:
                if admit(cells, author, post.event_time, keys, happy):
                    counted += 1
                continue
            add = ONE_TWEET + 1 if happy else ONE_TWEET
            for key in keys:
                cells[key] = cells.get(key, 0) + add
            counted += 1
    finally:
        stats = counter.stats
        stats.posts += seen
        stats.duplicates += duplicates
        stats.retweets_skipped += retweets
        stats.with_hashtags += with_hashtags
        stats.happy += happy_posts
        stats.counted += counted


_add_posts = compiled_or("add_posts", _py_add_many)
