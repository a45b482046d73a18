"""Wire formats: each decoder turns one raw message into a `Post`, a `Skipped`, or a `DecodeError`.

A decoder is a plain function ``decode(line: bytes, received_at: float) -> Post | Skipped``,
picklable and free of I/O, so every engine (local, workers, Spark) shares it. Sources name the
decoder their messages need; `get_decoder` finds it by that name.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from happyhashtags.errors import ConfigError, DecodeError
from happyhashtags.model import Post, Skipped

if TYPE_CHECKING:
    from happyhashtags.aggregate import PostCounter

__all__ = [
    "Decoder",
    "LineCounter",
    "LinesCounted",
    "PartitionKey",
    "Partitioner",
    "get_decoder",
    "get_line_counter",
    "get_partition_key",
    "get_partitioner",
    "register_decoder",
]

Decoder = Callable[[bytes, float], Post | Skipped]
LinesCounted = tuple[int, dict[str, int], list[tuple[int, DecodeError]]]
"""What counting a batch of lines did: ``(posts, {skip reason: lines}, [(line index, error)])``."""
LineCounter = Callable[["PostCounter", Sequence[bytes], float], LinesCounted]
"""Decodes lines and counts their posts in one call, the same as decoding each line with the
format's decoder and counting the posts in order (`LinesCounted`)."""
PartitionKey = Callable[[bytes], bytes]
"""Maps a raw message to the key that must keep it with its author's other messages."""
Partitioner = Callable[[Sequence[bytes], bytes], bytes]
"""Spreads a batch of raw messages over parts by partition key: one byte per message,
``table[zlib.crc32(key) % len(table)]`` (`table` maps hash slots to parts)."""

_DECODERS: dict[str, str] = {
    # name -> "module:function", imported on first use so optional formats cost nothing.
    "x": "happyhashtags.formats.x:decode_x",
    "bluesky": "happyhashtags.formats.bluesky:decode_bluesky",
}


_LINE_COUNTERS: dict[str, str] = {
    # Formats whose lines can be decoded and counted in one call (faster than one decode each).
    "x": "happyhashtags.formats.x:count_x_lines",
}


_PARTITION_KEYS: dict[str, str] = {
    "x": "happyhashtags.formats.x:partition_key_x",
}


_PARTITIONERS: dict[str, str] = {
    # Formats that find a whole batch's parts in one call (the same as their partition key's).
    "x": "happyhashtags.formats.x:partition_x_lines",
}


def register_decoder(name: str, target: str) -> None:
    """Register a decoder as ``"package.module:function"`` under `name`.

    A decoder registered over a built-in one replaces its line counter, partition key and
    partitioner too (they follow the built-in decoder's rules): its lines are decoded one by one.
    """
    _DECODERS[name] = target
    _LINE_COUNTERS.pop(name, None)
    _PARTITION_KEYS.pop(name, None)
    _PARTITIONERS.pop(name, None)


def get_decoder(name: str) -> Decoder:
    """The decoder registered under `name`."""
    try:
        target = _DECODERS[name]
    except KeyError:
        known = ", ".join(sorted(_DECODERS))
        raise ConfigError(f"unknown message format {name!r} (known: {known})") from None
    decoder: Decoder = _load(target)
    return decoder


def get_line_counter(name: str) -> LineCounter | None:
    """The line counter of format `name`, or None where it has none (decode line by line)."""
    target = _LINE_COUNTERS.get(name)
    if target is None:
        return None
    counter: LineCounter = _load(target)
    return counter


def get_partition_key(name: str) -> PartitionKey:
    """A fast partition key for format `name`; formats without one use a generic key built from
    the full decoder (the author, else the post id, else the line)."""
    target = _PARTITION_KEYS.get(name)
    if target is not None:
        key: PartitionKey = _load(target)
        return key
    return _GenericKey(get_decoder(name))


def get_partitioner(name: str) -> Partitioner:
    """The partitioner of format `name`: its own where it has one, else one built on
    `get_partition_key`."""
    target = _PARTITIONERS.get(name)
    if target is not None:
        partitioner: Partitioner = _load(target)
        return partitioner
    return KeyPartitioner(get_partition_key(name))


class KeyPartitioner:
    """A `Partitioner` that calls a `PartitionKey` per line: what every partitioner does."""

    __slots__ = ("_key",)

    def __init__(self, key: PartitionKey) -> None:
        self._key = key

    def __call__(self, lines: Sequence[bytes], table: bytes) -> bytes:
        if not table:
            raise ValueError("the table of parts is empty")
        key, crc32, size = self._key, zlib.crc32, len(table)
        return bytes([table[crc32(key(line)) % size] for line in lines])


class _GenericKey:
    __slots__ = ("_decode",)

    def __init__(self, decode: Decoder) -> None:
        self._decode = decode

    def __call__(self, line: bytes) -> bytes:
        try:
            item = self._decode(line, 0.0)
        except ValueError:
            return line
        if isinstance(item, Post):
            key = item.author or item.id
            if key:
                return key.encode()
        return line


def _load(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    module = __import__(module_name, fromlist=[attr])
    return getattr(module, attr)
