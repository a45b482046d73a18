"""Counting posts into (bucket, hashtag) cells: the rules without sessions, dedupe, drain/restore,
and the whole decode + count path against the independent reference."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from happyhashtags.aggregate import Counts, PostCounter, RecentIds, merge_counts
from happyhashtags.errors import DecodeError
from happyhashtags.formats.x import decode_x
from happyhashtags.happy import HappyMatcher
from happyhashtags.model import Post
from reference import Reference, count_reference, crafted_stream

H = 3600
T0 = 1_714_557_600  # 2024-05-01T10:00:00Z, a bucket start


def _post(text: str, t: float = T0 + 1, *, id: str | None = None, author: str | None = None,
          hashtags: tuple[str, ...] | None = None, is_retweet: bool = False) -> Post:  # fmt: skip
    return Post(id, author, float(t), text, hashtags, is_retweet)


def _count(posts: Iterable[Post], **options: object) -> Counts:
    counter = PostCounter(session_gap=0, **options)  # type: ignore[arg-type]
    for post in posts:
        counter.add(post)
    return counter.drain()


def _as_cells(counts: Counts) -> dict[tuple[datetime, str], tuple[int, int]]:
    return {(datetime.fromtimestamp(b, tz=UTC), tag): (t, h) for (b, tag), (t, h) in counts.items()}


def counter_run(lines: list[bytes], received_at: float, **options: object) -> PostCounter:
    """Decode every line with the real decoder and count it with a real PostCounter."""
    counter = PostCounter(**options)  # type: ignore[arg-type]
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        try:
            item = decode_x(line, received_at)
        except DecodeError:
            continue
        if isinstance(item, Post):
            counter.add(item)
    return counter


def test_the_docstring_example() -> None:
    assert _count([_post("sunny #Day :)", 7200.5, id="1", author="a")]) == {(7200, "day"): [1, 1]}


def test_each_distinct_normalized_tag_counts_once_per_post() -> None:
    counts = _count([_post("#Café #CAFÉ #cafe\u0301 #café #straße #STRASSE #ＴＡＧ #tag :)")])
    assert counts == {(T0, "café"): [1, 1], (T0, "strasse"): [1, 1], (T0, "tag"): [1, 1]}


def test_tweets_and_happy_tweets_add_up_per_bucket() -> None:
    posts = [
        _post("#a :)", T0),
        _post("#a", T0 + H - 0.001),
        _post("#a #b :)", T0 + H),
        _post("#b", T0 + 2 * H + 5),
    ]
    assert _count(posts) == {
        (T0, "a"): [2, 1],
        (T0 + H, "a"): [1, 1],
        (T0 + H, "b"): [1, 1],
        (T0 + 2 * H, "b"): [1, 0],
    }


@pytest.mark.parametrize("size", [60, 900, 86400])
def test_buckets_of_other_sizes_align_to_the_epoch(size: int) -> None:
    t = T0 + 4000.7
    counts = _count([_post("#x", t)], bucket_seconds=size)
    assert list(counts) == [(int(t) - int(t) % size, "x")]


def test_times_before_the_epoch_round_down_to_their_bucket() -> None:
    # floor, not int(): int() rounds towards zero.
    assert list(_count([_post("#old", -0.5)])) == [(-3600, "old")]


@pytest.mark.parametrize("size", [0, -5, 1.5])
def test_bucket_size_must_be_a_positive_whole_number(size: float) -> None:
    with pytest.raises(ValueError, match="bucket_seconds"):
        PostCounter(bucket_seconds=size)  # type: ignore[arg-type]


def test_entities_win_over_the_text_and_empty_entities_mean_no_tags() -> None:
    posts = [_post("#InText", hashtags=("FromEntities",)), _post("#Ignored", hashtags=())]
    assert _count(posts) == {(T0, "fromentities"): [1, 0]}


def test_happy_uses_the_configured_markers() -> None:
    happy = HappyMatcher(["\U0001f44d"])
    posts = [_post("#a \U0001f44d\U0001f3fe"), _post("#a :)"), _post("#a")]
    assert _count(posts, happy=happy) == {(T0, "a"): [3, 1]}


def test_retweets_count_by_default_and_can_be_skipped() -> None:
    posts = [_post("#a :)", id="1", is_retweet=True), _post("#a", id="2")]
    assert _count(posts) == {(T0, "a"): [2, 1]}
    counter = PostCounter(session_gap=0, count_retweets=False)
    for post in posts:
        counter.add(post)
    assert counter.drain() == {(T0, "a"): [1, 0]}
    assert counter.stats.retweets_skipped == 1


def test_a_repeated_post_id_counts_once_and_posts_without_id_always_count() -> None:
    counter = PostCounter(session_gap=0)
    for post in [_post("#a", id="1"), _post("#a", id="1"), _post("#a"), _post("#a")]:
        counter.add(post)
    assert counter.drain() == {(T0, "a"): [3, 0]}
    assert counter.stats.duplicates == 1
    assert counter.stats.posts == 4


def test_dedupe_remembers_a_bounded_horizon_of_ids() -> None:
    ids = RecentIds(capacity=2)
    assert [ids.add(x) for x in ["a", "b", "a", "c", "a", "c"]] == [
        True, True, False, True, True, False,
    ]  # fmt: skip
    assert len(ids) == 2
    counter = PostCounter(session_gap=0, dedupe_capacity=2)
    for post_id in ["1", "2", "1", "3", "1"]:
        counter.add(_post("#a", id=post_id))
    assert counter.drain() == {(T0, "a"): [4, 0]}  # "1" fell out of the horizon before its 3rd


def test_stats_describe_what_was_seen() -> None:
    counter = PostCounter(session_gap=0)
    for post in [_post("#a :)", id="1"), _post("no tags :)", id="2"), _post("#b", id="1")]:
        counter.add(post)
    stats = counter.stats
    assert (stats.posts, stats.duplicates, stats.with_hashtags, stats.happy, stats.counted) == (
        3, 1, 1, 1, 1,
    )  # fmt: skip


def test_drain_empties_and_restore_puts_counts_back() -> None:
    counter = PostCounter(session_gap=0)
    counter.add(_post("#a :)"))
    assert counter.pending == 1
    first = counter.drain()
    assert counter.drain() == {}
    assert counter.pending == 0
    counter.add(_post("#a"))
    counter.restore(first)
    assert counter.drain() == {(T0, "a"): [2, 1]}


def test_a_nul_in_an_entity_hashtag_becomes_a_replacement_character() -> None:
    # Entities may hold any string; PostgreSQL text cannot hold NUL.
    assert _count([_post("x", hashtags=("nul\x00tag", "NUL\x00TAG"))]) == {
        (T0, "nul\ufffdtag"): [1, 0]
    }


def test_merge_counts_adds_cell_by_cell() -> None:
    into: Counts = {(0, "a"): [1, 1]}
    assert merge_counts(into, {(0, "a"): [2, 0], (3600, "b"): [1, 1]}) is into
    assert into == {(0, "a"): [3, 1], (3600, "b"): [1, 1]}


def test_a_counter_pickles_with_its_state() -> None:
    counter = PostCounter(session_gap=1800)
    counter.add(_post("#a", id="1", author="u"))
    copy = pickle.loads(pickle.dumps(counter))
    copy.add(_post("#a", id="1", author="u"))  # a duplicate
    copy.add(_post("#a", T0 + 60, id="2", author="u"))  # same session
    assert copy.drain() == {(T0, "a"): [1, 0]}


def test_dedupe_survives_pickling_into_another_process() -> None:
    # Python's hash() of a str is salted per process: ids must be remembered by a stable hash.
    counter = PostCounter(session_gap=0)
    counter.add(_post("#a", id="1700000000000000001"))
    counter.drain()
    script = (
        "import pickle, sys\n"
        "from happyhashtags.model import Post\n"
        "c = pickle.loads(sys.stdin.buffer.read())\n"
        "c.add(Post('1700000000000000001', None, 1.0, '#a'))\n"
        "print(c.stats.duplicates)\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", script],
        input=pickle.dumps(counter),
        capture_output=True,
        check=True,
        env=env,
        timeout=60,
    )
    assert out.stdout.strip() == b"1"


# -- the real decode + count against the reference ----------------------------------------------


def _compare(lines: list[bytes], reference: Reference, counter: PostCounter) -> None:
    assert _as_cells(counter.drain()) == reference.counts
    assert counter.stats.duplicates == reference.duplicates


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    gap=st.sampled_from([0.0, 60.0, 1800.0]),
    retweets=st.booleans(),
    markers=st.sampled_from([(":)",), ("\U0001f44d", "\u263a"), (":)", "\u2764\ufe0f", "yay")]),
    bucket=st.sampled_from([900, 3600, 86400]),
)
def test_decode_and_count_agree_with_the_reference(
    seed: int, gap: float, retweets: bool, markers: tuple[str, ...], bucket: int
) -> None:
    lines = crafted_stream(seed, 300, authors=3, ids=250)
    read_at = T0 + 1234.5
    reference = count_reference(
        lines,
        bucket_seconds=bucket,
        markers=markers,
        session_gap=gap,
        retweets=retweets,
        received_at=read_at,
    )
    counter = counter_run(
        lines,
        read_at,
        bucket_seconds=bucket,
        happy=HappyMatcher(markers),
        session_gap=gap,
        count_retweets=retweets,
    )
    _compare(lines, reference, counter)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10**6), cuts=st.lists(st.integers(0, 400), max_size=6))
def test_draining_at_any_points_adds_up_to_the_same_counts(seed: int, cuts: list[int]) -> None:
    lines = crafted_stream(seed, 400, bad=False, timeless=False)
    posts = [p for p in (decode_x(x, time.time()) for x in lines) if isinstance(p, Post)]
    whole = PostCounter()
    pieces = PostCounter()
    total: Counts = {}
    for i, post in enumerate(posts):
        whole.add(post)
        pieces.add(post)
        if i in cuts:
            merge_counts(total, pieces.drain())
    merge_counts(total, pieces.drain())
    expected = whole.drain()
    assert {k: v for k, v in total.items() if v != [0, 0]} == expected
