"""Compiled or pure Python: the one place that picks, for every hot path that has both.

``happyhashtags._speedups`` is built by ``pip install`` where a C compiler is present. Each of its
classes and functions has a pure-Python twin that defines the behaviour; the package uses the
compiled one where the module is built, and the twin otherwise.
"""

from __future__ import annotations

import importlib
from typing import TypeVar

__all__ = ["compiled_or"]

T = TypeVar("T")


def compiled_or(name: str, twin: T) -> T:
    """``happyhashtags._speedups.<name>`` where that module is built, else `twin`."""
    try:
        module = importlib.import_module("happyhashtags._speedups")
    except ImportError:  # not built (no C compiler at install time): the same, slower
        return twin
    compiled: T = getattr(module, name)
    return compiled
