"""What every source provides: batches of raw messages, each with the time it was read."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple, Protocol, overload, runtime_checkable

from happyhashtags._twins import compiled_or
from happyhashtags.model import Checkpoint

__all__ = ["Batch", "Clock", "LineBlock", "Resumable", "Source", "spread_lines"]

Clock = Callable[[], float]
"""Returns seconds since the epoch (UTC). Injected so tests control time."""

system_clock: Clock = time.time


def _py_count_newlines(data: bytes) -> int:
    """The pure-Python twin of ``_speedups.count_newlines``."""
    return data.count(b"\n")


def _py_split_lines(block: bytes, parts: bytes, count: int) -> list[bytes | None]:
    """The pure-Python twin of ``_speedups.split_lines``."""
    lines = block.split(b"\n")
    if len(parts) != len(lines):
        raise ValueError(f"{len(parts)} parts for a block of {len(lines)} lines")
    if count <= 0:
        raise ValueError("count must be positive")
    pieces: list[list[bytes]] = [[] for _ in range(count)]
    for index, (line, part) in enumerate(zip(lines, parts, strict=True)):
        if part >= count:
            raise ValueError(f"part {part} of line {index} is not below {count}")
        pieces[part].append(line)
    return [b"\n".join(piece) if piece else None for piece in pieces]


_count_newlines = compiled_or("count_newlines", _py_count_newlines)
_split_lines = compiled_or("split_lines", _py_split_lines)


class LineBlock(Sequence[bytes]):
    """Lines kept as they were read: one bytes object, the lines joined by ``\\n``.

    A sequence of the lines like a list, made only if asked for (on first index or
    iteration). A line counter may read `block` itself instead: a bytes object per line is
    a large share of reading a file (``bytes.split`` was a tenth of ``run`` on the benchmark).

    >>> block = LineBlock(b'{"a": 1}\\n{"b": 2}')
    >>> len(block), block[1], block == [b'{"a": 1}', b'{"b": 2}']
    (2, b'{"b": 2}', True)
    """

    __slots__ = ("_block", "_lines", "_size")

    def __init__(self, block: bytes) -> None:
        self._block = block
        self._size = _count_newlines(block) + 1
        self._lines: list[bytes] | None = None

    @property
    def block(self) -> bytes:
        """The lines, joined by ``\\n`` (no line holds one)."""
        return self._block

    def _split(self) -> list[bytes]:
        if self._lines is None:
            self._lines = self._block.split(b"\n")
        return self._lines

    def spread(self, parts: bytes, count: int) -> list[LineBlock | None]:
        """The lines spread over `count` blocks: line i goes to block ``parts[i]``, in order;
        None for a block that gets none. One copy of each line, made in C where the compiled
        module is built, and no bytes object per line.

        >>> LineBlock(b"a\\nb\\nc").spread(bytes([1, 0, 1]), 3)
        [LineBlock([b'b']), LineBlock([b'a', b'c']), None]
        """
        return [
            None if piece is None else LineBlock(piece)
            for piece in _split_lines(self._block, parts, count)
        ]

    def __reduce__(self) -> tuple[type[LineBlock], tuple[bytes]]:
        # Pickled as its block (for a worker process), not as the lines it may have split.
        return (LineBlock, (self._block,))

    def __len__(self) -> int:
        return self._size

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> list[bytes]: ...
    def __getitem__(self, index: int | slice) -> bytes | list[bytes]:
        return self._split()[index]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._split())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LineBlock):
            return self._block == other._block
        if isinstance(other, Sequence) and not isinstance(other, (bytes, str)):
            return self._split() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # compares like a list, which is unhashable

    def __repr__(self) -> str:
        return f"LineBlock({self._split()!r})"


def spread_lines(
    lines: Sequence[bytes], parts: bytes, count: int
) -> Sequence[Sequence[bytes] | None]:
    """A batch's `lines` spread over `count` parts (processes, shares) by `parts`, one byte per
    line, in order; None for a part that gets none. A `LineBlock` is spread into blocks
    (`LineBlock.spread`: one bytes object per part, to count in place or to pickle)."""
    if isinstance(lines, LineBlock):
        return lines.spread(parts, count)
    spread: list[list[bytes]] = [[] for _ in range(count)]
    for line, part in zip(lines, parts, strict=True):
        spread[part].append(line)
    return [piece or None for piece in spread]


class Batch(NamedTuple):
    """Raw messages read together.

    Attributes:
        lines: one message per item, without line terminators (may include blank keep-alives).
        received_at: when they were read (seconds since the epoch), the event time of posts
            whose payload has none.
        origin: where they came from, for dead letters and logs (a file name, "stdin", a URL).
        first_line: the line number of ``lines[0]`` within `origin` (1-based), or 0 if unknown.
        cursors: for a resumable source, the position of each line (same length as `lines`).
            Consecutive lines may share one (several posts in one queue message): the engine
            commits such a position only with all its lines, and stops only between them.
        replay: the lines were counted before and are sent again only to rebuild state (for
            example anti-spam sessions after a restart): the engine feeds them to the counter
            without counting them.
    """

    lines: Sequence[bytes]  # a list, or a LineBlock (files)
    received_at: float
    origin: str
    first_line: int = 0
    cursors: Sequence[int] | None = None
    replay: bool = False


@runtime_checkable
class Source(Protocol):
    """A stream of raw messages.

    `format` names the decoder for its messages (see `happyhashtags.formats`). `total` is the
    number of messages when known up front (for progress bars), else None.
    """

    name: str
    format: str
    total: int | None

    def batches(self) -> Iterator[Batch]:
        """Yield batches until the source ends (files) or is closed (streams).

        The engine checks its flush interval when a batch arrives, so a live source yields an
        empty batch (no lines) at least every few seconds while nothing comes: otherwise what
        was counted waits for the next post to be written.
        """
        ...

    def close(self) -> None:
        """Stop reading; `batches` returns soon after. Safe to call twice, from a signal handler."""
        ...


@runtime_checkable
class Resumable(Protocol):
    """A source that can resume where the counts in the database end.

    The engine calls `resume` with the checkpoint last committed for `consumer` (None on the
    first run) before reading; at each flush it stores ``Checkpoint(position, state)`` in the
    same transaction as the counts, where `position` is the cursor of the last line counted and
    `state` is what `checkpoint_state` returns for it; after the commit it calls `committed`
    (where, say, a queue consumer acknowledges messages).
    """

    consumer: str

    def resume(self, checkpoint: Checkpoint | None) -> None: ...

    def checkpoint_state(self, position: int) -> str | None: ...

    def committed(self, position: int) -> None: ...
