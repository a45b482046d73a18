"""JSON Lines files and standard input, plain or compressed (gzip, bzip2, xz, zstd by content)."""

from __future__ import annotations

import bz2
import contextlib
import glob
import gzip
import io
import lzma
import os
import select
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

from happyhashtags.errors import SourceError
from happyhashtags.sources.base import Batch, Clock, LineBlock, system_clock

if TYPE_CHECKING:
    from happyhashtags.config import Settings

__all__ = ["FileSource", "StdinSource", "expand_paths", "open_maybe_compressed"]

_FILE_CHUNK = 1 << 20  # about 2,500 X API v2 messages per batch
_PIPE_CHUNK = 1 << 16
_BOM = b"\xef\xbb\xbf"
_MAGIC: list[tuple[bytes, str]] = [
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bz2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
]


def _buffered(stream: BinaryIO) -> io.BufferedReader:
    # BufferedReader gives peek(), to look at the magic bytes without consuming them.
    if isinstance(stream, io.BufferedReader):
        return stream
    return io.BufferedReader(cast("io.RawIOBase", stream))


def _sniff(stream: BinaryIO) -> str | None:
    head = _buffered(stream).peek(6)[:6]
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return None


def open_maybe_compressed(raw: BinaryIO) -> BinaryIO:
    """Wrap `raw` in the decompressor its first bytes call for (or return it as it is)."""
    buffered = _buffered(raw)
    kind = _sniff(cast(BinaryIO, buffered))
    if kind == "gzip":
        return cast(BinaryIO, gzip.GzipFile(fileobj=buffered))
    if kind == "bz2":
        return cast(BinaryIO, bz2.BZ2File(buffered))
    if kind == "xz":
        return cast(BinaryIO, lzma.LZMAFile(buffered))
    if kind == "zstd":
        try:
            import zstandard
        except ImportError:  # pragma: no cover - zstandard is a core dependency
            raise SourceError("reading .zst files needs the zstandard package") from None
        reader = zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True)
        return cast(BinaryIO, io.BufferedReader(reader))
    return cast(BinaryIO, buffered)


def expand_paths(pattern: str) -> list[Path]:
    """The files a path or glob names, sorted; a `SourceError` if there are none."""
    if glob.has_magic(pattern):
        paths = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
        if not paths:
            raise SourceError(f"no files match {pattern!r}")
        return paths
    path = Path(pattern)
    if not path.exists():
        raise SourceError(
            f"no such file: {pattern!r} (sources are 'demo', '-' for stdin, a file or a glob, "
            "or a source name; see 'happyhashtags run --help')"
        )
    if path.is_dir():
        raise SourceError(
            f"{pattern!r} is a directory: name files, or a glob like '{pattern}/*.jsonl'"
        )
    return [path]


def _batch(lines: Sequence[bytes], received_at: float, origin: str, line_no: int) -> Batch:
    # Editors on Windows start UTF-8 text with a byte order mark, which JSON parsers reject.
    if line_no == 1 and isinstance(lines, LineBlock):
        if lines.block.startswith(_BOM):
            lines = LineBlock(lines.block.removeprefix(_BOM))
    elif line_no == 1 and lines and lines[0].startswith(_BOM):
        lines = [lines[0].removeprefix(_BOM), *lines[1:]]
    return Batch(lines, received_at, origin, line_no)


def _read_lines(
    read: Callable[[int], bytes | None],
    origin: str,
    clock: Clock,
    closed: list[bool],
    *,
    chunk_size: int,
    fill: bool,
) -> Iterator[Batch]:
    """Batches of the lines in what `read` returns, split in C (several times cheaper than
    iterating a file line by line).

    `read` is a ``read1``: it returns what one read gives. With `fill` (files), reads go on until
    `chunk_size` bytes are in hand, so a batch holds thousands of lines even where a decompressor
    returns 50 KB at a time; without it (pipes) every read is passed on at once. A read that
    returns None (a quiet pipe) yields an empty batch, so the engine can flush on time. After a
    read error the lines read before it are still yielded, then a `SourceError` is raised.
    """
    # The unfinished line and the reads since, in pieces: joined once, not re-copied per read.
    pieces: list[bytes] = []
    size = 0
    line_no = 1
    error: str | None = None
    while not closed[0]:
        try:
            piece = read(chunk_size)
        except (OSError, EOFError, lzma.LZMAError) as exc:
            error = f"cannot read {origin}: {exc}"
            break
        if piece is None:
            yield Batch([], clock(), origin, line_no)
            continue
        if piece:
            pieces.append(piece)
            size += len(piece)
            if (fill and size < chunk_size) or b"\n" not in piece:
                continue
        elif not pieces:
            break
        lines: Sequence[bytes]
        if piece and (len(pieces) == 1 or (len(pieces) == 2 and b"\n" not in pieces[0])):
            # The usual case: one read, after the unfinished line of the one before. Its whole
            # lines are kept as one block (LineBlock): a line counter reads them in place, and
            # a bytes object per line is made only for what asks for one.
            cut = piece.rfind(b"\n")  # not -1: the piece holds a newline
            # One copy, with the unfinished line before it (slicing first copied twice).
            block = (
                b"".join((pieces[0], memoryview(piece)[:cut])) if len(pieces) == 2 else piece[:cut]
            )
            tail = piece[cut + 1 :]
            crlf = b"\r" in block
            lines = block.split(b"\n") if crlf else LineBlock(block)
        else:
            data = b"".join(pieces)
            *whole, tail = data.split(b"\n")
            crlf = b"\r" in data
            if not piece and tail:  # the end: a last line without a newline
                whole.append(tail)
                tail = b""
            lines = whole
        pieces, size = ([tail], len(tail)) if tail else ([], 0)
        if crlf:
            # Batches carry lines without terminators (the Batch contract): CRLF files too.
            lines = [line.removesuffix(b"\r") for line in lines]
        if lines:
            yield _batch(lines, clock(), origin, line_no)
            line_no += len(lines)
        if not piece:
            break
    if error is not None:
        lines = b"".join(pieces).split(b"\n")
        if not lines[-1]:
            lines.pop()
        if lines:
            lines = [line.removesuffix(b"\r") for line in lines]
            yield _batch(lines, clock(), origin, line_no)
        raise SourceError(error)


class FileSource:
    """JSON Lines files named by paths or globs, read in order.

    >>> source = FileSource(["archive/*.jsonl.gz"])  # doctest: +SKIP
    """

    format = "x"

    def __init__(
        self, patterns: Sequence[str], *, format: str = "x", clock: Clock = system_clock
    ) -> None:
        self.paths = [p for pattern in patterns for p in expand_paths(pattern)]
        self.name = ",".join(str(p) for p in self.paths) if len(self.paths) < 4 else "files"
        self.format = format
        self.total: int | None = None
        self._clock = clock
        self._closed = [False]

    def batches(self) -> Iterator[Batch]:
        for path in self.paths:
            if self._closed[0]:
                return
            try:
                raw = path.open("rb")
            except OSError as exc:
                raise SourceError(f"cannot open {path}: {exc.strerror}") from None
            with raw, open_maybe_compressed(raw) as stream:
                # read1, not read: a corrupt compressed file still yields what came before the
                # damage (read would raise and drop the whole chunk).
                read1 = getattr(stream, "read1", stream.read)
                yield from _read_lines(
                    read1, str(path), self._clock, self._closed, chunk_size=_FILE_CHUNK, fill=True
                )

    def close(self) -> None:
        self._closed[0] = True


class StdinSource:
    """JSON Lines on standard input (``--source -``), plain or compressed.

    While a plain pipe stays quiet for `quiet_after` seconds the source yields an empty batch, so
    a live pipe's counts are still flushed on time, not only when more input comes. (A compressed
    pipe is read with blocking reads: its decompressor may hold data the pipe no longer shows.)
    """

    name = "stdin"

    def __init__(
        self,
        *,
        stream: BinaryIO | None = None,
        format: str = "x",
        clock: Clock = system_clock,
        quiet_after: float = 1.0,
    ) -> None:
        self._stream = stream
        self.format = format
        self.total: int | None = None
        self.quiet_after = quiet_after
        self._clock = clock
        self._closed = [False]

    def batches(self) -> Iterator[Batch]:
        stream = _buffered(self._stream if self._stream is not None else sys.stdin.buffer)
        source = open_maybe_compressed(cast(BinaryIO, stream))
        # read1 returns what is there now: whole batches from a file piped in, and each line of a
        # live pipe as soon as it arrives.
        read: Callable[[int], bytes | None] = getattr(source, "read1", source.read)
        if source is stream:  # not compressed: the pipe itself
            with contextlib.suppress(OSError, ValueError):  # no file descriptor (in memory)
                read = _waiting_reads(stream, stream.fileno(), self.quiet_after)
        yield from _read_lines(
            read, "stdin", self._clock, self._closed, chunk_size=_PIPE_CHUNK, fill=False
        )

    def close(self) -> None:
        self._closed[0] = True


def _waiting_reads(
    buffered: io.BufferedReader, fd: int, quiet_after: float
) -> Callable[[int], bytes | None]:
    """Reads of `fd` that return None when nothing arrives for `quiet_after` seconds.

    The bytes `buffered` already holds (read while sniffing the compression) come first; after
    that, reads go to the file descriptor itself, so `select` sees everything not yet read and
    nothing is ever read but not returned.
    """
    pending = [True]

    def read(size: int) -> bytes | None:
        if pending[0]:
            pending[0] = False
            held = buffered.peek()  # what the buffer holds, without reading more (b"" at the end)
            return buffered.read(len(held))
        ready, _, _ = select.select([fd], [], [], quiet_after)
        if not ready:
            return None
        return os.read(fd, size)

    return read


def files_from_settings(_settings: Settings, spec: str) -> FileSource:
    """A path or glob (several separated by commas)."""
    return FileSource([p for p in spec.split(",") if p])


def stdin_from_settings(_settings: Settings, _spec: str) -> StdinSource:
    """``--source -``."""
    return StdinSource()
