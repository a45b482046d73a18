"""JSON Lines files and stdin: compression detected by content, globs, errors."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import pickle
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from happyhashtags.config import load_settings
from happyhashtags.errors import SourceError
from happyhashtags.sources import FileSource, StdinSource, base, open_source
from happyhashtags.sources.base import Batch, LineBlock
from happyhashtags.sources.files import _batch, _read_lines, expand_paths

LINES = [b'{"data": {"id": "%d", "text": "#t%d"}}' % (i, i) for i in range(10)]
BODY = b"\n".join(LINES) + b"\n"


def _zstd(data: bytes) -> bytes:
    # Two frames: readers must go on across frame boundaries.
    half = len(data) // 2
    compressor = zstandard.ZstdCompressor()
    return compressor.compress(data[:half]) + compressor.compress(data[half:])


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "plain": lambda data: data,
    "gzip": gzip.compress,
    "bzip2": bz2.compress,
    "xz": lzma.compress,
    "zstd": _zstd,
}
# Names that lie about the content: detection must look at the bytes.
MISLEADING = {"plain": "a.gz", "gzip": "b.txt", "bzip2": "c.zst", "xz": "d.bz2", "zstd": "e.xz"}


def _read(source: FileSource | StdinSource) -> list[bytes]:
    return [line for batch in source.batches() for line in batch.lines]


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_compression_is_detected_by_content(tmp_path: Path, kind: str) -> None:
    path = tmp_path / MISLEADING[kind]
    path.write_bytes(COMPRESSORS[kind](BODY))
    source = FileSource([str(path)], clock=lambda: 123.0)
    batches = list(source.batches())
    assert [line for b in batches for line in b.lines] == LINES  # no line terminators
    assert batches[0].origin == str(path)
    assert batches[0].first_line == 1
    assert batches[0].received_at == 123.0
    assert source.name == str(path)


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_stdin_detects_compression_too(kind: str) -> None:
    stream = io.BytesIO(COMPRESSORS[kind](BODY))
    assert _read(StdinSource(stream=stream)) == LINES


def test_a_last_line_without_newline_and_crlf_endings(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b"one\r\ntwo\n\nthree")
    assert _read(FileSource([str(path)])) == [b"one", b"two", b"", b"three"]
    assert [line.strip() for line in _read(StdinSource(stream=io.BytesIO(b"a\nb")))] == [
        b"a",
        b"b",
    ]


def test_big_files_come_in_numbered_batches(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl.gz"
    # About 3 MB: lines cross the boundaries of the chunks the source reads.
    path.write_bytes(gzip.compress(b"".join(b"%d %s\n" % (i, b"x" * 300) for i in range(10_000))))
    batches = list(FileSource([str(path)]).batches())
    assert len(batches) > 2
    assert [b.first_line for b in batches] == [
        1 + sum(len(x.lines) for x in batches[:i]) for i in range(len(batches))
    ]
    assert [int(line.split()[0]) for b in batches for line in b.lines] == list(range(10_000))
    assert all(line.endswith(b"x" * 300) for b in batches for line in b.lines)


def test_globs_expand_sorted_and_several_patterns_are_read_in_order(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name, kind in [("2.jsonl", "plain"), ("1.jsonl.gz", "gzip"), ("sub/3.jsonl", "zstd")]:
        (tmp_path / name).write_bytes(COMPRESSORS[kind](name.encode() + b"\n"))
    (tmp_path / "notes.md").write_text("no")
    source = FileSource([str(tmp_path / "*.jsonl*"), str(tmp_path / "sub" / "*.jsonl")])
    assert _read(source) == [b"1.jsonl.gz", b"2.jsonl", b"sub/3.jsonl"]
    recursive = expand_paths(str(tmp_path / "**" / "*.jsonl"))
    assert [p.name for p in recursive] == ["2.jsonl", "3.jsonl"]
    settings = load_settings({}, environ={})
    both = open_source(settings, f"{tmp_path / '2.jsonl'},{tmp_path / 'sub' / '3.jsonl'}")
    assert _read(both) == [b"2.jsonl", b"sub/3.jsonl"]  # type: ignore[arg-type]


def test_missing_files_empty_globs_and_directories_are_source_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        FileSource([str(tmp_path / "missing.jsonl")])
    with pytest.raises(SourceError, match="no files match"):
        FileSource([str(tmp_path / "*.nothing")])
    with pytest.raises(SourceError, match="directory"):
        FileSource([str(tmp_path)])


def test_a_corrupt_compressed_file_is_a_source_error_after_its_good_lines(tmp_path: Path) -> None:
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(BODY * 2000)[:-200])
    source = FileSource([str(path)])
    got: list[bytes] = []

    def read_all() -> None:
        for batch in source.batches():
            got.extend(batch.lines)

    with pytest.raises(SourceError, match="cannot read"):
        read_all()
    assert got
    assert got[: len(LINES)] == LINES


def test_close_stops_between_files(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"{i}.jsonl").write_bytes(b"%d\n" % i)
    source = FileSource([str(tmp_path / "*.jsonl")])
    batches = source.batches()
    assert next(batches).lines == [b"0"]
    source.close()
    assert list(batches) == []


def test_stdin_yields_each_line_of_a_live_pipe_as_it_arrives() -> None:
    read_fd, write_fd = os.pipe()
    reader = os.fdopen(read_fd, "rb")
    source = StdinSource(stream=reader)
    batches = source.batches()
    received: list[Batch] = []
    got_first = threading.Event()

    def consume() -> None:
        for batch in batches:
            received.append(batch)
            got_first.set()

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    os.write(write_fd, b'{"a": 1}\n{"b":')
    assert got_first.wait(10), "the first complete line was not yielded while the pipe was open"
    assert [line for b in received for line in b.lines] == [b'{"a": 1}']
    os.write(write_fd, b" 2}\n")
    os.write(write_fd, b"tail without newline")
    os.close(write_fd)
    thread.join(10)
    assert not thread.is_alive()
    assert [line for b in received for line in b.lines] == [
        b'{"a": 1}',
        b'{"b": 2}',
        b"tail without newline",
    ]
    assert [b.origin for b in received] == ["stdin"] * len(received)
    assert received[-1].first_line == 3
    reader.close()


def test_open_source_names_dash_for_stdin() -> None:
    settings = load_settings({"source": "-"}, environ={})
    assert isinstance(open_source(settings), StdinSource)


def test_a_plain_file_comes_in_line_blocks_and_a_crlf_file_in_lists(tmp_path: Path) -> None:
    # A LineBlock keeps a read's whole lines as one bytes object (a line counter reads them in
    # place); CRLF lines are split and trimmed as before.
    lines = LINES * 8000  # 2.8 MB: several reads (the one after the sniffing is joined)
    body = b"\n".join(lines) + b"\n"
    plain, crlf = tmp_path / "plain.jsonl", tmp_path / "crlf.jsonl"
    plain.write_bytes(b"\xef\xbb\xbf" + body)
    crlf.write_bytes(body.replace(b"\n", b"\r\n"))
    batches = list(FileSource([str(plain)]).batches())
    assert any(isinstance(batch.lines, LineBlock) for batch in batches)
    assert [line for batch in batches for line in batch.lines] == lines
    batches = list(FileSource([str(crlf)]).batches())
    assert not any(isinstance(batch.lines, LineBlock) for batch in batches)
    assert [line for batch in batches for line in batch.lines] == lines
    # A file's first block loses its byte order mark like a first list does.
    first = _batch(LineBlock(b"\xef\xbb\xbf" + b"\n".join(LINES)), 0.0, "f", 1)
    assert isinstance(first.lines, LineBlock)
    assert first.lines == LINES


@given(
    data=st.binary(max_size=300)
    | st.lists(st.sampled_from([b"\n", b"ab", b"\r\n", b"\x00"])).map(b"".join)
)
def test_newlines_are_counted_as_bytes_count_counts_them(data: bytes) -> None:
    assert base._count_newlines(data) == base._py_count_newlines(data) == data.count(b"\n")


def test_a_line_block_reads_like_the_list_of_its_lines() -> None:
    lines = [b'{"a": 1}', b"", b"x y", b"\xff"]
    block = LineBlock(b"\n".join(lines))
    assert len(block) == 4
    assert list(block) == lines
    assert [block[i] for i in range(-4, 4)] == lines + lines
    assert block[1:3] == lines[1:3]
    assert block == lines
    assert lines == block
    assert block == LineBlock(b"\n".join(lines))
    assert block != lines[:3]
    assert block != b"\n".join(lines)
    assert "LineBlock([" in repr(block)
    with pytest.raises(IndexError):
        block[4]
    assert len(LineBlock(b"")) == 1  # one empty line, as b"".split(b"\n") has


@given(
    lines=st.lists(st.binary(max_size=12).map(lambda line: line.replace(b"\n", b"")), min_size=1),
    count=st.integers(1, 4),
    data=st.data(),
)
def test_a_line_block_spreads_its_lines_in_order(
    lines: list[bytes], count: int, data: st.DataObject
) -> None:
    parts = data.draw(st.binary(min_size=len(lines), max_size=len(lines)))
    parts = bytes(part % count for part in parts)
    block = LineBlock(b"\n".join(lines))
    pairs = list(zip(lines, parts, strict=True))
    expected = [[line for line, p in pairs if p == k] or None for k in range(count)]
    assert block.spread(parts, count) == expected
    joined = [None if part is None else b"\n".join(part) for part in expected]
    assert base._py_split_lines(block.block, parts, count) == joined


@pytest.mark.parametrize("split", [base._split_lines, base._py_split_lines])
def test_spreading_a_line_block_refuses_parts_that_do_not_fit(
    split: Callable[[bytes, bytes, int], list[bytes | None]],
) -> None:
    with pytest.raises(ValueError, match="2 parts for a block of 3 lines"):
        split(b"a\nb\nc", bytes([0, 1]), 2)
    with pytest.raises(ValueError, match="part 2 of line 1 is not below 2"):
        split(b"a\nb\nc", bytes([0, 2, 1]), 2)
    with pytest.raises(ValueError, match="count must be positive"):
        split(b"a", bytes([0]), 0)


def test_a_line_block_pickles_as_its_block() -> None:
    block = LineBlock(b"a\n\nb")
    list(block)  # split: the lines are not pickled as well
    data = pickle.dumps(block)
    assert data.count(b"a\n\nb") == 1
    assert b"_lines" not in data
    assert pickle.loads(data) == block == [b"a", b"", b"b"]


def test_a_byte_order_mark_at_the_start_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "windows.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + BODY)
    assert _read(FileSource([str(path)])) == LINES
    assert _read(StdinSource(stream=io.BytesIO(b"\xef\xbb\xbf" + BODY))) == LINES
    assert _read(StdinSource(stream=io.BytesIO(b"\xef\xbb\xbf{}"))) == [b"{}"]


def test_a_long_line_arriving_in_many_pieces_is_one_line() -> None:
    read_fd, write_fd = os.pipe()
    line = b'{"data": {"id": "1", "text": "' + b"x" * 300_000 + b'"}}'

    def write() -> None:
        for i in range(0, len(line), 1000):
            os.write(write_fd, line[i : i + 1000])
        os.write(write_fd, b"\nnext\n")
        os.close(write_fd)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    with os.fdopen(read_fd, "rb") as reader:
        assert _read(StdinSource(stream=reader)) == [line, b"next"]
    writer.join(10)


@settings(max_examples=300, deadline=None)
@given(
    text=st.lists(st.sampled_from([b"a", b"bb", b"\n", b"\r\n", b"\r", b"x" * 7]), max_size=40).map(
        b"".join
    ),
    sizes=st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=8),
    fill=st.booleans(),
    chunk_size=st.integers(min_value=1, max_value=12),
)
def test_lines_are_the_same_however_the_reads_cut_them(
    text: bytes, sizes: list[int], fill: bool, chunk_size: int
) -> None:
    # Reads of any sizes (cycled), filled up to the chunk size or not: the same lines as
    # splitting the whole text, with CRLF endings and a last line without a newline.
    stream = io.BytesIO(text)
    cycle = iter(sizes * (len(text) + 1))

    def read(_size: int) -> bytes:
        return stream.read(next(cycle))

    batches = _read_lines(read, "t", lambda: 0.0, [False], chunk_size=chunk_size, fill=fill)
    expected = text.split(b"\n")
    if not expected[-1]:
        expected.pop()
    assert [line for batch in batches for line in batch.lines] == [
        line.removesuffix(b"\r") for line in expected
    ]
