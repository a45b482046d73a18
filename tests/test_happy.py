"""Happy markers: emoji match whole emoji (grapheme clusters), everything else as substrings."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from happyhashtags.errors import ConfigError
from happyhashtags.happy import DEFAULT_MARKERS, HappyMatcher, is_happy
from reference import is_happy_reference

THUMBS = "\U0001f44d"
MEDIUM = "\U0001f3fd"  # skin tone modifier
HEART = "\u2764\ufe0f"
HEART_ON_FIRE = "\u2764\ufe0f\u200d\U0001f525"
SMILE = "\u263a"  # ☺, text presentation by default
VS16 = "\ufe0f"
VS15 = "\ufe0e"


@pytest.mark.parametrize(
    ("markers", "text", "happy"),
    [
        # the default marker, as a substring anywhere, even inside words
        (DEFAULT_MARKERS, "sunny :)", True),
        (DEFAULT_MARKERS, "a:)b", True),
        (DEFAULT_MARKERS, ":-)", False),
        (DEFAULT_MARKERS, "sad :(", False),
        (DEFAULT_MARKERS, "", False),
        # skin tones on either side
        ([THUMBS], f"great {THUMBS}{MEDIUM}", True),
        ([THUMBS + MEDIUM], f"great {THUMBS}", True),
        ([THUMBS + MEDIUM], f"great {THUMBS}\U0001f3ff", True),
        # variation selectors on either side
        ([SMILE + VS16], f"ok {SMILE}", True),
        ([SMILE], f"ok {SMILE}{VS16}", True),
        ([SMILE], f"ok {SMILE}{VS15}", True),
        ([HEART], "\u2764", True),
        # a ZWJ sequence is another emoji
        ([HEART], f"hot {HEART_ON_FIRE}", False),
        ([HEART_ON_FIRE], f"hot {HEART}", False),
        ([HEART_ON_FIRE], f"hot {HEART_ON_FIRE}", True),
        (["\U0001f469"], "\U0001f469\u200d\U0001f4bb coding", False),  # woman ≠ woman technologist
        (["\U0001f469\u200d\U0001f4bb"], f"\U0001f469{MEDIUM}\u200d\U0001f4bb", True),
        # flags are pairs of regional indicators: one flag does not match its letters' neighbours
        (["\U0001f1e8\U0001f1e6"], "hey \U0001f1e8\U0001f1e6!", True),
        (["\U0001f1e8\U0001f1e6"], "\U0001f1fa\U0001f1e8\U0001f1e6\U0001f1fa", False),
        # keycaps
        (["1\ufe0f\u20e3"], "number 1\u20e3", True),
        (["1\ufe0f\u20e3"], "number 1", False),
        # emoji inside words still count
        ([THUMBS], f"great{THUMBS}{MEDIUM}job", True),
        # several markers: any one will do
        ([":)", "\U0001f60a", THUMBS], "nice \U0001f60a", True),
        ([":)", "\U0001f60a", THUMBS], f"nice {THUMBS}{MEDIUM}", True),
        ([":)", "\U0001f60a", THUMBS], "nice :D", False),
        # non-emoji markers are plain substrings, case and all
        (["<3", "yay"], "i <3 it", True),
        (["yay"], "YAY", False),
        (["yay"], "yaya", True),
        # an emoji marker made of two emoji is not one cluster: it matches as a substring
        ([THUMBS + THUMBS], f"{THUMBS}{THUMBS}", True),
        ([THUMBS + THUMBS], f"{THUMBS} {THUMBS}", False),
    ],
)
def test_markers(markers: list[str], text: str, happy: bool) -> None:
    assert HappyMatcher(markers).matches(text) is happy
    assert is_happy(text, markers) is happy
    assert is_happy_reference(text, markers) is happy


def test_the_default_marker_is_the_smiley() -> None:
    assert DEFAULT_MARKERS == (":)",)
    assert is_happy("ok :)")
    assert not is_happy(f"ok {THUMBS}")


@pytest.mark.parametrize("markers", [[], [""], ["  "]])
def test_empty_markers_are_a_config_error(markers: list[str]) -> None:
    with pytest.raises(ConfigError):
        HappyMatcher(markers)


def test_a_matcher_pickles_for_workers() -> None:
    matcher = HappyMatcher([":)", THUMBS])
    copy = pickle.loads(pickle.dumps(matcher))
    assert copy.markers == matcher.markers
    assert copy.matches(f"x {THUMBS}{MEDIUM}")
    assert "HappyMatcher" in repr(copy)


def test_the_fast_path_rejects_texts_without_any_markers_first_character() -> None:
    # No code point of the marker in the text: rejected without splitting into clusters, and a
    # text holding the first code point elsewhere in a cluster is still checked properly.
    matcher = HappyMatcher([HEART])
    assert not matcher.matches("plain words " * 100)
    assert not matcher.matches(HEART_ON_FIRE * 3)
    assert matcher.matches(HEART_ON_FIRE + " " + "\u2764")


_EMOJI_POOL = [
    THUMBS,
    MEDIUM,
    "\U0001f3ff",
    HEART,
    "\u2764",
    HEART_ON_FIRE,
    SMILE,
    VS16,
    VS15,
    "\u200d",
    "\U0001f60a",
    "\U0001f469",
    "\U0001f4bb",
    "\U0001f1e8",
    "\U0001f1e6",
    "1",
    "\u20e3",
    ":",
    ")",
    "a",
    " ",
    "\u0301",
]


@settings(max_examples=300)
@given(
    text=st.lists(st.sampled_from(_EMOJI_POOL), max_size=12).map("".join),
    markers=st.lists(
        st.sampled_from([":)", THUMBS, THUMBS + MEDIUM, HEART, SMILE, HEART_ON_FIRE, "\U0001f60a"]),
        min_size=1,
        max_size=3,
    ),
)
def test_matcher_agrees_with_the_reference_on_emoji_soup(text: str, markers: list[str]) -> None:
    assert HappyMatcher(markers).matches(text) is is_happy_reference(text, markers)


@settings(max_examples=200)
@given(text=st.text(), marker=st.text(min_size=1).filter(lambda m: not m.isspace()))
def test_matcher_never_crashes_and_agrees_on_any_unicode(text: str, marker: str) -> None:
    assert HappyMatcher([marker]).matches(text) is is_happy_reference(text, [marker])
