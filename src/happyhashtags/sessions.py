"""Anti-spam sessions: an author repeating a hashtag within a session counts once.

A session of an author is a run of that author's posts, in arrival order, in which no post's
event time is more than `gap` seconds after the latest event time seen so far in the session; a
post beyond that starts a new session. Within a session an (author, hashtag) pair adds at most
one post to `tweets` (at its first post) and at most one to `happy_tweets` (at its first happy
post).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import msgspec

from happyhashtags._twins import compiled_or

__all__ = ["HAPPY_MASK", "ONE_TWEET", "Cells", "PySessionTracker", "SessionTracker"]

log = logging.getLogger(__name__)


ONE_TWEET = 1 << 32
"""Cells pack a pair of counts in one int: ``tweets * ONE_TWEET + happy_tweets``."""

HAPPY_MASK = ONE_TWEET - 1

Cells = dict[str, int]
"""Counts of one bucket being accumulated: hashtag -> packed (tweets, happy_tweets).

One int per cell, not a two-item list: an addition is one dict update, an int takes less than
half the memory, and ints are not tracked by the cycle collector."""

_Keys = str | set[str]
"""The hashtags a session has counted.

Most sessions hold one to three hashtags, and memory per session is what bounds how many authors
can be tracked at once. So a session's hashtags are one string, each key followed by a NUL:
``"\\0cats\\0dogs\\0"``; ``"\\0cats\\0" in keys`` tests one. That takes about a byte per
character: a tuple of separate strings took about 40 bytes per hashtag more where hashtags are
not shared (a stream with millions of distinct ones). Keys never hold NUL (`PostCounter` replaces
it). Past `_LARGE` characters (a spammer's session) the keys move to a set, so adding stays O(1).
"""

_NONE = "\0"
_LARGE = 512


def _with(keys: _Keys, key: str) -> _Keys:
    if keys.__class__ is str:
        if len(keys) < _LARGE:
            return f"{keys}{key}\0"
        keys = set(keys[1:-1].split("\0"))
    keys.add(key)  # type: ignore[union-attr]
    return keys


def _size(keys: _Keys) -> int:
    return keys.count("\0") - 1 if isinstance(keys, str) else len(keys)


class _Session(msgspec.Struct, gc=False):
    # A msgspec struct: built in C, and not tracked by the cycle collector (it holds only a float
    # and strings or sets of strings, so it can never be part of a cycle). Hundreds of thousands
    # of these are alive at once; tracked objects would make every collection walk them all.
    latest: float
    seen: _Keys = _NONE
    happy: _Keys = _NONE


class PySessionTracker:
    """Per-author sessions with bounded state.

    State is dropped for sessions that nothing can extend any more: those whose latest event time
    plus the gap lies more than `allowed_lateness` seconds before the latest event time seen in the
    whole stream (the watermark). A post arriving later than that is treated as a new session.

    This pure-Python class defines the behaviour; `SessionTracker` is its compiled twin
    (``_speedups.SessionTable``: the same answers in about a third of the memory, faster) where
    that is built, and this otherwise.

    >>> tracker = PySessionTracker(gap=1800)
    >>> tracker.admit("alice", 0.0, ["cats"], happy=False)
    [('cats', 1, 0)]
    >>> tracker.admit("alice", 60.0, ["cats"], happy=True)
    [('cats', 0, 1)]
    >>> tracker.admit("alice", 120.0, ["cats"], happy=True)
    []
    """

    __slots__ = (
        "_admitted",
        "_key_count",
        "_next_expiry",
        "_sessions",
        "allowed_lateness",
        "expire_every",
        "gap",
        "max_session_keys",
        "max_sessions",
        "watermark",
    )

    def __init__(
        self,
        *,
        gap: float,
        allowed_lateness: float = 3600.0,
        expire_every: int = 65536,
        max_sessions: int = 500_000,
        max_session_keys: int = 2_000_000,
    ) -> None:
        if gap <= 0:
            raise ValueError("a session gap must be positive (0 means: use no SessionTracker)")
        self.gap = gap
        self.allowed_lateness = allowed_lateness
        self.expire_every = expire_every
        self.max_sessions = max_sessions
        self.max_session_keys = max_session_keys
        self._key_count = 0  # hashtags held by all sessions (seen + happy): what memory scales with
        self.watermark = float("-inf")
        self._sessions: dict[str, _Session] = {}
        self._admitted = 0
        self._next_expiry = expire_every

    def __len__(self) -> int:
        return len(self._sessions)

    def admit(
        self, author: str, event_time: float, keys: Sequence[str], *, happy: bool
    ) -> list[tuple[str, int, int]]:
        """Record a post; return ``(key, add_to_tweets, add_to_happy)`` for the keys that count.

        Keys are normalized hashtags, which never hold NUL (see `_Keys`; `PostCounter` replaces
        it).
        """
        cells: Cells = {}
        self.admit_into(cells, author, event_time, keys, happy)
        return [(key, cell // ONE_TWEET, cell & HAPPY_MASK) for key, cell in cells.items()]

    def admit_into(
        self,
        cells: Cells | None,
        author: str,
        event_time: float,
        keys: Sequence[str],
        happy: bool,
    ) -> bool:
        """Record a post and add what counts of it to `cells`.

        The hot path behind `admit`: no list of results is built. `cells` None records the post
        without counting it (a replay). Returns whether any key counted.
        """
        if author.__class__ is not str:  # as the compiled twin, which reads the str's bytes
            raise TypeError(f"an author must be a str, not {type(author).__name__}")
        # Limits are enforced once this post is recorded (`due`), never halfway through it.
        session = self._sessions.get(author)
        due = False
        if session is None or event_time > session.latest + self.gap:
            if session is not None:
                self._key_count -= _size(session.seen) + _size(session.happy)
            session = self._sessions[author] = _Session(event_time)
            due = len(self._sessions) > self.max_sessions
        elif event_time > session.latest:
            session.latest = event_time
        if event_time > self.watermark:
            self.watermark = event_time
        self._admitted += 1
        if self._admitted >= self._next_expiry:
            due = True
        added = 0
        if keys:
            seen, happy_seen = session.seen, session.happy
            for key in keys:
                probe = f"\0{key}\0"
                if (probe not in seen) if seen.__class__ is str else (key not in seen):
                    new = 1
                    seen = _with(seen, key)
                else:
                    new = 0
                if happy and (
                    (probe not in happy_seen)
                    if happy_seen.__class__ is str
                    else (key not in happy_seen)
                ):
                    new_happy = 1
                    happy_seen = _with(happy_seen, key)
                elif new:
                    new_happy = 0
                else:
                    continue
                added += new + new_happy
                if cells is not None:
                    cells[key] = cells.get(key, 0) + new * ONE_TWEET + new_happy
            if added:
                session.seen, session.happy = seen, happy_seen
                self._key_count += added
                if self._key_count > self.max_session_keys:
                    due = True
        if due:
            self.expire()
        return added > 0

    @property
    def key_count(self) -> int:
        """Hashtags held by all sessions (each session's seen ones plus its happy ones)."""
        return self._key_count

    def expire(self) -> int:
        """Drop sessions that no post within the allowed lateness can extend; return how many.

        Past `max_sessions` live sessions, or `max_session_keys` hashtags held by all sessions
        (an overload: more activity than memory allows), the least recently extended sessions
        are dropped too, down to 80 % of the limits, so memory stays bounded; a dropped author's
        next post then starts a new session. Logged, because counts may then differ from an
        unbounded count.
        """
        self._admitted = 0
        sessions = self._sessions
        horizon = self.watermark - self.allowed_lateness - self.gap
        stale = [a for a, s in sessions.items() if s.latest < horizon]
        for author in stale:
            self._drop(author)
        # Scan again after as many admits as there are live sessions: O(1) per post on average.
        self._next_expiry = max(self.expire_every, len(sessions))
        if len(sessions) <= self.max_sessions and self._key_count <= self.max_session_keys:
            return len(stale)
        session_goal = self.max_sessions - self.max_sessions // 5
        key_goal = self.max_session_keys - self.max_session_keys // 5
        dropped = 0
        for author, _ in sorted(sessions.items(), key=lambda item: item[1].latest):
            if len(sessions) <= session_goal and self._key_count <= key_goal:
                break
            self._drop(author)
            dropped += 1
        log.warning(
            "anti-spam sessions over their limits (%d sessions, %d hashtags): dropped the %d "
            "least recently active (raise max_sessions or max_session_keys to keep them)",
            self.max_sessions,
            self.max_session_keys,
            dropped,
        )
        return len(stale) + dropped

    def _drop(self, author: str) -> None:
        session = self._sessions.pop(author)
        self._key_count -= _size(session.seen) + _size(session.happy)


if TYPE_CHECKING:
    SessionTracker = PySessionTracker
else:
    SessionTracker = compiled_or("SessionTable", PySessionTracker)
