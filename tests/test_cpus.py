"""The CPUs a process may use: its affinity, and its cgroups' CPU quota."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from happyhashtags._cpus import cpu_quota, usable_cpus
from happyhashtags.aggregate import COMPILED


def _quota_of(root: Path, files: dict[str, str]) -> float | None:
    """`cpu_quota` of a tree of files under `root`: the membership file ``proc`` and the cgroup
    file systems under ``fs``."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return cpu_quota(root / "proc", root / "fs")


def test_cgroup_v2_takes_the_tightest_quota_of_the_cgroup_and_its_ancestors(
    tmp_path: Path,
) -> None:
    tree = {
        "proc": "0::/kubepods/pod7/app\n",
        "fs/cpu.max": "max 100000\n",
        "fs/kubepods/cpu.max": "300000 100000\n",
        "fs/kubepods/pod7/cpu.max": "150000 100000\n",
        "fs/kubepods/pod7/app/cpu.max": "max 100000\n",
    }
    assert _quota_of(tmp_path, tree) == 1.5


def test_cgroup_v2_without_a_quota_is_no_limit(tmp_path: Path) -> None:
    assert _quota_of(tmp_path, {"proc": "0::/app\n", "fs/app/cpu.max": "max 100000\n"}) is None


def test_a_container_reads_its_own_root_where_the_path_is_the_hosts(tmp_path: Path) -> None:
    # Without a cgroup namespace the path names the host's tree; the container sees its own
    # cgroup mounted at the root.
    assert _quota_of(tmp_path, {"proc": "0::/docker/4f2a\n", "fs/cpu.max": "50000 100000\n"}) == 0.5


def test_a_path_out_of_the_cgroup_namespace_reads_only_the_root(tmp_path: Path) -> None:
    tree = {
        "proc": "0::/../elsewhere\n",
        "fs/cpu.max": "200000 100000\n",
        "elsewhere/cpu.max": "10000 100000\n",  # beside the mount: never read
    }
    assert _quota_of(tmp_path, tree) == 2.0


def test_cgroup_v1_reads_the_cpu_controllers_quota_and_period(tmp_path: Path) -> None:
    tree = {
        "proc": "4:memory:/a\n3:cpu,cpuacct:/a/b\n0::/\n",
        "fs/cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
        "fs/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
        "fs/cpu,cpuacct/a/b/cpu.cfs_quota_us": "250000\n",
        "fs/cpu,cpuacct/a/b/cpu.cfs_period_us": "100000\n",
        "fs/memory/a/cpu.cfs_quota_us": "10000\n",  # not the cpu controller's: ignored
        "fs/memory/a/cpu.cfs_period_us": "100000\n",
    }
    assert _quota_of(tmp_path, tree) == 2.5


@pytest.mark.parametrize(
    "files",
    [
        {},  # no cgroups at all (not Linux, say)
        {"proc": "0::/app\n"},  # no cpu.max: the controller is not enabled there
        {"proc": "0::/app\n", "fs/app/cpu.max": "garbage\n"},
        {"proc": "1:cpu:/\n", "fs/cpu/cpu.cfs_quota_us": "-1\n"},  # no period
        {"proc": "not a cgroup line\n"},
    ],
)
def test_no_readable_quota_is_no_limit(tmp_path: Path, files: dict[str, str]) -> None:
    assert _quota_of(tmp_path, files) is None


def test_usable_cpus_without_a_quota_is_the_affinity() -> None:
    if cpu_quota() is not None:
        pytest.skip("this process runs under a CPU quota")
    assert usable_cpus() == len(os.sched_getaffinity(0))


_CPU_V1 = Path("/sys/fs/cgroup/cpu")


@pytest.fixture
def half_a_cpu() -> Iterator[Path]:
    """A real cgroup (v1's cpu controller) allowed half a CPU's time, removed afterwards."""
    if not (_CPU_V1 / "cpu.cfs_quota_us").exists() or not os.access(_CPU_V1, os.W_OK):
        pytest.skip("needs a writable cgroup v1 cpu controller (root on such a machine)")
    cgroup = _CPU_V1 / f"happyhashtags-test-{uuid.uuid4().hex[:8]}"
    cgroup.mkdir()
    try:
        (cgroup / "cpu.cfs_quota_us").write_text("50000")
        yield cgroup
    finally:
        cgroup.rmdir()  # its process has exited


def test_a_real_quota_of_half_a_cpu_leaves_one_cpu_and_no_scan_helper(half_a_cpu: Path) -> None:
    # The child moves itself into the cgroup, then asks: every CPU is still in its affinity.
    # The compiled module decides at import, so nothing of the package is imported before.
    code = (
        f"open('{half_a_cpu}/cgroup.procs', 'w').write('0')\n"
        "import os\n"
        "from happyhashtags._cpus import usable_cpus\n"
        "from happyhashtags.aggregate import COMPILED\n"
        "print(len(os.sched_getaffinity(0)), usable_cpus())\n"
        "if COMPILED:\n"
        "    from happyhashtags import _speedups; print(_speedups.set_scan_helper(None))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    affinity, usable, *helper = done.stdout.split()
    assert int(usable) == 1
    assert int(affinity) == len(os.sched_getaffinity(0))
    assert helper == (["None"] if COMPILED else [])
