"""Wire formats: each decoder turns one raw message into a `Post`, a `Skipped`, or a `DecodeError`.

A decoder is a plain function ``decode(line: bytes, received_at: float) -> Post | Skipped``, picklable
and free of I/O, so every engine (local, workers, Spark) shares it. Sources name the decoder their
messages need; `get_decoder` finds it by that name.
"""

from __future__ import annotations

from collections.abc import Callable

from happyhashtags.errors import ConfigError
from happyhashtags.model import Post, Skipped

__all__ = ["Decoder", "get_decoder", "register_decoder"]

Decoder = Callable[[bytes, float], Post | Skipped]

_DECODERS: dict[str, str] = {
    # name -> "module:function", imported on first use so optional formats cost nothing.
    "x": "happyhashtags.formats.x:decode_x",
    "bluesky": "happyhashtags.formats.bluesky:decode_bluesky",
}


def register_decoder(name: str, target: str) -> None:
    """Register a decoder as ``"package.module:function"`` under `name`."""
    _DECODERS[name] = target


def get_decoder(name: str) -> Decoder:
    """The decoder registered under `name`."""
    try:
        target = _DECODERS[name]
    except KeyError:
        known = ", ".join(sorted(_DECODERS))
        raise ConfigError(f"unknown message format {name!r} (known: {known})") from None
    module_name, _, attr = target.partition(":")
    module = __import__(module_name, fromlist=[attr])
    decoder: Decoder = getattr(module, attr)
    return decoder
