"""The demo stream: deterministic, realistic X API v2 messages, with retweets and spammers."""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

from happyhashtags.config import load_settings
from happyhashtags.formats.x import decode_x
from happyhashtags.model import Post
from happyhashtags.sources import open_source
from happyhashtags.sources.demo import DEFAULT_START, DemoSource, generate_messages
from reference import count_reference, decode_reference


def test_the_same_seed_gives_the_same_stream() -> None:
    assert list(generate_messages(300, seed=3)) == list(generate_messages(300, seed=3))
    assert list(generate_messages(300, seed=3)) != list(generate_messages(300, seed=4))
    assert len(list(generate_messages(123))) == 123


def test_messages_are_v2_stream_messages_with_consistent_entities() -> None:
    ids = set()
    for line in generate_messages(2000, seed=11):
        message = json.loads(line)
        data = message["data"]
        ids.add(data["id"])
        assert data["edit_history_tweet_ids"] == [data["id"]]
        created = datetime.fromisoformat(data["created_at"])
        assert created >= DEFAULT_START
        assert data["author_id"].isdigit()
        chosen = data
        if "referenced_tweets" in data:
            (ref,) = data["referenced_tweets"]
            assert ref["type"] == "retweeted"
            (chosen,) = [t for t in message["includes"]["tweets"] if t["id"] == ref["id"]]
            assert data["text"].startswith("RT @")
            assert "entities" not in data
        for entity in chosen.get("entities", {}).get("hashtags", []):
            assert chosen["text"][entity["start"] : entity["end"]] == "#" + entity["tag"]
    assert len(ids) == 2000  # the demo repeats no post id


def test_the_stream_covers_retweets_markers_unicode_and_spammers() -> None:
    lines = list(generate_messages(3000, seed=5))
    posts = [decode_x(line, time.time()) for line in lines]
    assert all(isinstance(p, Post) for p in posts)
    real = [p for p in posts if isinstance(p, Post)]
    assert sum(p.is_retweet for p in real) > 100
    assert any(":)" in p.text for p in real)
    assert any("\U0001f44d\U0001f3fd" in p.text for p in real)
    tags = {t for p in real for t in p.hashtags or ()}
    assert {"café", "straße"} & {t.lower() for t in tags}
    assert any(t.isupper() for t in tags)
    spam = Counter(p.author for p in real if p.author and p.author.startswith("9"))
    assert len(spam) >= 5
    for author, n in spam.items():
        # A spammer repeats one hashtag.
        spammed = {t.casefold() for p in real if p.author == author for t in p.hashtags or ()}
        assert len(spammed) == 1, (author, n)


def test_event_times_follow_the_rate_with_jitter() -> None:
    start = datetime(2030, 6, 1, tzinfo=UTC)
    times = [
        datetime.fromisoformat(json.loads(x)["data"]["created_at"])
        for x in generate_messages(1000, start=start, rate=10.0)
    ]
    assert min(times) >= start
    assert max(times) <= start + timedelta(seconds=100 + 2)
    assert times[-1] - times[0] > timedelta(seconds=90)


def test_the_reference_reads_the_demo_like_the_decoder() -> None:
    lines = list(generate_messages(500, seed=9))
    for line in lines:
        post = decode_x(line, time.time())
        ref = decode_reference(line)
        assert isinstance(post, Post)
        assert not isinstance(ref, str)
        assert (post.id, post.author, post.text, post.is_retweet) == (
            ref.id, ref.author, ref.text, ref.is_retweet,
        )  # fmt: skip
        assert list(post.hashtags or ()) == ref.hashtags
    assert count_reference(lines).posts == 500


def test_demo_source_batches() -> None:
    source = DemoSource(count=1000, seed=2, clock=lambda: 42.0, batch_size=300)
    batches = list(source.batches())
    assert [len(b.lines) for b in batches] == [300, 300, 300, 100]
    assert [b.first_line for b in batches] == [1, 301, 601, 901]
    assert {b.received_at for b in batches} == {42.0}
    assert {b.origin for b in batches} == {"demo"}
    assert [line for b in batches for line in b.lines] == list(generate_messages(1000, seed=2))
    assert (source.name, source.format, source.total) == ("demo", "x", 1000)


def test_close_stops_the_demo() -> None:
    source = DemoSource(count=10_000, batch_size=100)
    batches = source.batches()
    next(batches)
    source.close()
    assert list(batches) == []


def test_settings_choose_count_and_seed() -> None:
    settings = load_settings({"demo_count": 50, "demo_seed": 8}, environ={})
    source = open_source(settings, "demo")
    assert isinstance(source, DemoSource)
    lines = [line for b in source.batches() for line in b.lines]
    assert lines == list(generate_messages(50, seed=8))
