"""Tests for happyhashtags.text: hashtag extraction (twitter-text rules) and normalization."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from happyhashtags import text as text_module
from happyhashtags.text import extract_hashtags, normalize_hashtag

CONFORMANCE_FILE = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "conformance"
    / "twitter-text-hashtags.yml"
)


def _conformance_params() -> list[Any]:
    # Read when the tests are collected, so each case gets its own test id. A missing or empty file
    # becomes one failing test (never a skip): the conformance cases are the spec.
    if not CONFORMANCE_FILE.is_file():
        return [pytest.param(None, id="conformance-file-missing")]
    data = yaml.safe_load(CONFORMANCE_FILE.read_text(encoding="utf-8"))
    cases = data.get("cases") if isinstance(data, dict) else None
    if not cases:
        return [pytest.param(None, id="conformance-file-has-no-cases")]
    return [pytest.param(case, id=str(case["description"])) for case in cases]


@pytest.mark.parametrize("case", _conformance_params())
def test_twitter_text_conformance(case: dict[str, Any] | None) -> None:
    if case is None:
        pytest.fail(
            f"twitter-text conformance cases not found or empty: {CONFORMANCE_FILE} "
            "(the shared/ folder next to the repository must hold them)"
        )
    text = case["text"]
    expected = case.get("expected") or []
    got = extract_hashtags(text)
    assert got == expected
    # Where the case gives indices ([start, end) of "#tag" in code points), the tags must be the
    # text found there.
    indices = case.get("indices")
    if indices:
        assert len(indices) == len(got)
        for tag, (start, end) in zip(got, indices, strict=True):
            assert text[start] in "#＃"
            assert text[start + 1 : end] == tag


# Extra cases, each a known twitter-text behaviour (checked against its JavaScript library).
EXTRA_CASES = [
    ("emoji right before the hash sign", "I love it😍#happy", ["happy"]),
    ("hashtag followed by another hashtag is rejected", "#tag#tag2", []),
    ("hashtag followed by a fullwidth hash sign is rejected", "#happy＃sad", []),
    ("HTML entity is no hashtag", "It&#x27;s fine &#39; too", []),
    ("hashtag followed by :// is rejected", "see #tag://example", []),
    ("underscores alone are no hashtag", "#_ #___ #_1", []),
    ("leading underscore is kept", "#_tag", ["_tag"]),
    ("all digits are no hashtag", "#2024", []),
    ("digits then letters are a hashtag", "#100DaysOfCode", ["100DaysOfCode"]),
    ("anchor in a URL with protocol", "http://example.com/#anchor", []),
    ("anchor in a URL without protocol", "look: example.com/#tag and #real", ["real"]),
    ("hash sign in a query string", "https://example.com/?q=#section #happy", ["happy"]),
    ("hashtag before a t.co link", "#happy https://t.co/abc123", ["happy"]),
    ("fullwidth hash sign", "I am ＃happy ＃ｈａｐｐｙ", ["happy", "ｈａｐｐｙ"]),
    ("trailing punctuation ends the tag", "#tag. #tag! #tag? #tag, #tag; (#tag)", ["tag"] * 6),
    ("apostrophe ends the tag", "#tag's party", ["tag"]),
    ("line breaks", "first line\n#tag\n#second", ["tag", "second"]),
    ("order and duplicates are kept", "#b #a #b", ["b", "a", "b"]),
    ("Hebrew gershayim and geresh", "#צה״ל #ג׳ירפה", ["צה״ל", "ג׳ירפה"]),
    ("keycap emoji is no hashtag", "#️⃣ #⃣ #tag", ["tag"]),
    ("letter before the hash sign", "foo#bar naïve#tag", []),
    ("C sharp is no hashtag", "I code in C# and F#", []),
    ("double hash sign", "##tag", ["tag"]),
    ("hashtag that looks like a domain", "#hashtag.com", ["hashtag"]),
    ("combining mark is part of the tag", "#café #cafe\u0301", ["café", "cafe\u0301"]),
    ("variation selector ending a rejected match", "#a\ufe0f#b", []),
    ("katakana middle dot", "#ハッシュ・タグ", ["ハッシュ・タグ"]),
    ("zero-width non-joiner inside", "#tag\u200cx", ["tag\u200cx"]),
    ("ideographic space separates", "#happy\u3000#sad", ["happy", "sad"]),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [pytest.param(text, expected, id=name) for name, text, expected in EXTRA_CASES],
)
def test_extra_cases(text: str, expected: list[str]) -> None:
    assert extract_hashtags(text) == expected


def test_no_hash_sign_means_no_hashtags() -> None:
    assert extract_hashtags("") == []
    assert extract_hashtags("no tags here, just example.com/page") == []


@pytest.mark.parametrize("text", ["\ud800#tag", "#tag\udfff", "#\ud800", "\udc00＃x.com/#y"])
def test_lone_surrogates_do_not_raise(text: str) -> None:
    tags = extract_hashtags(text)
    assert all(tag and tag in text for tag in tags)


# --- normalize_hashtag ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "variants",
    [
        pytest.param(["Café", "CAFÉ", "cafe\u0301", "café"], id="accents"),
        pytest.param(["straße", "STRASSE", "Strasse"], id="sharp-s"),
        pytest.param(["ＴＡＧ", "tag", "Tag"], id="fullwidth"),
    ],
)
def test_normalize_hashtag_merges_variants(variants: list[str]) -> None:
    keys = {normalize_hashtag(tag) for tag in variants}
    assert len(keys) == 1
    (key,) = keys
    assert key == normalize_hashtag(key)  # a key is its own key


def test_normalize_hashtag_keeps_distinct_tags_apart() -> None:
    assert normalize_hashtag("happy") != normalize_hashtag("happier")
    assert normalize_hashtag("ＴＡＧ") == "tag"


def test_normalize_hashtag_is_cached() -> None:
    normalize_hashtag.cache_clear()
    normalize_hashtag("CachedTag")
    normalize_hashtag("CachedTag")
    info = normalize_hashtag.cache_info()
    assert info.hits >= 1
    assert info.maxsize is not None  # bounded


# --- properties ------------------------------------------------------------------------------

# Pieces that make the interesting cases likely: hash signs, URL parts, boundaries, marks, emoji
# (repeated ones are drawn more often).
_INTERESTING = st.sampled_from(
    [
        *"##＃ .//?:=&_-@'\n\u3000",
        *"aZé1٣日ー·\u200c\u0301\ufe0e\ufe0f\u20e3😀\ud800",
        "http://",
        "https://",
        "www.",
        ".com",
        ".co",
        ".jp",
        "t.co/",
        "example",
        "tag",
        "#anchor",
        "://",
    ]
)
_INTERESTING_TEXT = st.lists(_INTERESTING, max_size=40).map("".join)
# Any code point, lone surrogates included.
_ANY_TEXT = st.text(st.characters(exclude_categories=()))


def _reference_extract(text: str) -> list[str]:
    """twitter-text's algorithm written plainly, without extract_hashtags' shortcuts.

    It uses the module's own hashtag and URL expressions (which the conformance and extra cases
    pin down) but scans the whole text for URLs and checks every match the slow way.
    """
    tags: list[tuple[int, int, str | None]] = []
    previous_end = -1
    for match in text_module._UNCHECKED_HASHTAG_RE.finditer(text):
        start = match.start()
        if start == previous_end and text[start - 1] in "\ufe0e\ufe0f":
            continue
        previous_end = match.end()
        if not text.startswith(("#", "＃", "://"), previous_end):
            tags.append((start, previous_end, match.group(1)))
    urls: list[tuple[int, int, str | None]] = [
        (start, end, None) for start, end in text_module._url_spans(text, 0, len(text))
    ]
    kept: list[str] = []
    last_end = -1
    for start, end, tag in sorted(tags + urls, key=lambda entity: entity[0]):
        if last_end > start:
            continue
        last_end = end
        if tag is not None:
            kept.append(tag)
    return kept


@settings(max_examples=300, deadline=None)
@given(st.one_of(_ANY_TEXT, _INTERESTING_TEXT))
@example("\ud800#tag")
def test_extract_never_raises_and_returns_substrings(text: str) -> None:
    tags = extract_hashtags(text)
    assert isinstance(tags, list)
    for tag in tags:
        assert tag
        assert tag in text
        assert "#" not in tag
        assert "＃" not in tag
        assert not any(char.isspace() for char in tag)


@settings(max_examples=300, deadline=None)
@given(st.one_of(_ANY_TEXT, _INTERESTING_TEXT))
def test_extracted_tag_round_trips(text: str) -> None:
    for tag in extract_hashtags(text):
        assert extract_hashtags("#" + tag) == [tag]
        assert extract_hashtags(f"so #{tag} today") == [tag]


@settings(max_examples=300, deadline=None)
@given(st.one_of(_ANY_TEXT, _INTERESTING_TEXT), st.one_of(_ANY_TEXT, _INTERESTING_TEXT))
def test_space_separated_texts_extract_independently(first: str, second: str) -> None:
    # Neither hashtags nor URLs span a space.
    assert extract_hashtags(first + " " + second) == extract_hashtags(first) + extract_hashtags(
        second
    )


@settings(max_examples=500, deadline=None)
@given(st.one_of(_INTERESTING_TEXT, _ANY_TEXT))
def test_shortcuts_agree_with_plain_algorithm(text: str) -> None:
    # extract_hashtags takes several shortcuts for speed (ASCII-only matching, skipping the URL
    # scan, scanning only the words around a hashtag); they must never change the result.
    assert extract_hashtags(text) == _reference_extract(text)


def test_reference_extract_matches_known_cases() -> None:
    # Keeps the property above honest: the reference itself gets the basics right.
    assert _reference_extract("#a http://x.com/#b ＃c") == ["a", "c"]
