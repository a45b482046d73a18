"""How many CPUs this process may run on: the count that `--workers` warnings and the compiled
counter's scanning thread (``_speedups.set_scan_helper``) both go by."""

from __future__ import annotations

import os

__all__ = ["usable_cpus"]


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity: ``taskset``, cpusets), else the
    machine's count where the platform has no affinity."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
