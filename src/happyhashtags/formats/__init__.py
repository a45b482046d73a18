"""Wire formats: each decoder turns one raw message into a `Post`, a `Skipped`, or a `DecodeError`.

A decoder is a plain function ``decode(line: bytes, received_at: float) -> Post | Skipped``,
picklable and free of I/O, so every engine (local, workers, Spark) shares it. Sources name the
decoder their messages need; `get_decoder` finds it by that name.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from happyhashtags.errors import ConfigError, DecodeError
from happyhashtags.model import Post, Skipped

if TYPE_CHECKING:
    from happyhashtags.aggregate import PostCounter

__all__ = [
    "Checker",
    "Decoder",
    "LineCounter",
    "LinesCounted",
    "PartitionKey",
    "Partitioner",
    "get_checker",
    "get_decoder",
    "get_line_counter",
    "get_partition_key",
    "get_partitioner",
    "refused_lines",
    "register_decoder",
]

Decoder = Callable[[bytes, float], Post | Skipped]
LinesCounted = tuple[int, dict[str, int], list[tuple[int, DecodeError]]]
"""What counting a batch of lines did: ``(posts, {skip reason: lines}, [(line index, error)])``."""
LineCounter = Callable[["PostCounter", Sequence[bytes], float], LinesCounted]
"""Decodes lines and counts their posts in one call, the same as decoding each line with the
format's decoder and counting the posts in order (`LinesCounted`)."""
Checker = Callable[[Sequence[bytes], float], list[int]]
"""Which lines of a batch the format's decoder refuses (their indices), without necessarily
decoding the others: what ``ingest`` counts as undecodable."""
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


_CHECKERS: dict[str, str] = {
    # Formats that tell a batch's undecodable lines faster than decoding each.
    "x": "happyhashtags.formats.x:undecodable_x_lines",
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

    A decoder registered over a built-in one replaces its line counter, checker, partition key
    and partitioner too (they follow the built-in decoder's rules): its lines are decoded one
    by one.
    """
    _DECODERS[name] = target
    _LINE_COUNTERS.pop(name, None)
    _CHECKERS.pop(name, None)
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
    counter: LineCounter | None = _hook(_LINE_COUNTERS, name)
    return counter


def get_checker(name: str) -> Checker:
    """The checker of format `name`: its own where it has one, else its decoder on each line."""
    checker: Checker | None = _hook(_CHECKERS, name)
    return checker or functools.partial(refused_lines, get_decoder(name))


def refused_lines(decode: Decoder, lines: Iterable[bytes], received_at: float) -> list[int]:
    """The indices of the lines `decode` refuses (raises `DecodeError` for): what a `Checker`
    returns, found here by decoding every line."""
    refused: list[int] = []
    for index, line in enumerate(lines):
        try:
            decode(line, received_at)
        except DecodeError:
            refused.append(index)
    return refused


def get_partition_key(name: str) -> PartitionKey:
    """A fast partition key for format `name`; formats without one use a generic key built from
    the full decoder (the author, else the post id, else the line)."""
    key: PartitionKey | None = _hook(_PARTITION_KEYS, name)
    return key or _GenericKey(get_decoder(name))


def get_partitioner(name: str) -> Partitioner:
    """The partitioner of format `name`: its own where it has one, else one built on
    `get_partition_key`."""
    partitioner: Partitioner | None = _hook(_PARTITIONERS, name)
    return partitioner or KeyPartitioner(get_partition_key(name))


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


def _hook(registry: dict[str, str], name: str) -> Any:
    """What `registry` holds for format `name`, imported; None where it holds nothing."""
    target = registry.get(name)
    return None if target is None else _load(target)


def _load(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    module = __import__(module_name, fromlist=[attr])
    return getattr(module, attr)
