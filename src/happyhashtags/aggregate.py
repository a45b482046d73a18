"""Counting: posts become per-bucket, per-hashtag counts of posts and happy posts."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from happyhashtags.happy import DEFAULT_MARKERS, HappyMatcher
from happyhashtags.model import Post
from happyhashtags.sessions import SessionTracker
from happyhashtags.text import extract_hashtags, normalize_hashtag
from happyhashtags.timeutil import bucket_start

__all__ = ["CountKey", "Counts", "PostCounter", "RecentIds", "merge_counts"]

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


class RecentIds:
    """The last `capacity` post ids, to count a redelivered or duplicated post once."""

    __slots__ = ("_order", "_seen", "capacity")

    def __init__(self, capacity: int = 1_000_000) -> None:
        self.capacity = capacity
        self._seen: set[str] = set()
        self._order: deque[str] = deque()

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, post_id: str) -> bool:
        """Remember `post_id`; False if it was already among the recent ids."""
        if post_id in self._seen:
            return False
        self._seen.add(post_id)
        self._order.append(post_id)
        if len(self._order) > self.capacity:
            self._seen.discard(self._order.popleft())
        return True


@dataclass(slots=True)
class CounterStats:
    """What a `PostCounter` has seen."""

    posts: int = 0
    duplicates: int = 0
    retweets_skipped: int = 0
    with_hashtags: int = 0
    happy: int = 0
    counted: int = 0  # posts that added to at least one count

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]


@dataclass(slots=True)
class PostCounter:
    """Applies the counting rules to posts and accumulates counts until drained.

    >>> counter = PostCounter(session_gap=0)
    >>> counter.add(Post(id="1", author="a", event_time=7200.5, text="sunny #Day :)"))
    >>> counter.drain()
    {(7200, 'day'): [1, 1]}
    """

    bucket_seconds: int = 3600
    happy: HappyMatcher = field(default_factory=lambda: HappyMatcher(DEFAULT_MARKERS))
    session_gap: float = 1800.0
    count_retweets: bool = True
    dedupe_capacity: int = 1_000_000
    allowed_lateness: float = 3600.0
    stats: CounterStats = field(default_factory=CounterStats)
    _counts: Counts = field(default_factory=dict)
    _ids: RecentIds = field(init=False)
    _sessions: SessionTracker | None = field(init=False)

    def __post_init__(self) -> None:
        if self.bucket_seconds <= 0:
            raise ValueError("bucket_seconds must be positive")
        self._ids = RecentIds(self.dedupe_capacity)
        self._sessions = (
            SessionTracker(gap=self.session_gap, allowed_lateness=self.allowed_lateness)
            if self.session_gap > 0
            else None
        )

    @property
    def pending(self) -> int:
        """How many (bucket, hashtag) cells are waiting to be drained."""
        return len(self._counts)

    def add(self, post: Post) -> None:
        """Count one post."""
        stats = self.stats
        stats.posts += 1
        if post.id is not None and not self._ids.add(post.id):
            stats.duplicates += 1
            return
        if post.is_retweet and not self.count_retweets:
            stats.retweets_skipped += 1
            return
        tags = post.hashtags if post.hashtags is not None else extract_hashtags(post.text)
        sessions = self._sessions
        if not tags:
            if sessions is not None and post.author is not None:
                # A post without hashtags still extends (or starts) its author's session.
                sessions.admit(post.author, post.event_time, [], happy=False)
            return
        stats.with_hashtags += 1
        keys = list(dict.fromkeys(normalize_hashtag(t) for t in tags))
        happy = self.happy.matches(post.text)
        stats.happy += happy
        bucket = bucket_start(post.event_time, self.bucket_seconds)
        counts = self._counts
        if sessions is None or post.author is None:
            for key in keys:
                cell = counts.get((bucket, key))
                if cell is None:
                    counts[(bucket, key)] = [1, int(happy)]
                else:
                    cell[0] += 1
                    cell[1] += happy
            stats.counted += 1
            return
        admitted = sessions.admit(post.author, post.event_time, keys, happy=happy)
        for key, tweets, happy_add in admitted:
            cell = counts.get((bucket, key))
            if cell is None:
                counts[(bucket, key)] = [tweets, happy_add]
            else:
                cell[0] += tweets
                cell[1] += happy_add
        stats.counted += bool(admitted)

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
        keys = list(dict.fromkeys(normalize_hashtag(t) for t in tags)) if tags else []
        happy = bool(keys) and self.happy.matches(post.text)
        self._sessions.admit(post.author, post.event_time, keys, happy=happy)

    def restore(self, counts: Counts) -> None:
        """Put drained counts back (a write failed and will be retried)."""
        merge_counts(self._counts, counts)

    def drain(self) -> Counts:
        """Return the counts accumulated since the last drain, and start afresh."""
        counts, self._counts = self._counts, {}
        return counts
