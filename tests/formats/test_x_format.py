"""Decoding X API v2 stream messages and v1.1 statuses into posts (formats/x.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from happyhashtags import formats
from happyhashtags.aggregate import PostCounter
from happyhashtags.errors import DecodeError
from happyhashtags.formats import (
    KeyPartitioner,
    get_checker,
    get_decoder,
    get_line_counter,
    get_partition_key,
    get_partitioner,
    register_decoder,
)
from happyhashtags.formats.x import (
    FUTURE_TOLERANCE,
    count_x_lines,
    decode_x,
    parse_v1_time,
    parse_v2_time,
    partition_key_x,
    partition_x_lines,
    undecodable_x_lines,
)
from happyhashtags.model import Post, Skipped
from reference import Dead, decode_reference, parse_created_at
from services import shared_file

V1 = ("fixtures", "x-api-v1.1-statuses.jsonl")
V2 = ("fixtures", "x-api-v2-default-fields.jsonl")
READ_AT = 1_800_000_000.25  # 2027-01-15: after every fixture's created_at


def _lines(*parts: str) -> list[bytes]:
    return [line for line in shared_file(*parts).read_bytes().splitlines() if line.strip()]


def _post(line: bytes | dict[str, Any], received_at: float = READ_AT) -> Post:
    raw = line if isinstance(line, bytes) else json.dumps(line).encode()
    post = decode_x(raw, received_at)
    assert isinstance(post, Post), post
    return post


def _tags(post: Post) -> list[str]:
    from happyhashtags import extract_hashtags

    return list(post.hashtags) if post.hashtags is not None else extract_hashtags(post.text)


# -- the shared fixtures, each line against an independent walk of its JSON -----------------------


def _expected_v1(status: dict[str, Any]) -> tuple[str, list[str] | None, bool]:
    """Text, entity hashtags (None: extract) and retweet flag, read straight off the JSON."""
    chosen = status.get("retweeted_status") or status
    if "extended_tweet" in chosen:
        ext = chosen["extended_tweet"]
        text, entities = ext["full_text"], ext.get("entities")
    else:
        text = chosen["full_text"] if "full_text" in chosen else chosen["text"]
        entities = chosen.get("entities")
    tags = None if entities is None else [h["text"] for h in entities.get("hashtags", [])]
    return text, tags, "retweeted_status" in status


def test_every_v1_status_decodes_to_its_text_hashtags_id_author_and_time() -> None:
    lines = _lines(*V1)
    assert len(lines) == 56
    for line in lines:
        status = json.loads(line)
        post = _post(line)
        text, tags, is_retweet = _expected_v1(status)
        assert post.text == text
        assert post.hashtags == (tuple(tags) if tags is not None else None)
        assert post.is_retweet is is_retweet
        assert post.id == status["id_str"]
        assert post.author == status["user"]["id_str"]
        assert post.event_time == parse_created_at(status["created_at"])
        reference = decode_reference(line)
        assert not isinstance(reference, str)
        assert _tags(post) == reference.hashtags
        assert post.text == reference.text


def test_every_v2_default_fields_tweet_extracts_hashtags_and_uses_read_time() -> None:
    lines = _lines(*V2)
    assert len(lines) == 166
    with_tags = 0
    for line in lines:
        data = json.loads(line)["data"]
        post = _post(line)
        assert post.id == data["id"]
        assert post.text == data["text"]
        assert post.author is None  # default fields: no author_id, so no sessions
        assert post.hashtags is None  # no entities: extracted from the text
        assert post.event_time == READ_AT
        reference = decode_reference(line)
        assert not isinstance(reference, str)
        assert _tags(post) == reference.hashtags
        with_tags += bool(reference.hashtags)
    assert with_tags >= 30


@pytest.mark.parametrize(
    ("parts", "post_id", "hashtags"),
    [
        (V1, "1149698684646563840", ["data", "tweets", "python", "twitter"]),
        (V1, "1149858049957535745", ["Área51"]),
        (V1, "1149863542738173953", ["TwitterArtHouse"]),
        (V1, "266367358078169089", []),
        (V2, "1447395402676793345", ["Twitter"]),
        (V2, "1578463773701963776", ["TVR25"]),  # "#1!" is not a hashtag
        (V2, "1578413783801790467", ["Apagón"]),  # after an emoji
        (V2, "1452401301044797451", ["Twi"]),  # a truncated retweet keeps what is left
    ],
)
def test_known_fixture_posts_have_these_hashtags(
    parts: tuple[str, str], post_id: str, hashtags: list[str]
) -> None:
    posts = [_post(line) for line in _lines(*parts)]
    (post,) = [p for p in posts if p.id == post_id]
    assert _tags(post) == hashtags


def test_v1_retweet_takes_the_original_text_and_the_retweeters_identity() -> None:
    (line,) = [x for x in _lines(*V1) if b'"id_str": "318058960919855104"' in x[:200]]
    post = _post(line)
    assert post.is_retweet
    assert post.text.startswith("RT @TwitterEng: Bolstering")  # the original's, not "RT @twitter:"
    assert post.author == "1183016636"
    assert post.event_time == datetime(2013, 3, 30, 17, 55, 40, tzinfo=UTC).timestamp()


# -- crafted v2 messages ------------------------------------------------------------------------


def test_v2_retweet_uses_the_original_from_includes() -> None:
    post = _post(
        {
            "data": {
                "id": "2",
                "text": "RT @a: long text #Fi…",
                "author_id": "77",
                "created_at": "2024-05-01T10:00:00.000Z",
                "referenced_tweets": [{"type": "retweeted", "id": "1"}],
            },
            "includes": {
                "users": [{"id": "77", "username": "x"}],
                "tweets": [
                    {"id": "9", "text": "other #Nope"},
                    {
                        "id": "1",
                        "text": "long text #First #Second :)",
                        "author_id": "5",
                        "created_at": "2024-04-01T00:00:00Z",
                        "entities": {"hashtags": [{"start": 10, "end": 16, "tag": "First"}]},
                    },
                ],
            },
        }
    )
    assert post.text == "long text #First #Second :)"
    assert post.hashtags == ("First",)  # the original's entities win over extraction
    assert post.is_retweet
    assert (post.id, post.author) == ("2", "77")  # the retweeter's
    assert post.event_time == datetime(2024, 5, 1, 10, tzinfo=UTC).timestamp()


def test_v2_retweet_without_its_original_falls_back_to_the_retweet() -> None:
    post = _post(
        {
            "data": {
                "id": "2",
                "text": "RT @a: #Cut…",
                "referenced_tweets": [{"type": "retweeted", "id": "1"}],
            },
            "includes": {"tweets": [{"id": "3", "text": "#Other"}]},
        }
    )
    assert post.is_retweet
    assert post.text == "RT @a: #Cut…"
    assert _tags(post) == ["Cut"]


def test_v2_quote_and_reply_are_not_retweets() -> None:
    post = _post(
        {
            "data": {
                "id": "2",
                "text": "mine #Mine",
                "referenced_tweets": [
                    {"type": "quoted", "id": "1"},
                    {"type": "replied_to", "id": "3"},
                ],
            },
            "includes": {"tweets": [{"id": "1", "text": "theirs #Theirs"}]},
        }
    )
    assert not post.is_retweet
    assert _tags(post) == ["Mine"]


def test_v2_note_tweet_gives_the_long_text_and_its_entities() -> None:
    long_text = "x " * 150 + "#Late :)"
    post = _post(
        {
            "data": {
                "id": "1",
                "text": "x x x… #Early",
                "entities": {"hashtags": [{"start": 7, "end": 13, "tag": "Early"}]},
                "note_tweet": {
                    "text": long_text,
                    "entities": {"hashtags": [{"start": 300, "end": 305, "tag": "Late"}]},
                },
            }
        }
    )
    assert post.text == long_text
    assert post.hashtags == ("Late",)


def test_v2_note_tweet_without_entities_extracts_from_the_long_text() -> None:
    # Rule: the chosen tweet's note_tweet.text AND note_tweet.entities; no entities -> extract.
    post = _post(
        {
            "data": {
                "id": "1",
                "text": "x x x… #Early",
                "entities": {"hashtags": [{"start": 7, "end": 13, "tag": "Early"}]},
                "note_tweet": {"text": "x x x x #Early #Late"},
            }
        }
    )
    assert _tags(post) == ["Early", "Late"]


def test_v2_retweet_of_a_long_post_uses_the_originals_note_tweet() -> None:
    post = _post(
        {
            "data": {
                "id": "2",
                "text": "RT…",
                "referenced_tweets": [{"type": "retweeted", "id": "1"}],
            },
            "includes": {
                "tweets": [
                    {"id": "1", "text": "short", "note_tweet": {"text": "long #Note"}},
                ]
            },
        }
    )
    assert post.text == "long #Note"
    assert _tags(post) == ["Note"]


def test_v2_empty_entities_mean_no_hashtags_even_if_the_text_has_some() -> None:
    post = _post({"data": {"id": "1", "text": "#Tag", "entities": {"urls": []}}})
    assert post.hashtags == ()


# -- crafted v1.1 statuses ----------------------------------------------------------------------


def _status(**fields: Any) -> dict[str, Any]:
    return {
        "id": 10,
        "id_str": "10",
        "created_at": "Wed Oct 10 20:19:24 +0000 2018",
        "user": {"id": 42, "id_str": "42"},
        **fields,
    }


def test_v1_extended_tweet_full_text_and_entities_win() -> None:
    post = _post(
        _status(
            text="short #A…",
            truncated=True,
            entities={"hashtags": [{"text": "A", "indices": [6, 8]}]},
            extended_tweet={
                "full_text": "short #All the text #Rest",
                "entities": {"hashtags": [{"text": "All"}, {"text": "Rest"}]},
            },
        )
    )
    assert post.text == "short #All the text #Rest"
    assert post.hashtags == ("All", "Rest")


def test_v1_full_text_beats_text_and_no_entities_means_extraction() -> None:
    post = _post(_status(text="old", full_text="compat #Mode"))
    assert post.text == "compat #Mode"
    assert post.hashtags is None
    assert _tags(post) == ["Mode"]


def test_v1_retweet_of_an_extended_tweet() -> None:
    post = _post(
        _status(
            text="RT @o: trunc…",
            retweeted_status=_status(
                id_str="5",
                text="trunc…",
                user={"id_str": "9"},
                extended_tweet={"full_text": "full #Original", "entities": {"hashtags": []}},
            ),
        )
    )
    assert post.text == "full #Original"
    assert post.hashtags == ()
    assert (post.id, post.author, post.is_retweet) == ("10", "42", True)


def test_v1_time_with_an_offset_and_v2_times() -> None:
    assert (
        parse_v1_time("Wed Oct 10 20:19:24 +0000 2018")
        == datetime(2018, 10, 10, 20, 19, 24, tzinfo=UTC).timestamp()
    )
    assert parse_v1_time("Wed Oct 10 22:19:24 +0200 2018") == parse_v1_time(
        "Wed Oct 10 20:19:24 +0000 2018"
    )
    assert parse_v2_time("2022-10-10T20:19:24.500Z") == pytest.approx(
        datetime(2022, 10, 10, 20, 19, 24, 500000, tzinfo=UTC).timestamp()
    )
    assert parse_v2_time("2022-10-10T20:19:24") == parse_v2_time("2022-10-10T20:19:24Z")


# -- non-posts and bad lines --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ({"delete": {"status": {"id": 1, "id_str": "1", "user_id": 3}}}, "delete"),
        ({"limit": {"track": 12, "timestamp_ms": "1"}}, "limit"),
        ({"errors": [{"title": "operational-disconnect", "type": "about:blank"}]}, "errors"),
        ({"scrub_geo": {"user_id": 1}}, "scrub_geo"),
    ],
)
def test_notices_are_skipped_with_their_kind(message: dict[str, Any], reason: str) -> None:
    result = decode_x(json.dumps(message).encode(), READ_AT)
    assert result == Skipped(reason)


@pytest.mark.parametrize(
    "line",
    [
        b"{not json",
        b'{"data": {"id": "1", "text": "cut',
        b"\xff\xfe garbage",
        b"[1, 2, 3]",
        b'"a string"',
        b'{"data": {"id": "1", "text": 5}}',
        b'{"data": {"id": "1", "text": "x", "created_at": "yesterday"}}',
        b'{"id_str": "1", "text": "x", "created_at": "Someday 12"}',
    ],
)
def test_unusable_lines_raise_a_decode_error_with_a_reason(line: bytes) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_x(line, READ_AT)
    assert caught.value.reason
    with pytest.raises(Dead):  # the reference agrees that it is unusable
        decode_reference(line)


def test_the_registry_names_the_x_decoder() -> None:
    assert get_decoder("x") is decode_x
    assert get_line_counter("x") is count_x_lines
    assert get_partition_key("x") is partition_key_x
    assert get_partitioner("x") is partition_x_lines


def test_a_decoder_registered_over_x_takes_its_line_counter_and_key_with_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The line counter and the partition key follow the built-in decoder's rules: a decoder
    # registered in its place must not be bypassed by them.
    registries = ("_DECODERS", "_LINE_COUNTERS", "_CHECKERS", "_PARTITION_KEYS", "_PARTITIONERS")
    for registry in registries:
        monkeypatch.setattr(formats, registry, dict(getattr(formats, registry)))
    assert get_checker("x") is undecodable_x_lines
    register_decoder("x", "happyhashtags.formats.bluesky:decode_bluesky")
    assert get_decoder("x").__name__ == "decode_bluesky"
    assert get_line_counter("x") is None
    # X lines are not Bluesky events: the checker decodes them with the new decoder.
    v2 = _lines(*V2)[:3]
    assert get_checker("x")(v2, READ_AT) == [0, 1, 2]
    assert get_partition_key("x") is not partition_key_x
    assert isinstance(get_partitioner("x"), KeyPartitioner)


@pytest.mark.parametrize("ahead", [FUTURE_TOLERANCE - 1, FUTURE_TOLERANCE + 1, 80 * 365 * 86400])
def test_a_created_at_far_after_the_read_time_is_replaced_by_it(ahead: float) -> None:
    created = datetime.fromtimestamp(READ_AT + ahead, UTC)
    v2 = {"data": {"id": "1", "text": "#a", "author_id": "7", "created_at": created.isoformat()}}
    v1 = {
        "id_str": "2",
        "text": "#a",
        "user": {"id_str": "7"},
        "created_at": created.strftime("%a %b %d %H:%M:%S +0000 %Y"),
    }
    for message in (v2, v1):
        post = _post(message)
        # Within the tolerance the post keeps its time (clocks differ a little); beyond, the
        # read time: a wrong clock must not open a bucket in the future.
        expected = READ_AT if ahead > FUTURE_TOLERANCE else int(READ_AT + ahead)
        assert int(post.event_time) == int(expected)


def test_a_post_from_the_far_future_does_not_switch_sessions_off() -> None:
    # Before: its time became the sessions' watermark, every live session expired, and an
    # author's repeated hashtag counted again.
    def line(post_id: str, author: str, at: float) -> bytes:
        created = datetime.fromtimestamp(at, UTC).isoformat()
        data = {"id": post_id, "text": "#spam", "author_id": author, "created_at": created}
        return json.dumps({"data": data}).encode()

    counter = PostCounter(session_gap=1800.0)
    sessions = counter.sessions
    assert sessions is not None
    for post_id, author, at in [
        ("1", "alice", READ_AT - 120),
        ("2", "bob", READ_AT + 10 * 365 * 86400),
        ("3", "alice", READ_AT - 60),
    ]:
        post = decode_x(line(post_id, author, at), READ_AT)
        assert isinstance(post, Post)
        counter.add(post)
        sessions.expire()  # as the engine does every so often
    assert sum(tweets for tweets, _ in counter.drain().values()) == 2  # alice once, bob once
