"""Counter snapshots: a restart that loads the last snapshot and replays the messages after it
counts exactly like an uninterrupted run, whatever the cut points; altered snapshots and changed
settings are refused."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from happyhashtags.aggregate import Counts, PostCounter, merge_counts
from happyhashtags.happy import HappyMatcher
from happyhashtags.model import Post
from happyhashtags.queue.state import (
    SnapshotError,
    dump_counter,
    load_counter_into,
    snapshot_ref,
)

TAGS = ["a", "b", "c", "d", "e"]


def _counter(gap: float, ids: int) -> PostCounter:
    counter = PostCounter(
        bucket_seconds=600, session_gap=gap, allowed_lateness=50.0, dedupe_capacity=ids
    )
    if counter.sessions is not None:
        counter.sessions.expire_every = 5  # expire state often: the timing must survive too
    return counter


def _uninterrupted(posts: Sequence[Post], gap: float, ids: int) -> Counts:
    counter = _counter(gap, ids)
    for post in posts:
        counter.add(post)
    return counter.drain()


def _with_crashes(
    posts: Sequence[Post],
    gap: float,
    ids: int,
    sizes: list[int],
    snapshots: set[int],
    crashes: set[int],
) -> Counts:
    """Count in batches, committing after each; snapshot after the batches in `snapshots`; crash
    after those in `crashes` (losing whatever follows the commit) and restart from the last
    snapshot, replaying up to the commit."""
    total: Counts = {}
    counter = _counter(gap, ids)
    snapshot: tuple[int, bytes] | None = None
    position = 0
    sizes_cycle = iter(sizes * (len(posts) + 1))
    index = 0
    while position < len(posts):
        size = next(sizes_cycle)
        for post in posts[position : position + size]:
            counter.add(post)
        position = min(len(posts), position + size)
        merge_counts(total, counter.drain())  # the commit
        if index in snapshots:
            snapshot = (position, dump_counter(counter))
        if index in crashes:
            counter = _counter(gap, ids)
            start = 0
            if snapshot is not None:
                at, blob = snapshot
                load_counter_into(counter, blob, snapshot_ref(at, "s", blob, counter))
                start = at
            for post in posts[start:position]:
                counter.replay(post)
            assert counter.drain() == {}
        index += 1
    return total


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[Post], float, int]:
    gap = draw(st.sampled_from([0.0, 30.0, 100.0]))
    ids = draw(st.sampled_from([0, 3, 1000]))
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    posts: list[Post] = []
    clock = 0.0
    for i in range(draw(st.integers(1, 100))):
        if posts and rng.random() < 0.1:
            posts.append(rng.choice(posts))  # a repeated post
            continue
        clock += rng.choice([1.0, 5.0, 20.0, 90.0])
        happy = rng.random() < 0.4
        posts.append(
            Post(
                id=str(i) if rng.random() < 0.95 else None,
                author=rng.choice(["u1", "u2", "u3", None]),
                event_time=clock - rng.uniform(0, 80),  # some later than the allowed lateness
                text="x :)" if happy else "x",
                hashtags=tuple(rng.sample(TAGS, rng.randint(0, 2))),
                is_retweet=rng.random() < 0.1,
            )
        )
    return posts, gap, ids


@settings(max_examples=200, deadline=None)
@given(
    streams(),
    st.lists(st.integers(1, 9), min_size=1, max_size=4),
    st.sets(st.integers(0, 30), max_size=6),
    st.sets(st.integers(0, 30), max_size=6),
)
def test_snapshot_and_replay_count_like_an_uninterrupted_run(
    stream: tuple[list[Post], float, int], sizes: list[int], snapshots: set[int], crashes: set[int]
) -> None:
    posts, gap, ids = stream
    assert _with_crashes(posts, gap, ids, sizes, snapshots, crashes) == _uninterrupted(
        posts, gap, ids
    )


def test_a_session_longer_than_any_window_survives_a_restart() -> None:
    # One author posts every 10 minutes for 10 hours: one 30-minute-gap session. Replaying only
    # "gap + lateness" before the restart would forget the #early of its first post.
    posts = [
        Post(id=str(i), author="bot", event_time=600.0 * i, text="x", hashtags=("filler",))
        for i in range(60)
    ]
    posts[0] = Post(id="0", author="bot", event_time=0.0, text="x", hashtags=("early",))
    posts.append(Post(id="60", author="bot", event_time=36000.0, text="x", hashtags=("early",)))
    expected = _uninterrupted(posts, 1800.0, 0)
    assert _with_crashes(posts, 1800.0, 0, [10], {1}, {4}) == expected
    assert sum(t for (_b, tag), (t, _h) in expected.items() if tag == "early") == 1


def _snapshot_of_one_post() -> tuple[PostCounter, bytes]:
    counter = _counter(30.0, 10)
    counter.add(Post(id="1", author="a", event_time=1.0, text="x", hashtags=("t",)))
    counter.drain()
    return counter, dump_counter(counter)


def test_an_altered_snapshot_is_refused() -> None:
    counter, blob = _snapshot_of_one_post()
    ref = snapshot_ref(1, "s", blob, counter)
    with pytest.raises(SnapshotError, match="SHA-256"):
        load_counter_into(_counter(30.0, 10), blob[:-1] + b"!", ref)


def test_a_snapshot_made_with_other_settings_is_refused() -> None:
    counter, blob = _snapshot_of_one_post()
    ref = snapshot_ref(1, "s", blob, counter)
    other = PostCounter(
        bucket_seconds=600,
        session_gap=30.0,
        allowed_lateness=50.0,
        dedupe_capacity=10,
        happy=HappyMatcher(["😊"]),
    )
    with pytest.raises(SnapshotError, match="other counting settings"):
        load_counter_into(other, blob, ref)


def test_a_restored_counter_keeps_this_runs_statistics() -> None:
    counter, blob = _snapshot_of_one_post()
    fresh = _counter(30.0, 10)
    load_counter_into(fresh, blob, snapshot_ref(1, "s", blob, counter))
    assert fresh.stats.posts == 0
    fresh.add(Post(id="1", author="a", event_time=2.0, text="x", hashtags=("t",)))
    assert fresh.stats.duplicates == 1  # it remembers the id from the snapshot


def test_delete_stream_removes_the_stream_and_its_snapshot_store(
    nats_url: str, unique_name: str
) -> None:
    import asyncio

    import nats
    from nats.js.errors import NotFoundError

    from happyhashtags.queue.state import delete_stream, snapshot_bucket

    async def scenario() -> None:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        try:
            await js.add_stream(name=unique_name, subjects=[f"{unique_name}.>"])
            await js.create_object_store(snapshot_bucket(unique_name))
            await delete_stream(js, unique_name)
            with pytest.raises(NotFoundError):
                await js.stream_info(unique_name)
            with pytest.raises(NotFoundError):
                await js.object_store(snapshot_bucket(unique_name))
            await delete_stream(js, unique_name)  # nothing left: not an error
        finally:
            await nc.close()

    asyncio.run(scenario())
