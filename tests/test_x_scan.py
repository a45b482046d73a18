"""The compiled X line scanner (``_speedups.scan_x``) against msgspec.

`count_x_lines` reads the usual X API v2 message with the scanner and hands any line it declines
to the package's msgspec decoder. So wherever the scanner reads a line, msgspec must decode it,
to the same values: the scanner may decline anything, but never accept a line msgspec refuses
or read a field differently. The lines here are X messages with unknown fields, wrong types,
escapes, duplicates and nesting, and then random bytes inserted, deleted and replaced.
"""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from happyhashtags.aggregate import COMPILED
from happyhashtags.formats import x
from happyhashtags.sources import demo
from services import IN_CI

if COMPILED:
    from happyhashtags._speedups import scan_x
elif IN_CI:
    pytest.fail("happyhashtags._speedups is not built", pytrace=False)
else:
    pytest.skip("happyhashtags._speedups is not built", allow_module_level=True)

_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
# Mostly strings the scanner reads. Escaped ones (a newline, a quote, anything non-ASCII under
# ensure_ascii) it reads in a text or a hashtag, and declines elsewhere (an id, a time).
_STRINGS = st.sampled_from(
    ["1", "42", "", "x", "#tag", "é", "😀 :)", "\u2028", "\x7f", "1", "42", "t", "a\nb", 'q"']
) | st.builds(  # long ones, read 16 bytes at a time, with one odd character somewhere
    lambda before, odd, after: "a" * before + odd + "b" * after,
    st.integers(0, 40),
    st.sampled_from(["", "", "", " ", "é", "😀", '"', "\\", "\n", "\x1f"]),
    st.integers(0, 40),
)
_TWEET_FIELDS = ["id", "text", "created_at", "author_id", "entities", "referenced_tweets"]


def _hashtag(draw: st.DrawFn) -> dict[str, object]:
    return draw(
        st.fixed_dictionaries(
            {}, optional={"tag": _STRINGS, "text": _STRINGS, "start": st.integers(0, 9)}
        )
    )


@st.composite
def _tweet(draw: st.DrawFn) -> dict[str, object]:
    tweet: dict[str, object] = {}
    for name in ("id", "text", "created_at", "author_id"):
        if draw(st.booleans()):
            tweet[name] = draw(
                st.sampled_from(["2023-11-14T22:13:20.000Z", "bad"])
                if name == "created_at"
                else _STRINGS
            )
    if draw(st.booleans()):
        tweet["entities"] = {
            "hashtags": [_hashtag(draw) for _ in range(draw(st.integers(0, 3)))],
            "urls": [],
        }
    if draw(st.booleans()):
        tweet["referenced_tweets"] = [
            {"type": draw(st.sampled_from(["retweeted", "quoted", ""])), "id": draw(_STRINGS)}
            for _ in range(draw(st.integers(0, 2)))
        ]
    if draw(st.integers(0, 9)) == 0:
        tweet["note_tweet"] = {"text": "long"}
    if draw(st.integers(0, 3)) == 0:  # a field of another type, or an unknown one
        tweet[draw(st.sampled_from([*_TWEET_FIELDS, "lang", "edit_history_tweet_ids"]))] = draw(
            _JSON
        )
    return tweet


@st.composite
def _line(draw: st.DrawFn) -> bytes:
    message: dict[str, object] = {"data": draw(_tweet())}
    if draw(st.booleans()):
        message["includes"] = {
            "tweets": draw(st.lists(_tweet(), max_size=2)),
            "users": [{"id": "1"}],
        }
    if draw(st.integers(0, 4)) == 0:
        message[
            draw(st.sampled_from(["matching_rules", "id_str", "errors", "includes", "data"]))
        ] = draw(_JSON)
    separators = draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,\t", " :\r\n ")]))
    ascii_only = draw(st.sampled_from([False, False, True]))
    line = json.dumps(message, ensure_ascii=ascii_only, separators=separators).encode()
    if draw(st.integers(0, 5)) == 0:  # a repeated key: msgspec keeps the last one
        line = line[:-1] + b',"data":{"id":"dup"}}'
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2, 3]))):  # random damage
        at = draw(st.integers(0, len(line)))
        byte = draw(st.sampled_from(list(b'{}[]":,\\ 019-+.eEtfnul\x00\x1f\x80\xc3\xff')))
        how = draw(st.sampled_from(["insert", "delete", "replace"]))
        if how == "insert":
            line = line[:at] + bytes([byte]) + line[at:]
        else:
            line = line[:at] + (bytes([byte]) if how == "replace" else b"") + line[at + 1 :]
    return line


def _read(tweet: x._V2Tweet) -> dict[str, object]:
    # What the scanner reports for a tweet msgspec decoded.
    out: dict[str, object] = {"text": tweet.text} if tweet.text else {}
    for name in ("id", "created_at", "author_id"):
        if getattr(tweet, name) is not None:
            out[name] = getattr(tweet, name)
    for ref in tweet.referenced_tweets or ():
        if ref.type == "retweeted":
            out["retweeted"] = ref.id
            break
    if tweet.entities is not None:
        out["hashtags"] = [t for h in tweet.entities.hashtags if (t := h.tag or h.text)]
    assert tweet.note_tweet is None
    return out


def _scanned(tweet: dict[str, object]) -> dict[str, object]:
    # An empty text read is the default text.
    return {k: v for k, v in tweet.items() if not (k == "text" and v == "")}


@settings(max_examples=3000, deadline=None)
@given(line=_line())
@example(line=b'{"data":{"id":"1","text":"a\\nb \\u00fc\\\\ \\" \\/"}}')  # escapes decoded
@example(line=b'{"data":{"text":"\xff"}}')  # not UTF-8: msgspec refuses it
@example(line=b'{"data":{"lang":"\xff"}}')  # ... but not in a field it skips
@example(line=b'{"data":{"x":01}}')
@example(line=b'{"data":{"x":"\\ud800"}}')  # a lone surrogate, even in a skipped field
@example(line=b'{"data":{"x":"\\ud83d\\ude00"}}')  # a pair: msgspec reads it
@example(line=b'{"data":{"id":"1"}} ')
def test_what_the_scanner_reads_msgspec_decodes_alike(line: bytes) -> None:
    scanned = scan_x(line)
    if scanned is None:
        return
    try:
        message = x._decoder.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        pytest.fail(f"the scanner read a line msgspec refuses ({exc}): {line!r}")
    assert message.data is not None
    assert message.id_str is None
    assert message.id is None
    assert message.user is None
    assert not message.errors
    assert not message.delete
    data, included = scanned
    assert _scanned(data) == _read(message.data)
    tweets = message.includes.tweets if message.includes is not None else []
    assert [_scanned(t) for t in included] == [_read(t) for t in tweets]


def test_the_scanner_reads_the_demo_stream_and_declines_the_unusual() -> None:
    lines = list(demo.generate_messages(500, seed=3))
    scanned = [scan_x(line) for line in lines]
    assert None not in scanned
    retweets = [s for s in scanned if s is not None and "retweeted" in s[0]]
    assert retweets
    assert all(s[1] for s in retweets)
    data, _ = scanned[0]
    assert data["hashtags"] == [h.tag for h in x._decoder.decode(lines[0]).data.entities.hashtags]
    for unusual in [
        b'{"data":{"id":"1","text":"\\ud83d"}}',  # a lone surrogate, high ...
        b'{"data":{"id":"1","text":"\\ude00\\ud83d"}}',  # ... or low, or a pair upside down
        b'{"data":{"id":"1","text":"\\ud83d\\u0041"}}',  # a high one before no low one
        b'{"data":{"id":"1","text":"\\ud83d\\ud83d"}}',  # ... or before another high one
        b'{"data":{"id":"\\u0031"}}',  # an escape in an id
        b'{"data":{"id":"1","id":"2"}}',  # duplicate key
        b'{"data":{"id":null}}',
        b'{"data":{"note_tweet":{"text":"long"}}}',
        b'{"data":{"id":"1"},"id_str":"1"}',  # v1.1 fields beside data
        b'{"errors":[]}',
        b'{"data":{"x":' + b"[" * 70 + b"]" * 70 + b"}}",  # deep
        b'{"data":{"entities":{"hashtags":[' + b",".join([b'{"tag":"t"}'] * 33) + b"]}}}",
    ]:
        assert scan_x(unusual) is None, unusual


def test_lines_written_with_ensure_ascii_are_read_as_msgspec_reads_them() -> None:
    # Python's json.dumps escapes every non-ASCII character by default, an emoji as a
    # surrogate pair: texts and hashtags with escapes are read, and decoded as msgspec does.
    lines = [json.dumps(json.loads(line)).encode() for line in demo.generate_messages(400)]
    escaped = [line for line in lines if b"\\u" in line]
    assert any(b"\\ud83" in line for line in escaped)  # emoji among them
    # ... and hashtags with escapes (each generated line's first hashtag follows "tag": ").
    assert any(b"\\u" in line.partition(b'"tag": "')[2][:20] for line in escaped)
    for line in escaped:
        scanned = scan_x(line)
        assert scanned is not None, line
        data = x._decoder.decode(line).data
        assert _scanned(scanned[0]) == _read(data)
    line = (
        b'{"data":{"id":"1","text":"\\ud83d\\ude00 #\\u00fcber",'
        b'"entities":{"hashtags":[{"tag":"\\u00fcber\\ud83d\\ude00"}]}}}'
    )
    assert scan_x(line) == ({"id": "1", "text": "😀 #über", "hashtags": ["über😀"]}, [])


@pytest.mark.parametrize("at", range(0, 40, 3))
@pytest.mark.parametrize(
    ("inside", "read"),
    [
        (b"\x01", False),  # a raw control character: not JSON
        (b"\x00", False),
        (b"\\u0041", True),  # escapes: fine in a skipped string ...
        (b'\\"', True),
        (b"\\x", False),  # ... where they are valid
        (b"\xc3\xa9", True),
        (b"\x7f", True),
    ],
)
def test_every_byte_of_a_long_string_is_checked(at: int, inside: bytes, read: bool) -> None:
    # Long strings are scanned sixteen bytes at a time: a stop byte at any offset must count.
    value = b"a" * at + inside + b"b" * (40 - at)
    skipped = b'{"data":{"id":"1","lang":"' + value + b'"}}'
    assert (scan_x(skipped) is not None) is read
    assert _msgspec_reads(skipped) is read
    text = b'{"data":{"id":"1","text":"' + value + b'"}}'
    scanned = scan_x(text)
    assert (scanned is not None) is read  # the text may hold escapes: the scanner decodes them
    if scanned is not None:
        assert scanned[0]["text"] == x._decoder.decode(text).data.text


def _msgspec_reads(line: bytes) -> bool:
    try:
        x._decoder.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False
    return True
