"""The exception tree: every error this package raises on purpose is a `HappyHashtagsError`.

Messages say what went wrong and what to do next, and never contain secrets.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DecodeError",
    "HappyHashtagsError",
    "MissingExtraError",
    "SourceError",
    "StorageError",
]


class HappyHashtagsError(Exception):
    """Base class of the errors raised by happyhashtags."""


class ConfigError(HappyHashtagsError, ValueError):
    """A setting, flag or config file value is invalid."""


class SourceError(HappyHashtagsError):
    """A source could not be opened or read."""


class StorageError(HappyHashtagsError):
    """The database could not be reached, migrated or written."""


class PositionConflict(HappyHashtagsError):
    """Another writer committed a consumer's position since this one last read or wrote it (two
    processes with one consumer name): nothing of this write was committed. Not a
    `StorageError`: retrying cannot help, and the writer must stop."""


class DecodeError(HappyHashtagsError, ValueError):
    """One input line could not be used; `reason` is a short stable tag for reports."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class MissingExtraError(HappyHashtagsError, ImportError):
    """An optional dependency is not installed."""

    def __init__(self, feature: str, extra: str) -> None:
        super().__init__(
            f"{feature} needs the optional dependencies of the '{extra}' extra: "
            f"pip install 'happyhashtags[{extra}]'"
        )
        self.extra = extra
