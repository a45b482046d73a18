"""The compiled counting loops and X partition keys against their pure-Python twins.

``_speedups.add_posts`` must count posts exactly as ``aggregate._py_add_many`` does, and
``_speedups.count_x_lines`` must decode and count X lines exactly as ``formats.x.py_count_x_lines``
(`decode_x` per line, then `PostCounter.add_many`) does: the same counts, statistics, skip
reasons, rejected lines and counter state, on the same inputs. ``_speedups.x_author_key`` must
find the partition key that decoding finds, or decline.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import subprocess
import sys
import zlib
from collections.abc import Iterator

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from happyhashtags import aggregate
from happyhashtags.aggregate import COMPILED, PostCounter
from happyhashtags.formats import LinesCounted, x
from happyhashtags.formats.x import count_x_lines, py_count_x_lines, py_x_undecodable
from happyhashtags.happy import HappyMatcher
from happyhashtags.model import Post
from happyhashtags.sessions import PySessionTracker
from happyhashtags.sources.base import LineBlock
from happyhashtags.sources.demo import generate_messages
from services import IN_CI

if COMPILED:
    from happyhashtags._speedups import (
        add_posts,
        set_scan_helper,
        x_author_key,
        x_partition,
        x_undecodable,
    )
    from happyhashtags._speedups import count_x_lines as compiled_count_x_lines
elif IN_CI:
    pytest.fail("happyhashtags._speedups is not built", pytrace=False)
else:
    pytest.skip("happyhashtags._speedups is not built", allow_module_level=True)

_TAGS = st.sampled_from(["cats", "Cats", "CATS", "dogs", "ÜBER", "über", "x\x00y", "ﬁsh", "a"])
# The last four hold characters JSON escapes (a newline, a quote, a tab, NUL): the scanner
# decodes a text's escapes.
_TEXTS = st.sampled_from(
    [
        *["", "plain", "so :) good", "#cats and #Dogs", "👍🏽 #cats", "#ü :)", "a#b", "＃wide 😀"],
        *["☺️", 'a\n#b "q" :\\)', "tab\t:) #x/y", "nul\x00#z :)", "#ü\n☺"],
    ]
)
_TIMES = st.one_of(
    st.integers(min_value=-50, max_value=400).map(lambda t: t * 9.5),
    st.sampled_from([-0.5, -1e-300, 0.0, 3599.9999999999995, 3600.0, 1e15, -7.2e18, 9.3e18]),
)
_POSTS = st.builds(
    Post,
    id=st.one_of(st.none(), st.sampled_from(["1", "2", "3", "42", "x", "00", "9" * 20])),
    author=st.one_of(st.none(), st.sampled_from(["a", "b", "c", "é"])),
    event_time=_TIMES,
    text=_TEXTS,
    hashtags=st.one_of(st.none(), st.lists(_TAGS, max_size=4).map(tuple)),
    is_retweet=st.booleans(),
)
_COUNTERS = st.fixed_dictionaries(
    {
        "bucket_seconds": st.sampled_from([1, 60, 3600]),
        "session_gap": st.sampled_from([0.0, 5.0, 1800.0]),
        "count_retweets": st.booleans(),
        "dedupe_capacity": st.sampled_from([0, 3, 1000]),
        "allowed_lateness": st.sampled_from([0.0, 100.0]),
        "max_sessions": st.sampled_from([2, 1000]),
        "max_session_keys": st.sampled_from([3, 1000]),
        "happy": st.sampled_from(
            [None, HappyMatcher([":)", "good"]), HappyMatcher(["👍", ":)"]), HappyMatcher(["ü\n"])]
        ),
    }
)


def _state(counter: PostCounter) -> tuple[object, ...]:
    sessions = counter.sessions
    return (
        counter.drain(),
        counter.stats,
        list(counter._ids.keys()),
        pickle.dumps(sessions) if sessions is not None else None,
    )


@settings(max_examples=300, deadline=None)
@given(options=_COUNTERS, batches=st.lists(st.lists(_POSTS, max_size=12), max_size=5))
def test_add_posts_counts_as_the_python_loop(
    options: dict[str, object], batches: list[list[Post]]
) -> None:
    compiled, python = PostCounter(**options), PostCounter(**options)  # type: ignore[arg-type]
    assert compiled.compiled
    for batch in batches:
        add_posts(compiled, batch)
        aggregate._py_add_many(python, batch)
        assert compiled.pending == python.pending
    assert _state(compiled) == _state(python)


@pytest.mark.parametrize("when", [math.nan, math.inf, -math.inf])
def test_times_that_make_no_bucket_fail_alike(when: float) -> None:
    posts = [Post("1", "a", 10.0, "#x"), Post("2", "a", when, "#y :)")]
    compiled, python = PostCounter(), PostCounter()
    with pytest.raises((ValueError, OverflowError)) as raised:
        add_posts(compiled, posts)
    with pytest.raises(type(raised.value)):
        aggregate._py_add_many(python, posts)
    assert compiled.stats == python.stats
    assert compiled.drain() == python.drain()


def test_add_many_uses_the_compiled_loop_only_on_compiled_state() -> None:
    counter = PostCounter()
    assert counter.compiled
    counter._ids = aggregate.PyRecentIds(10)
    assert not counter.compiled
    counter.add_many([Post("1", "a", 0.0, "#x")])  # the Python loop takes any state
    assert counter.drain() == {(0, "x"): [1, 0]}


# -- X lines ---------------------------------------------------------------------------------

_RECEIVED = 1_700_000_000.0
_CREATED = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "2023-11-14T22:13:20.000Z",
            "2023-11-14T22:13:20Z",
            "2023-11-14T22:13:20.123456Z",
            "2023-11-14T23:13:20+01:00",  # not X's shape: parse_v2_time reads it
            "2023-11-14T22:13:20",
            "2023-11-14T22:20:00.000Z",  # 400 s after the read time: clamped to it
            "2099-01-01T00:00:00.000Z",
            "2023-02-30T00:00:00.000Z",  # impossible: bad_time
            "yesterday",
        ]
    ),
)
_HASHTAGS = st.lists(
    st.fixed_dictionaries(
        {}, optional={"tag": st.sampled_from(["cats", "", "Dogs"]), "text": st.just("v1tag")}
    ),
    max_size=3,
)
_ENTITIES = st.one_of(st.none(), st.builds(lambda h: {"hashtags": h}, _HASHTAGS), st.just({}))


@st.composite
def _v2_message(draw: st.DrawFn) -> dict[str, object]:
    tweet: dict[str, object] = {
        "id": draw(st.sampled_from(["1", "2", "3", "77", "x7", "12345678901234567890"])),
        "text": draw(_TEXTS),
        "author_id": draw(st.sampled_from(["10", "11", "12", "é", "a-long-author-id"])),
    }
    created = draw(_CREATED)
    if created is not None:
        tweet["created_at"] = created
    entities = draw(_ENTITIES)
    if entities is not None:
        tweet["entities"] = entities
    message: dict[str, object] = {"data": tweet}
    kind = draw(st.sampled_from(["plain", "reply", "retweet", "note", "empty-note", "no-id"]))
    if kind == "reply":
        tweet["referenced_tweets"] = [{"type": "replied_to", "id": "5"}, {"type": "quoted"}]
    elif kind == "retweet":
        tweet["referenced_tweets"] = [{"type": "retweeted", "id": "5"}]
        original = {"id": "5", "text": "#orig :)", "entities": {"hashtags": [{"tag": "orig"}]}}
        message["includes"] = {"tweets": draw(st.sampled_from([[original], [], [{"id": "6"}]]))}
    elif kind == "note":
        tweet["note_tweet"] = {"text": "long #note :)", "entities": {"hashtags": [{"tag": "note"}]}}
    elif kind == "empty-note":
        tweet["note_tweet"] = {"text": ""}
    elif kind == "no-id":
        del tweet["id"]
    return message


_LINES = st.one_of(
    # Raw UTF-8 (as X sends it) or \u escapes (ensure_ascii): the compiled scanner reads both
    # in texts and hashtags, surrogate pairs too.
    st.builds(
        lambda m, ascii_only: json.dumps(m, ensure_ascii=ascii_only).encode(),
        _v2_message(),
        st.booleans(),
    ),
    st.sampled_from(
        [
            b"",
            b"   ",
            b"{",
            b"[]",
            b'{"data": 5}',
            b"{}",
            b'{"errors": [{"title": "x"}]}',
            b'{"delete": {"status": {"id": 1}}}',
            b'{"limit": {"track": 3}}',
            b'{"id_str": "9", "text": "v1 #One :)", "user": {"id_str": "10"},'
            b' "created_at": "Tue Nov 14 22:13:20 +0000 2023",'
            b' "entities": {"hashtags": [{"text": "One"}]}}',
            b'{"id_str": "9", "text": "v1", "created_at": "Nope"}',
            b'{"data": {"id": "8", "text": "#t", "created_at": 7}}',
        ]
    ),
)


@contextlib.contextmanager
def _scan_helper(min_lines: int | None) -> Iterator[None]:
    """count_x_lines with a second scanning thread from `min_lines` lines (None: never)."""
    previous = set_scan_helper(min_lines)
    try:
        yield
    finally:
        set_scan_helper(previous)


def _assert_answered_alike(answer: LinesCounted, expected: LinesCounted) -> None:
    """The same posts, skipped reasons, and rejected lines with the same errors."""
    posts, skipped, rejects = answer
    assert (posts, skipped) == expected[:2]
    assert [(i, e.reason, e.detail) for i, e in rejects] == [
        (i, e.reason, e.detail) for i, e in expected[2]
    ]


# The helper thread from the first line, or none: both must count alike.
_HELPER = pytest.mark.parametrize("helper", [1, None], ids=["helper", "one-thread"])


@_HELPER
@settings(max_examples=300, deadline=None)
@given(
    options=_COUNTERS,
    batches=st.lists(st.lists(_LINES, max_size=10), max_size=4),
)
def test_count_x_lines_counts_as_decode_x_and_add_many(
    helper: int | None, options: dict[str, object], batches: list[list[bytes]]
) -> None:
    compiled, python = PostCounter(**options), PostCounter(**options)  # type: ignore[arg-type]
    for lines in batches:
        with _scan_helper(helper):
            answer = compiled_count_x_lines(compiled, lines, _RECEIVED)
        _assert_answered_alike(answer, py_count_x_lines(python, lines, _RECEIVED))
    assert _state(compiled) == _state(python)


@_HELPER
@settings(max_examples=200, deadline=None)
@given(
    options=_COUNTERS,
    batches=st.lists(
        st.lists(_LINES.filter(lambda line: b"\n" not in line), min_size=1, max_size=10),
        max_size=4,
    ),
)
def test_a_line_block_is_counted_as_its_lines(
    helper: int | None, options: dict[str, object], batches: list[list[bytes]]
) -> None:
    # Files hand over LineBlocks, read in place (copied once, a NUL after each line, for the
    # scanner); a list of the same lines defines the answer.
    compiled, python = PostCounter(**options), PostCounter(**options)  # type: ignore[arg-type]
    for lines in batches:
        with _scan_helper(helper):
            answer = compiled_count_x_lines(compiled, LineBlock(b"\n".join(lines)), _RECEIVED)
        _assert_answered_alike(answer, py_count_x_lines(python, lines, _RECEIVED))
    assert _state(compiled) == _state(python)


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(_LINES, max_size=12))
def test_the_undecodable_lines_are_those_decode_x_refuses(lines: list[bytes]) -> None:
    # ingest's check: the lines the scanner reads are not decoded, and must be decodable.
    assert x_undecodable(lines, _RECEIVED) == py_x_undecodable(lines, _RECEIVED)


def test_the_undecodable_check_decodes_what_it_cannot_scan() -> None:
    lines = [
        *generate_messages(50, seed=9),
        b"{",
        bytearray(b'{"data": 5}'),  # not bytes: decoded, and refused
        b'{"data": {"id": "8", "text": "#t", "created_at": "not a time"}}',
        b'{"id_str": "9", "text": "v1", "user": {"id_str": "10"}}',  # v1.1: decoded, fine
    ]
    assert x_undecodable(lines, _RECEIVED) == [50, 51, 52]  # type: ignore[arg-type]


@pytest.mark.parametrize("block", [True, False], ids=["block", "list"])
def test_a_second_thread_scanning_ahead_counts_a_large_batch_alike(block: bool) -> None:
    # Thousands of generated lines (repeated ids, spam sessions, retweets), with a few that
    # msgspec must read among them: the helper thread races ahead of the counting.
    lines = list(generate_messages(6000, seed=3, authors=300, vocabulary=400))
    lines[100:6000:700] = [b"{", b'{"data": 5}', *[b"   "] * 7][: len(lines[100:6000:700])]
    lines += lines[:500]  # copies: counted once
    batch: list[bytes] | LineBlock = LineBlock(b"\n".join(lines)) if block else lines
    options = {"session_gap": 1800.0, "dedupe_capacity": 10_000}
    counters = {}
    for helper in (1, None):
        counter = PostCounter(**options)  # type: ignore[arg-type]
        with _scan_helper(helper):
            answer = compiled_count_x_lines(counter, batch, _RECEIVED)
        counters[helper] = (answer[0], answer[1], [i for i, _ in answer[2]], _state(counter))
    python = PostCounter(**options)  # type: ignore[arg-type]
    expected = py_count_x_lines(python, lines, _RECEIVED)
    assert counters[1] == counters[None]
    assert counters[1][:3] == (expected[0], expected[1], [i for i, _ in expected[2]])
    assert counters[1][3] == _state(python)
    assert counters[1][3][1].duplicates == 500 - 1  # the copies, less a "{" among them


@pytest.mark.parametrize("cpus", [1, 2])
def test_the_scan_helper_is_off_where_the_process_may_run_on_one_cpu(cpus: int) -> None:
    # Decided at import from the CPUs the process may run on (taskset, cgroups' cpusets).
    allowed = min(cpus, len(os.sched_getaffinity(0)))
    expected = "256" if allowed >= 2 else "None"
    code = (
        f"import os; os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:{cpus}]); "
        "from happyhashtags import _speedups; print(_speedups.set_scan_helper(None))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == expected


@_HELPER
def test_lines_that_are_not_bytes_are_decoded_on_either_thread(helper: int | None) -> None:
    # Only bytes lines are scanned (in place); any other buffer goes to msgspec, whichever
    # thread claims it.
    lines = list(generate_messages(600, seed=5))
    mixed: list[bytes | bytearray | memoryview] = [
        bytearray(line) if i % 3 == 1 else memoryview(line) if i % 3 == 2 else line
        for i, line in enumerate(lines)
    ]
    compiled, python = PostCounter(), PostCounter()
    with _scan_helper(helper):
        answer = compiled_count_x_lines(compiled, mixed, _RECEIVED)
    assert answer[:2] == py_count_x_lines(python, lines, _RECEIVED)[:2]
    assert answer[0] == 600
    assert _state(compiled) == _state(python)


def test_the_scan_helper_setting_is_checked_and_returned() -> None:
    previous = set_scan_helper(5)
    try:
        assert set_scan_helper(None) == 5
        assert set_scan_helper(7) is None
        with pytest.raises(ValueError, match="at least 1"):
            set_scan_helper(0)
        assert set_scan_helper(7) == 7
    finally:
        set_scan_helper(previous)


def test_count_x_lines_takes_the_compiled_path_only_on_compiled_state() -> None:
    line = json.dumps({"data": {"id": "1", "text": "#a", "author_id": "2"}}).encode()
    counter = PostCounter()
    counter._ids = aggregate.PyRecentIds(10)
    assert count_x_lines(counter, [line, b"{"], _RECEIVED)[0] == 1
    assert counter.drain() == {(int(_RECEIVED // 3600) * 3600, "a"): [1, 0]}


def test_the_scanned_hashtag_cache_is_bounded_and_pickles_empty() -> None:
    # Hashtags as written -> keys, kept across batches; cleared past 2**16 like _norm.
    def line(i: int, tag: str) -> bytes:
        data = {
            "id": str(i),
            "text": "x",
            "author_id": "1",
            "entities": {"hashtags": [{"tag": tag}]},
        }
        return json.dumps({"data": data}).encode()

    counter = PostCounter(session_gap=0)
    compiled_count_x_lines(counter, [line(i, f"Tag{i}") for i in range(70_000)], _RECEIVED)
    assert 0 < len(counter._raw_keys) <= 65_536  # type: ignore[arg-type]
    copy = pickle.loads(pickle.dumps(counter))
    assert len(copy._raw_keys) == 0
    # After the clear, and in the copy, a hashtag seen before still gets its own key.
    again = [line(100_000 + i, f"Tag{i}") for i in range(0, 70_000, 7_000)]
    compiled_count_x_lines(counter, again, _RECEIVED)
    compiled_count_x_lines(copy, again, _RECEIVED)
    bucket = int(_RECEIVED // 3600) * 3600
    expected = {(bucket, f"tag{i}"): [2 if i % 7_000 == 0 else 1, 0] for i in range(70_000)}
    assert counter.drain() == expected
    assert copy.drain() == expected


# -- X partition keys --------------------------------------------------------------------------

_AUTHORS = st.sampled_from(["10", "é1", 'a"b', "a\\b", "", "\u2028"])


@st.composite
def _keyed_line(draw: st.DrawFn) -> bytes:
    message = draw(_v2_message())
    data = message["data"]
    assert isinstance(data, dict)
    if draw(st.booleans()):
        data["author_id"] = draw(_AUTHORS)
    if draw(st.booleans()):
        data["entities"] = {"author_id": "nested", "x": [{"author_id": "deeper"}]}
    if draw(st.booleans()):
        message["includes"] = {"tweets": [{"id": "5", "author_id": "other"}], "users": [{}]}
    shape = draw(st.sampled_from(["as is", "no data", "data null", "data str", "v1"]))
    if shape == "no data":
        del message["data"]
    elif shape == "data null":
        message["data"] = None
    elif shape == "data str":
        message["data"] = "x"
    elif shape == "v1":
        message["user"] = {"id_str": draw(_AUTHORS)}
        message["id_str"] = "9"
    separators = draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,\t", " :\r\n ")]))
    text = json.dumps(message, ensure_ascii=draw(st.booleans()), separators=separators)
    tail = draw(
        st.sampled_from(
            ["", " ", ',"data":{"author_id":"dup"}', ',"\\u0064ata":{"id":"1"}', "x", "}", "]"]
        )
    )
    if draw(st.booleans()):  # a key spelled with an escape: the same key to a decoder
        text = text.replace('"author_id"', '"author\\u005fid"', 1)
    if tail.startswith(","):
        text = text[:-1] + tail + "}"
    else:
        text += tail
    line = text.encode()
    cut = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=len(line))))
    return line if cut is None else line[:cut]


def _decodes(line: bytes) -> bool:
    try:
        x._probe.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False
    return True


@settings(max_examples=1500, deadline=None)
@given(line=_keyed_line())
def test_the_author_key_scan_agrees_with_the_decoding_probe(line: bytes) -> None:
    # Where the line decodes, the scan either finds what the decoder finds or declines (None);
    # a line that does not decode is a dead letter in any worker, so its key does not matter.
    scanned = x_author_key(line)
    assert scanned is None or isinstance(scanned, bytes)
    if _decodes(line):
        expected = x._probe_key(line)
        assert scanned in (None, expected)
        assert x.partition_key_x(line) == expected


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(
        st.one_of(_keyed_line(), _keyed_line().map(bytearray), st.binary(max_size=8)), max_size=8
    ),
    table=st.binary(min_size=1, max_size=20),
)
def test_the_compiled_partitioner_spreads_lines_as_the_partition_key_does(
    lines: list[bytes], table: bytes
) -> None:
    # zlib's CRC-32 of each line's partition key picks its part, computed in C where the
    # author scan reads the key, and of the probe's key elsewhere.
    expected = bytes(table[zlib.crc32(x.partition_key_x(line)) % len(table)] for line in lines)
    assert x_partition(lines, table, x.partition_key_x) == expected
    assert x.partition_x_lines(lines, table) == expected
    assert x._py_partition(lines, table, x.partition_key_x) == expected
    # A LineBlock (what files hand over) is read in place, with the same parts.
    plain = [bytes(line) for line in lines if b"\n" not in line]
    block = LineBlock(b"\n".join(plain))
    expected = bytes(table[zlib.crc32(x.partition_key_x(line)) % len(table)] for line in block)
    assert x_partition(block, table, x.partition_key_x) == expected


def test_the_author_key_scan_reads_the_usual_message() -> None:
    line = json.dumps(
        {"data": {"id": "1", "text": "t", "author_id": "42"}, "includes": {"users": [{}]}}
    ).encode()
    assert x_author_key(line) == b"42"
    assert x_author_key(line.replace(b'"author_id": "42"', b'"authorx": "42"')) == b"1"
    assert x_author_key(b'{"data": {"id": "1"}, "data": null}') is None


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "python"])
@pytest.mark.parametrize("field", ["id", "author"])
def test_a_post_with_a_non_str_id_or_author_is_a_type_error_in_both_builds(
    compiled: bool, field: str
) -> None:
    counter = PostCounter()
    if not compiled:
        counter._ids = aggregate.PyRecentIds()
        counter._sessions = PySessionTracker(gap=1800.0)
    assert counter.compiled is compiled
    values: dict[str, object] = {"id": "1", "author": "a", field: 7}
    post = Post(event_time=0.0, text="#x", **values)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        counter.add_many([post])
