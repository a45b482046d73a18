"""The Jetstream decoder: which events are posts, and how a post's fields are mapped."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fake_jetstream import (
    account_event,
    delete_event,
    identity_event,
    like_event,
    post_event,
    post_record,
)
from happyhashtags.aggregate import PostCounter
from happyhashtags.errors import DecodeError
from happyhashtags.formats import get_decoder
from happyhashtags.formats.bluesky import decode_bluesky, parse_created_at
from happyhashtags.model import Post, Skipped

DID = "did:plc:eygmaihciaxprqvxpfvl6flk"
T_US = 1_725_911_162_329_308  # 2024-09-09T19:46:02.329308Z
T = T_US / 1e6


def decode(event: dict[str, Any], received_at: float = 0.0) -> Post | Skipped:
    return decode_bluesky(msgspec.json.encode(event), received_at)


def decoded_post(event: dict[str, Any], received_at: float = 0.0) -> Post:
    item = decode(event, received_at)
    assert isinstance(item, Post), item
    return item


def test_registered_under_bluesky() -> None:
    assert get_decoder("bluesky") is decode_bluesky


def test_a_post_create_maps_uri_did_text_time_and_tag_facets() -> None:
    event = post_event(DID, "3l3qo2vuowo2b", T_US, "sunny day :)", hashtags=("Caturday", "café"))
    post = decoded_post(event)
    assert post.id == f"at://{DID}/app.bsky.feed.post/3l3qo2vuowo2b"
    assert post.author == DID
    assert post.text == "sunny day :) #Caturday #café"
    assert post.hashtags == ("Caturday", "café")
    assert post.event_time == pytest.approx(
        parse_created_at(event["commit"]["record"]["createdAt"])
    )
    assert post.is_retweet is False


def test_tags_are_added_to_the_tag_facets() -> None:
    event = post_event(DID, "k", T_US, "hi", hashtags=("one",), tags=["extra", "#Two"])
    assert decoded_post(event).hashtags == ("one", "extra", "Two")


def test_only_tag_features_count_not_links_or_mentions() -> None:
    record = post_record("see", hashtags=("kept",), links=("https://example.com/#notatag",))
    record["facets"].append(
        {
            "index": {"byteStart": 0, "byteEnd": 3},
            "features": [{"$type": "app.bsky.richtext.facet#mention", "did": DID}],
        }
    )
    record["createdAt"] = "2024-09-09T19:46:02.102Z"
    event = post_event(DID, "k", T_US)
    event["commit"]["record"] = record
    assert decoded_post(event).hashtags == ("kept",)


def test_facets_with_no_tag_mean_no_hashtags_even_if_the_text_has_one() -> None:
    # The client marked the text up and found no hashtag: its facets are the truth.
    event = post_event(DID, "k", T_US, "C# #1 issue", links=("https://example.com",))
    assert decoded_post(event).hashtags == ()


def test_without_facets_hashtags_are_extracted_from_the_text_by_the_counter() -> None:
    event = post_event(DID, "k", T_US, "hello", hashtags=("Sunny", "day"), facets=False)
    post = decoded_post(event)
    assert post.hashtags is None
    counter = PostCounter(session_gap=0)
    counter.add(post)
    assert sorted(key for _, key in counter.drain()) == ["day", "sunny"]


def test_without_facets_but_with_tags_the_text_hashtags_and_the_tags_are_merged() -> None:
    event = post_event(DID, "k", T_US, "hello", hashtags=("Sunny",), facets=False, tags=["more"])
    assert decoded_post(event).hashtags == ("Sunny", "more")


def test_an_empty_facet_list_counts_as_no_facets() -> None:
    event = post_event(DID, "k", T_US, "so #happy", facets=False)
    event["commit"]["record"]["facets"] = []
    assert decoded_post(event).hashtags is None


@pytest.mark.parametrize(
    ("created_at", "expected"),
    [
        ("2024-09-09T19:40:00.000Z", 1725910800.0),  # before time_us: kept (late delivery)
        ("2024-09-09T19:50:00+00:00", 1725911400.0),  # 4 minutes ahead: a clock a bit fast
        ("2024-09-09T21:46:00+02:00", 1725911160.0),  # an offset
        ("2024-09-09T19:46:00.123456789Z", 1725911160.123456),  # nanoseconds
        ("2024-09-09T19:46:00", 1725911160.0),  # no zone: UTC
        ("2020-01-01T00:00:00Z", 1577836800.0),  # backdated (an import): kept as written
    ],
)
def test_created_at_is_the_event_time(created_at: str, expected: float) -> None:
    event = post_event(DID, "k", T_US, created_at=created_at)
    assert decoded_post(event).event_time == pytest.approx(expected)


@pytest.mark.parametrize(
    "created_at",
    [
        None,  # missing
        "yesterday",  # unparsable
        "2024-13-45T99:00:00Z",  # not a date
        "2024-09-09T19:52:00Z",  # six minutes after time_us: a wrong clock
        "2099-01-01T00:00:00Z",  # far future
    ],
)
def test_time_us_replaces_a_missing_bad_or_future_created_at(created_at: str | None) -> None:
    event = post_event(DID, "k", T_US, created_at=created_at)
    assert decoded_post(event, received_at=1.0).event_time == pytest.approx(T)


def test_without_time_us_the_arrival_time_is_the_reference() -> None:
    event = post_event(DID, "k", T_US, created_at=None)
    del event["time_us"]
    assert decoded_post(event, received_at=1234.5).event_time == 1234.5


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (identity_event(DID, T_US, "someone.bsky.social"), "identity"),
        (account_event(DID, T_US, active=False), "account"),
        (delete_event(DID, "k", T_US), "delete"),
        (delete_event(DID, "k", T_US, "app.bsky.graph.follow"), "other_collection"),
        (like_event(DID, "k", T_US, f"at://{DID}/app.bsky.feed.post/x"), "other_collection"),
        ({"did": DID, "time_us": T_US, "kind": "sync", "sync": {}}, "other_kind"),
    ],
)
def test_events_that_are_not_post_creates_are_skipped(event: dict[str, Any], reason: str) -> None:
    assert decode(event) == Skipped(reason)


def test_an_update_is_skipped() -> None:
    event = post_event(DID, "k", T_US, "edited", hashtags=("x",))
    event["commit"]["operation"] = "update"
    assert decode(event) == Skipped("update")


def test_a_record_of_another_shape_in_another_collection_is_not_parsed() -> None:
    event = like_event(DID, "k", T_US, "at://x")
    event["commit"]["record"]["text"] = {"not": "a string"}
    assert decode(event) == Skipped("other_collection")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"{not json", "malformed_json"),
        (b'{"did": "d", "time_us": "soon", "kind": "commit"}', "invalid_shape"),
        (b'{"hello": 1}', "unrecognized"),
        (b'{"did": "d", "time_us": 1, "kind": "commit"}', "invalid_shape"),
        (
            json.dumps(
                {
                    "did": DID,
                    "time_us": T_US,
                    "kind": "commit",
                    "commit": {"operation": "create", "collection": "app.bsky.feed.post"},
                }
            ).encode(),
            "invalid_shape",
        ),
    ],
)
def test_unusable_lines_raise_decode_errors(line: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_bluesky(line, 0.0)
    assert caught.value.reason == reason


def test_a_post_record_of_the_wrong_shape_is_a_decode_error() -> None:
    event = post_event(DID, "k", T_US)
    event["commit"]["record"]["text"] = 42
    with pytest.raises(DecodeError) as caught:
        decode(event)
    assert caught.value.reason == "invalid_shape"
    event["commit"]["record"] = None
    with pytest.raises(DecodeError):
        decode(event)


@given(
    text=st.text(max_size=300),
    tags=st.lists(st.text(max_size=20), max_size=8),
    with_facets=st.booleans(),
)
def test_any_text_and_tags_decode_to_a_post(text: str, tags: list[str], with_facets: bool) -> None:
    event = post_event(DID, "k", T_US, created_at="2024-09-09T19:46:00Z")
    event["commit"]["record"]["text"] = text
    event["commit"]["record"]["tags"] = tags
    if with_facets:
        feature = {"$type": "app.bsky.richtext.facet#tag", "tag": "fixed"}
        event["commit"]["record"]["facets"] = [{"features": [feature]}]
    if any("\ud800" <= c <= "\udfff" for c in text + "".join(tags)):
        # A lone surrogate has no UTF-8 form: such text never comes off a WebSocket.
        return
    post = decode_bluesky(json.dumps(event, ensure_ascii=False).encode(), 0.0)
    assert isinstance(post, Post)
    assert post.text == text
    assert post.hashtags is not None or not any(t.lstrip("#＃") for t in tags)
    PostCounter(session_gap=0).add(post)
