"""Happy markers: is a post happy?

Two kinds of marker:

* **Emoji** (a marker that is one grapheme cluster holding an emoji) match whole emoji: the text
  is split into extended grapheme clusters and a cluster matches when it equals the marker once
  skin-tone modifiers (U+1F3FB..U+1F3FF) and variation selectors (U+FE0E, U+FE0F) are removed
  from both. So ``👍`` matches ``👍🏽`` and ``☺️`` matches ``☺``, but ``❤️`` does not match
  ``❤️‍🔥`` (a different emoji).
* **Everything else** (``:)``, ``<3``, words) matches as a plain substring.

Most posts hold no marker at all, so each check starts with a substring test of the marker's first
significant character, and only posts that pass it are split into grapheme clusters.
"""

from __future__ import annotations

from collections.abc import Iterable

import regex

from happyhashtags.errors import ConfigError

__all__ = ["DEFAULT_MARKERS", "HappyMatcher", "is_happy"]

DEFAULT_MARKERS: tuple[str, ...] = (":)",)

_GRAPHEME = regex.compile(r"\X")
_EMOJI = regex.compile(r"[\p{Extended_Pictographic}\p{Regional_Indicator}\u20e3]")
# Modifiers that change how an emoji looks but not which emoji it is.
_IGNORABLE = dict.fromkeys([0xFE0E, 0xFE0F, *range(0x1F3FB, 0x1F400)])


def _strip(cluster: str) -> str:
    return cluster.translate(_IGNORABLE)


def _is_emoji_marker(marker: str) -> bool:
    clusters = _GRAPHEME.findall(marker)
    return len(clusters) == 1 and _EMOJI.search(marker) is not None


class HappyMatcher:
    """Decides whether a text contains any of a fixed set of happy markers.

    Picklable and immutable after construction, so engines can ship it to workers.

    >>> HappyMatcher(["👍"]).matches("great 👍🏽")
    True
    """

    __slots__ = ("_emoji", "_emoji_probes", "_substrings", "markers", "plain_markers")

    def __init__(self, markers: Iterable[str] = DEFAULT_MARKERS) -> None:
        self.markers: tuple[str, ...] = tuple(markers)
        if not self.markers:
            raise ConfigError("at least one happy marker is needed (the default is ':)')")
        emoji: set[str] = set()
        substrings: list[str] = []
        for marker in self.markers:
            if not marker or marker.isspace():
                raise ConfigError(f"a happy marker must not be empty or blank, got {marker!r}")
            if _is_emoji_marker(marker):
                emoji.add(_strip(marker))
            else:
                substrings.append(marker)
        self._substrings = tuple(substrings)
        self._emoji = frozenset(emoji)
        # A cheap first test per emoji: its first code point must occur in the text.
        self._emoji_probes = tuple(sorted({e[0] for e in emoji}))
        self.plain_markers: tuple[str, ...] | None = None if emoji else self._substrings
        """The markers when every one matches as a plain substring (no emoji), else None: then
        `matches` is `any(marker in text ...)`, which compiled callers test themselves."""

    def __reduce__(self) -> tuple[type[HappyMatcher], tuple[tuple[str, ...]]]:
        return (HappyMatcher, (self.markers,))

    def __repr__(self) -> str:
        return f"HappyMatcher({list(self.markers)!r})"

    def matches(self, text: str) -> bool:
        """Whether `text` contains one of the markers."""
        for marker in self._substrings:
            if marker in text:
                return True
        if not self._emoji_probes:
            return False
        for probe in self._emoji_probes:
            if probe in text:
                break
        else:
            return False
        emoji = self._emoji
        return any(_strip(cluster) in emoji for cluster in _GRAPHEME.findall(text))


def is_happy(text: str, markers: Iterable[str] = DEFAULT_MARKERS) -> bool:
    """Whether `text` contains a happy marker (see the module docs for how emoji match).

    >>> is_happy("sunny day :)")
    True
    >>> is_happy("❤️‍🔥", ["❤️"])
    False
    """
    return HappyMatcher(markers).matches(text)
