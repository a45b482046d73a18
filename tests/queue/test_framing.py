"""Several posts per JetStream message: the lines come back as they went in, in order, and no
message passes its limits (but for a single longer line, which travels alone)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from happyhashtags.queue.framing import frame_id, frames, normalize_line, split_message

_lines = st.lists(st.binary(min_size=0, max_size=40).map(normalize_line), max_size=60)


@given(_lines, st.integers(1, 8), st.integers(1, 120))
def test_frames_split_and_join_back_to_the_lines_within_their_limits(
    lines: list[bytes], max_lines: int, max_bytes: int
) -> None:
    got = list(frames(lines, max_lines=max_lines, max_bytes=max_bytes))
    assert [line for frame in got for line in frame] == lines
    for frame in got:
        payload = b"\n".join(frame)
        assert split_message(payload) == list(frame)
        assert 1 <= len(frame) <= max_lines
        assert len(frame) == 1 or len(payload) <= max_bytes
    # Greedy: a frame ends only where the next line would break a limit.
    for frame, following in itertools.pairwise(got):
        grown = len(b"\n".join([*frame, following[0]]))
        assert len(frame) == max_lines or grown > max_bytes


def test_a_line_longer_than_the_byte_limit_travels_alone() -> None:
    lines = [b"a", b"b" * 50, b"c", b"d"]
    assert list(frames(lines, max_lines=10, max_bytes=10)) == [[b"a"], [b"b" * 50], [b"c", b"d"]]


def test_newlines_inside_a_json_line_become_spaces_and_it_means_the_same() -> None:
    import msgspec

    pretty = b'{"data":\n {"id": "1",\n  "text": "a\\nb #x"}}'
    line = normalize_line(pretty)
    assert b"\n" not in line
    assert msgspec.json.decode(line) == msgspec.json.decode(pretty)
    assert normalize_line(b"plain") == b"plain"


def test_the_id_of_a_message_names_its_lines_and_changes_with_them() -> None:
    one = frame_id([b"a", b"b"], b"a\nb")
    assert one.startswith("lines:2:")
    assert one == frame_id([b"a", b"b"], b"a\nb")
    assert one != frame_id([b"a", b"c"], b"a\nc")


def test_max_lines_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        list(frames([b"a"], max_lines=0))
