"""Anti-spam sessions: an author repeating a hashtag within a session counts once."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from happyhashtags.aggregate import PostCounter
from happyhashtags.errors import DecodeError
from happyhashtags.formats.x import decode_x
from happyhashtags.model import Post
from happyhashtags.sessions import PySessionTracker, SessionTracker, _size
from reference import count_reference, crafted_stream

GAP = 1800.0
T0 = 1_714_557_600  # 2024-05-01T10:00:00Z
H = 3600


def counter_run(lines: list[bytes], received_at: float, *, session_gap: float) -> PostCounter:
    """The real decoder and counter over raw lines (bad lines dropped)."""
    counter = PostCounter(session_gap=session_gap)
    for raw in lines:
        try:
            item = decode_x(raw.strip(), received_at) if raw.strip() else None
        except DecodeError:
            continue
        if isinstance(item, Post):
            counter.add(item)
    return counter


def _counts(posts: list[Post], gap: float = GAP) -> dict[tuple[int, str], list[int]]:
    counter = PostCounter(session_gap=gap)
    for post in posts:
        counter.add(post)
    return counter.drain()


def _p(t: float, text: str, author: str | None = "spammer", id: str | None = None) -> Post:
    return Post(id, author, float(t), text)


def test_the_docstring_example() -> None:
    tracker = SessionTracker(gap=GAP)
    assert tracker.admit("alice", 0.0, ["cats"], happy=False) == [("cats", 1, 0)]
    assert tracker.admit("alice", 60.0, ["cats"], happy=True) == [("cats", 0, 1)]
    assert tracker.admit("alice", 120.0, ["cats"], happy=True) == []


def test_a_post_more_than_the_gap_after_the_latest_starts_a_new_session() -> None:
    tracker = SessionTracker(gap=GAP)
    assert tracker.admit("a", 0.0, ["x"], happy=False) == [("x", 1, 0)]
    assert tracker.admit("a", GAP, ["x"], happy=False) == []  # exactly the gap: same session
    assert tracker.admit("a", 2 * GAP, ["x"], happy=False) == []  # latest moved to GAP
    assert tracker.admit("a", 3 * GAP + 0.001, ["x"], happy=False) == [("x", 1, 0)]


def test_the_session_extends_from_its_latest_event_time_not_its_first() -> None:
    # Each post within the gap of the one before: one session spanning far more than the gap.
    posts = [_p(T0 + i * 1500, "#spam") for i in range(8)]
    assert sum(t for t, _ in _counts(posts).values()) == 1


def test_a_late_post_joins_the_session_and_does_not_move_its_latest_back() -> None:
    tracker = SessionTracker(gap=GAP)
    tracker.admit("a", 10_000.0, ["x"], happy=False)
    assert tracker.admit("a", 0.0, ["x"], happy=False) == []  # earlier, same session
    # The latest is still 10 000, so 10 000 + GAP is still within the session.
    assert tracker.admit("a", 10_000.0 + GAP, ["x"], happy=False) == []


def test_tweets_count_at_the_first_post_and_happy_at_the_first_happy_post() -> None:
    posts = [
        _p(T0 + H - 60, "#Tag"),  # first post: tweets, in the 10:00 bucket
        _p(T0 + H + 60, "#tag :)"),  # first happy post: happy only, in the 11:00 bucket
        _p(T0 + H + 120, "#TAG :)"),  # nothing more
        _p(T0 + H + 180, "#tag #other :)"),  # only the new pair counts
    ]
    assert _counts(posts) == {
        (T0, "tag"): [1, 0],
        (T0 + H, "tag"): [0, 1],
        (T0 + H, "other"): [1, 1],
    }


def test_authors_have_separate_sessions() -> None:
    posts = [_p(T0, "#a", "u1"), _p(T0 + 1, "#a", "u2"), _p(T0 + 2, "#a", "u1")]
    assert _counts(posts) == {(T0, "a"): [2, 0]}


def test_posts_without_an_author_bypass_sessions() -> None:
    posts = [_p(T0 + i, "#a :)", author=None) for i in range(5)]
    assert _counts(posts) == {(T0, "a"): [5, 5]}


def test_posts_without_hashtags_still_extend_the_session() -> None:
    with_bridge = [_p(T0, "#a"), _p(T0 + 1700, "no tags here"), _p(T0 + 3400, "#a")]
    without = [with_bridge[0], with_bridge[2]]
    assert _counts(with_bridge) == {(T0, "a"): [1, 0]}
    assert _counts(without) == {(T0, "a"): [2, 0]}


def test_posts_without_hashtags_start_a_session() -> None:
    tracker = SessionTracker(gap=GAP)
    assert tracker.admit("a", 0.0, [], happy=True) == []
    assert len(tracker) == 1


def test_gap_zero_turns_sessions_off() -> None:
    posts = [_p(T0 + i, "#a :)") for i in range(4)]
    assert _counts(posts, gap=0) == {(T0, "a"): [4, 4]}
    assert PostCounter(session_gap=0).sessions is None
    with pytest.raises(ValueError, match="positive"):
        SessionTracker(gap=0)


def test_expiry_bounds_the_state_and_keeps_sessions_within_the_allowed_lateness() -> None:
    tracker = SessionTracker(gap=100.0, allowed_lateness=50.0, expire_every=10**9)
    for i in range(1000):
        tracker.admit(f"author{i}", float(i), ["x"], happy=False)
    assert len(tracker) == 1000
    dropped = tracker.expire()
    # Kept: sessions a post no later than the allowed lateness could still extend.
    assert len(tracker) == 1000 - dropped
    assert len(tracker) == 151  # latest >= 999 - 50 - 100
    # A kept author in its session: not counted again.
    assert tracker.admit("author900", 950.0, ["x"], happy=False) == []


def test_expiry_runs_by_itself_every_so_many_posts() -> None:
    tracker = SessionTracker(gap=10.0, allowed_lateness=0.0, expire_every=100)
    for i in range(10_000):
        tracker.admit(f"a{i}", float(i), ["x"], happy=False)
    assert len(tracker) <= 120


def test_max_sessions_drops_the_least_recently_active() -> None:
    tracker = SessionTracker(gap=1e9, allowed_lateness=1e9, expire_every=10**9, max_sessions=10)
    for i in range(30):
        tracker.admit(f"a{i}", float(i), ["x"], happy=False)
    tracker.expire()
    assert len(tracker) <= 10
    assert tracker.admit("a29", 30.0, ["x"], happy=False) == []  # the most recent is kept


# -- properties --------------------------------------------------------------------------------

_events = st.lists(
    st.tuples(
        st.sampled_from(["u1", "u2", "u3"]),
        st.floats(min_value=0, max_value=4 * GAP, allow_nan=False),
        st.lists(st.sampled_from(["a", "b", "c"]), max_size=3, unique=True),
        st.booleans(),
    ),
    max_size=60,
)


@settings(max_examples=150)
@given(events=_events)
def test_a_session_never_counts_a_pair_twice(
    events: list[tuple[str, float, list[str], bool]],
) -> None:
    tracker = SessionTracker(gap=GAP)
    latest: dict[str, float] = {}
    session_no: Counter[str] = Counter()
    tweets: Counter[tuple[str, int, str]] = Counter()
    happies: Counter[tuple[str, int, str]] = Counter()
    for author, t, keys, happy in events:
        # Session boundaries, tracked independently from the rule.
        if author not in latest or t > latest[author] + GAP:
            session_no[author] += 1
            latest[author] = t
        else:
            latest[author] = max(latest[author], t)
        session = session_no[author]
        for key, add_tweet, add_happy in tracker.admit(author, t, keys, happy=happy):
            assert key in keys
            assert add_tweet or add_happy
            assert not add_happy or happy
            tweets[(author, session, key)] += add_tweet
            happies[(author, session, key)] += add_happy
        for key in keys:
            # The first post of a pair always counts it; its first happy post, its happy.
            assert tweets[(author, session, key)] == 1
            if happy:
                assert happies[(author, session, key)] == 1
    assert all(n <= 1 for n in tweets.values())
    assert all(n <= 1 for n in happies.values())


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10**6), gap=st.sampled_from([1.0, 600.0, GAP, 86400.0]))
def test_sessions_agree_with_the_reference_on_mixed_streams(seed: int, gap: float) -> None:
    lines = crafted_stream(seed, 400, authors=3, span=4 * 3600)
    read_at = T0 + 99.0
    reference = count_reference(lines, session_gap=gap, received_at=read_at)
    counter = counter_run(lines, read_at, session_gap=gap)
    got = {(b, tag): (t, h) for (b, tag), (t, h) in counter.drain().items()}
    assert {(int(k[0].timestamp()), k[1]): v for k, v in reference.counts.items()} == got


def test_sessions_reduce_a_spammers_counts_on_the_demo_stream() -> None:
    from happyhashtags.sources.demo import generate_messages

    lines = list(generate_messages(3000, seed=7))
    posts = [p for p in (decode_x(x, time.time()) for x in lines) if isinstance(p, Post)]
    plain, sessions = PostCounter(session_gap=0), PostCounter(session_gap=GAP)
    for post in posts:
        plain.add(post)
        sessions.add(post)
    spam = Counter(p.author for p in posts if p.author and p.author.startswith("9"))
    assert spam
    assert max(spam.values()) > 5
    total_plain = sum(t for t, _ in plain.drain().values())
    total_sessions = sum(t for t, _ in sessions.drain().values())
    assert total_sessions < total_plain - sum(spam.values()) // 2


def test_sessions_can_leave_more_happy_posts_than_posts_in_a_bucket() -> None:
    # By the rules: tweets count at a session's first post, happy at its first happy post, each
    # in its own post's bucket. Two authors whose first happy post comes an hour after their
    # first post, and a third author's plain post, leave (tweets 1, happy 2) in the second hour.
    posts = [
        _p(T0 + H - 60, "#x", "a"),
        _p(T0 + H + 60, "#x :)", "a"),
        _p(T0 + H - 60, "#x", "b"),
        _p(T0 + H + 60, "#x :)", "b"),
        _p(T0 + H + 600, "#x", "c"),
    ]
    assert _counts(posts) == {(T0, "x"): [2, 0], (T0 + H, "x"): [1, 2]}


@pytest.mark.parametrize("twin", [SessionTracker, PySessionTracker])
def test_max_session_keys_bounds_the_hashtags_all_sessions_remember(
    twin: type[SessionTracker],
) -> None:
    tracker = twin(gap=1e9, allowed_lateness=1e9, expire_every=10**9, max_session_keys=50)
    for i in range(200):
        tracker.admit(f"a{i % 40}", float(i), [f"k{i}", f"j{i}"], happy=i % 3 == 0)
        if isinstance(tracker, PySessionTracker):
            held = sum(_size(s.seen) + _size(s.happy) for s in tracker._sessions.values())
            assert held == tracker.key_count  # the running total stays exact
        assert tracker.key_count <= 50
    assert tracker.admit("a39", 200.0, ["k199"], happy=False) == []  # the most recent is kept


def test_a_new_session_releases_the_old_sessions_hashtags() -> None:
    tracker = SessionTracker(gap=10.0, allowed_lateness=1e9, expire_every=10**9)
    tracker.admit("a", 0.0, ["x", "y"], happy=True)
    assert tracker.key_count == 4
    tracker.admit("a", 100.0, ["z"], happy=False)
    assert tracker.key_count == 1


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b"]),
            st.lists(st.text(alphabet="ab\u00e9", min_size=1, max_size=3), max_size=4),
            st.booleans(),
        ),
        max_size=60,
    ),
    st.integers(min_value=2, max_value=64),
)
def test_session_keys_behave_as_sets_whatever_they_share(
    posts: list[tuple[str, list[str], bool]], large: int
) -> None:
    # Keys are kept in one string while small: "a" must not be found inside "ba" or "ab", and
    # moving to a set past the size limit (small here, to cross it often) must lose nothing.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("happyhashtags.sessions._LARGE", large)
        _check_against_sets(PySessionTracker(gap=1e9), posts)
    _check_against_sets(SessionTracker(gap=1e9), posts)  # the compiled twin, where built


def _check_against_sets(
    tracker: SessionTracker | PySessionTracker, posts: list[tuple[str, list[str], bool]]
) -> None:
    seen: dict[str, set[str]] = {"a": set(), "b": set()}
    happy_seen: dict[str, set[str]] = {"a": set(), "b": set()}
    for t, (author, keys, happy) in enumerate(posts):
        keys = list(dict.fromkeys(keys))
        expected = []
        for key in keys:
            new = key not in seen[author]
            new_happy = happy and key not in happy_seen[author]
            seen[author].add(key)
            if happy:
                happy_seen[author].add(key)
            if new or new_happy:
                expected.append((key, int(new), int(new_happy)))
        assert tracker.admit(author, float(t), keys, happy=happy) == expected
    held = sum(len(s) for s in seen.values()) + sum(len(s) for s in happy_seen.values())
    assert tracker.key_count == held
