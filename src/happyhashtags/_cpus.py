"""How many CPUs this process may use: the count that `--workers` warnings and the compiled
counter's scanning thread (``_speedups.set_scan_helper``) both go by.

Two things limit it on Linux: the CPUs the process may run on (its affinity: ``taskset``,
cpusets) and the CPU time its cgroups allow (a quota: ``docker run --cpus``, a Kubernetes CPU
limit, systemd's ``CPUQuota``). A quota leaves every CPU visible, so counting CPUs alone would
start threads and processes that then wait for their turn in the quota.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["cpu_quota", "usable_cpus"]

_Reader = Callable[[Path], float | None]


def usable_cpus() -> int:
    """The CPUs this process may run on (else the machine's count where the platform has no
    affinity), fewer where a cgroup quota allows less time than that: 1.5 CPUs' worth counts
    as 2, as the Go and Java runtimes count it."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = cpu_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return cpus


def cpu_quota(
    cgroups: Path = Path("/proc/self/cgroup"), mount: Path = Path("/sys/fs/cgroup")
) -> float | None:
    """The CPUs' worth of time this process's cgroups allow (quota / period), the tightest of
    its cgroup's and its ancestors'; None where none sets a quota or there are no cgroups.

    `cgroups` is the process's membership file and `mount` where the cgroup file systems are
    mounted (cgroup v2 there, or v1 with one directory per controller under it).
    """
    try:
        memberships = cgroups.read_text().splitlines()
    except OSError:
        return None
    limits: list[float] = []
    for membership in memberships:
        hierarchy, _, rest = membership.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and not controllers:  # v2: one tree, cpu.max in each cgroup
            limits += _limits(mount, path, _v2_limit)
        elif "cpu" in controllers.split(","):  # v1: the cpu controller's own tree
            limits += _limits(mount / controllers, path, _v1_limit)
    return min(limits, default=None)


def _limits(root: Path, path: str, read: _Reader) -> list[float]:
    # The cgroup at `path` under `root` and each of its ancestors up to `root`. In a container
    # the path may be the host's, which the container's view does not have: its root is the
    # container's own cgroup, and is still read.
    found: list[float] = []
    parts = Path(path).parts[1:]
    # "/.." leads out of a cgroup namespace, to cgroups this process cannot see: its own
    # view's root is what it can read.
    here = root if ".." in parts else root.joinpath(*parts)
    for directory in (here, *here.parents):
        if directory.is_dir():
            limit = read(directory)
            if limit is not None:
                found.append(limit)
        if directory == root:
            break
    return found


def _v2_limit(directory: Path) -> float | None:
    # cpu.max: "QUOTA PERIOD" in microseconds, or "max PERIOD" for none.
    try:
        quota, period = (directory / "cpu.max").read_text().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _v1_limit(directory: Path) -> float | None:
    # cpu.cfs_quota_us (-1 for none) over cpu.cfs_period_us.
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None
