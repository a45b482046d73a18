"""Several posts per JetStream message: the stream's payload format.

A message's payload is one or more lines joined by ``\\n`` (JSON Lines, no trailing newline), so a
message of one line is exactly what earlier versions published. Carrying up to
`DEFAULT_MESSAGE_POSTS` lines per message is what lets ``process`` keep up: the NATS client costs
about 24 microseconds per message in Python (protocol and header parsing), several times what
counting a post costs; per line of a full message it is a fraction of a microsecond.

Ingest groups lines only within one read of its source (a `Batch`), so grouping never waits for
input: a quiet live stream still publishes each post as soon as it is read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

__all__ = [
    "DEFAULT_MESSAGE_BYTES",
    "DEFAULT_MESSAGE_POSTS",
    "frame_id",
    "frames",
    "normalize_line",
    "split_message",
]

DEFAULT_MESSAGE_POSTS = 128
"""Lines per message at most (``--posts-per-message``)."""

DEFAULT_MESSAGE_BYTES = 256 << 10
"""Payload bytes per message at most, well below NATS's default ``max_payload`` (1 MB); a longer
line travels alone (and one longer than ``max_payload`` is refused, as before)."""


def frames(
    lines: Sequence[bytes],
    *,
    max_lines: int = DEFAULT_MESSAGE_POSTS,
    max_bytes: int = DEFAULT_MESSAGE_BYTES,
) -> Iterator[Sequence[bytes]]:
    """Consecutive runs of `lines`, each at most `max_lines` long and, unless a single line is
    longer, at most `max_bytes` once joined. Lines must hold no ``\\n`` (`normalize_line`)."""
    if max_lines < 1:
        raise ValueError("max_lines must be at least 1")
    start, size = 0, -1
    for index, line in enumerate(lines):
        grown = size + 1 + len(line)
        if index > start and (index - start >= max_lines or grown > max_bytes):
            yield lines[start:index]
            start, grown = index, len(line)
        size = grown
    if start < len(lines):
        yield lines[start:]


def normalize_line(line: bytes) -> bytes:
    """`line` with no ``\\n`` in it: a JSON document may hold newlines only as whitespace between
    tokens (never raw inside a string), so a space in their place means the same document."""
    return line.replace(b"\n", b" ") if b"\n" in line else line


def split_message(data: bytes) -> list[bytes]:
    """The lines a message carries (the inverse of joining a frame with ``\\n``)."""
    return data.split(b"\n") if b"\n" in data else [data]


def frame_id(lines: Sequence[bytes], payload: bytes) -> str:
    """The ``Nats-Msg-Id`` of a message of several lines: their number and a hash of the payload,
    so publishing the same frame again (a restarted ingest, the same file read again) is dropped
    by JetStream as a repeat."""
    return f"lines:{len(lines)}:{hashlib.blake2b(payload, digest_size=16).hexdigest()}"
