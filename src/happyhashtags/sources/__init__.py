"""Sources: where posts come from. ``--source NAME`` picks one by its registered name; anything
else is a path or glob of JSON Lines files, and ``-`` is standard input.

A connector registers a factory ``(settings, spec) -> Source`` under its name: no other change is
needed for ``run`` (and ``ingest``) to offer it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from happyhashtags.sources.base import Batch, Source
from happyhashtags.sources.demo import DemoSource
from happyhashtags.sources.files import FileSource, StdinSource

if TYPE_CHECKING:
    from happyhashtags.config import Settings

__all__ = [
    "Batch",
    "DemoSource",
    "FileSource",
    "Source",
    "StdinSource",
    "open_source",
    "register_source",
    "source_names",
]

SourceFactory = Callable[["Settings", str], Source]

# name -> "module:factory", imported on use so optional connectors cost nothing until chosen.
_REGISTRY: dict[str, str] = {
    "demo": "happyhashtags.sources.demo:from_settings",
    "-": "happyhashtags.sources.files:stdin_from_settings",
    "x-filtered": "happyhashtags.sources.x_api:filtered_from_settings",
    "x-sample": "happyhashtags.sources.x_api:sample_from_settings",
    "bluesky": "happyhashtags.sources.bluesky:from_settings",
}


def register_source(name: str, target: str) -> None:
    """Register a source factory, given as ``"package.module:function"``, under `name`."""
    _REGISTRY[name] = target


def source_names() -> list[str]:
    """The registered source names (besides file paths)."""
    return sorted(_REGISTRY)


def open_source(settings: Settings, spec: str | None = None) -> Source:
    """The source `spec` (default: ``settings.source``) names, built from `settings`."""
    spec = spec or settings.source
    target = _REGISTRY.get(spec)
    if target is None:
        from happyhashtags.sources.files import files_from_settings

        return files_from_settings(settings, spec)
    module_name, _, attr = target.partition(":")
    module = __import__(module_name, fromlist=[attr])
    factory: Any = getattr(module, attr)
    source: Source = factory(settings, spec)
    return source
