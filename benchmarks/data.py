"""Benchmark data: seeded X API v2 messages from the demo generator, written once and reused.

Files go to ``.bench/`` (gitignored), named by every parameter that shapes them and by a hash of
the generator's source, so a changed generator never reuses a stale file.

Run as a module, it streams messages to standard output, for the memory case's engine to read
from a pipe: ``python -m benchmarks.data stream --count N --vocabulary V``.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import multiprocessing
import os
import platform
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from happyhashtags.sources import demo

__all__ = [
    "DEFAULT_DATA_DIR",
    "CpuMeter",
    "Dataset",
    "cpu_seconds",
    "ensure_dataset",
    "load_average",
    "machine_info",
    "postgres_cpu_seconds",
    "wide_messages",
]

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1] / ".bench"


@dataclass(frozen=True, slots=True)
class Dataset:
    """The parameters of a benchmark file (those of `demo.generate_messages`).

    The defaults make sessions matter: 3,000 posts per second of event time from 300,000
    authors, a Zipf vocabulary of 20,000 hashtags, and 50 spam accounts.
    """

    posts: int
    seed: int = 42
    rate: float = 3000.0
    vocabulary: int = 20_000
    authors: int = 300_000
    spammers: int = 50

    def file_name(self) -> str:
        return (
            f"x-v2-n{self.posts}-s{self.seed}-r{self.rate:g}-v{self.vocabulary}"
            f"-a{self.authors}-sp{self.spammers}-g{generator_fingerprint()}.jsonl"
        )

    def messages(self) -> Iterator[bytes]:
        return demo.generate_messages(
            self.posts,
            seed=self.seed,
            start=demo.DEFAULT_START,
            rate=self.rate,
            vocabulary=self.vocabulary,
            authors=self.authors,
            spammers=self.spammers,
        )

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def generator_fingerprint() -> str:
    """A short hash of the demo generator's source: part of every data file's name."""
    return hashlib.sha256(inspect.getsource(demo).encode()).hexdigest()[:10]


def ensure_dataset(
    dataset: Dataset, directory: Path = DEFAULT_DATA_DIR, *, log: Callable[[str], None] = print
) -> Path:
    """The path of `dataset`'s file in `directory`, generating it first if it is not there."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / dataset.file_name()
    if path.exists():
        return path
    log(f"generating {dataset.posts:,} posts into {path} (once; reused by later runs)")
    partial = path.with_name(path.name + f".{os.getpid()}.partial")
    with partial.open("wb") as out:
        # One write per 10,000 lines: the generator, not the disk, sets the pace.
        chunk: list[bytes] = []
        for message in dataset.messages():
            chunk.append(message)
            if len(chunk) >= 10_000:
                out.write(b"\n".join(chunk) + b"\n")
                chunk = []
        if chunk:
            out.write(b"\n".join(chunk) + b"\n")
    partial.replace(path)  # atomic: an interrupted run leaves no half file under the real name
    return path


def _wide_vocabulary(rng: random.Random, size: int) -> list[str]:
    """`size` DISTINCT hashtags: syllable words with a base-36 serial appended.

    The demo generator builds its vocabulary from 2 to 4 of 15 syllables, which allows only
    about 54,000 distinct names however large `vocabulary` is. The memory case needs over a
    million distinct hashtags, so it swaps this in (in its generator process only).
    """
    syllables = ("ka", "lo", "mi", "su", "te", "ra", "vo", "ni", "pe", "zu", "an", "el", "or")
    tags: list[str] = []
    for serial in range(size):
        word = "".join(rng.choice(syllables) for _ in range(rng.randint(2, 3)))
        tags.append(f"{word}{_base36(serial)}")
    return tags


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if number == 0:
            return out


def wide_messages(dataset: Dataset) -> Iterator[bytes]:
    """`dataset`'s messages with a vocabulary of distinct hashtags (see `_wide_vocabulary`).

    Everything else (Zipf popularity, authors, retweets, spam, the message shape) is the demo
    generator's own.
    """
    if hasattr(demo, "_vocabulary"):
        demo._vocabulary = _wide_vocabulary
    return dataset.messages()


def machine_info() -> dict[str, object]:
    """What the numbers were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_mb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_mb = int(line.split()[1]) // 1024
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_mb": memory_mb,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _spin(iterations: int) -> None:
    # CPU-bound Python of the counter's kind (dict gets and sets), no I/O, no shared state.
    counts: dict[int, int] = {}
    for i in range(iterations):
        key = i & 0xFFFF
        counts[key] = counts.get(key, 0) + i


def _timed_processes(jobs: list[int]) -> float:
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_spin, args=(n,)) for n in jobs]
    started = time.perf_counter()
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    return time.perf_counter() - started


def parallel_scaling(iterations: int = 4_000_000, repeat: int = 3) -> float:
    """How much faster this machine runs two independent CPU-bound Python processes side by
    side than the same work in one process (median of `repeat`, each pair back to back).

    The ceiling for ``--workers 2`` here, whose processes also share work: on a machine whose
    two CPUs are not two full cores, or with a neighbour on the host, this is below 2.
    """
    ratios = []
    for _ in range(repeat):
        alone = _timed_processes([2 * iterations])
        side_by_side = _timed_processes([iterations, iterations])
        ratios.append(alone / side_by_side)
    return round(statistics.median(ratios), 3)


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (``uptime``), rounded."""
    return [round(x, 2) for x in os.getloadavg()]


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and of its children that have ended: the
    workers of ``--workers`` once they are joined."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def postgres_cpu_seconds() -> float | None:
    """CPU seconds used so far by the local PostgreSQL server's processes (live ones, and the
    ended ones their parent has reaped), or None where /proc cannot tell (not Linux).

    The difference over a case is the database's share of the machine: on loopback it runs on
    the same cores as the case.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                line = stat.read()
        except OSError:
            continue  # ended meanwhile
        name, _, rest = line.partition(b") ")
        if not name.endswith(b"(postgres"):
            continue
        fields = rest.split()
        # After the name: state, ppid, ... utime, stime, cutime, cstime are fields 14-17.
        total += sum(int(value) for value in fields[11:15])
    return total / ticks


class CpuMeter:
    """CPU seconds over a block: this process's and its ended children's (``cpu_seconds``), and
    the local PostgreSQL server's (``postgres_cpu_seconds``, None where unknown)."""

    def __init__(self) -> None:
        self.result: dict[str, float | None] = {}

    def __enter__(self) -> CpuMeter:
        self._ours, self._postgres = cpu_seconds(), postgres_cpu_seconds()
        return self

    def __exit__(self, *_exc: object) -> None:
        postgres = postgres_cpu_seconds()
        self.result = {
            "cpu_seconds": round(cpu_seconds() - self._ours, 3),
            "postgres_cpu_seconds": (
                None
                if postgres is None or self._postgres is None
                else round(postgres - self._postgres, 3)
            ),
        }


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.data stream ...``: write messages to stdout, one per line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.data")
    parser.add_argument("command", choices=["stream"])
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rate", type=float, default=3000.0)
    parser.add_argument("--vocabulary", type=int, default=20_000)
    parser.add_argument("--authors", type=int, default=300_000)
    parser.add_argument("--spammers", type=int, default=50)
    parser.add_argument("--wide", action="store_true", help="distinct hashtags (memory case)")
    args = parser.parse_args(argv)
    dataset = Dataset(
        posts=args.count,
        seed=args.seed,
        rate=args.rate,
        vocabulary=args.vocabulary,
        authors=args.authors,
        spammers=args.spammers,
    )
    messages = wide_messages(dataset) if args.wide else dataset.messages()
    out = sys.stdout.buffer
    chunk: list[bytes] = []
    try:
        for message in messages:
            chunk.append(message)
            if len(chunk) >= 1000:
                out.write(b"\n".join(chunk) + b"\n")
                chunk = []
        if chunk:
            out.write(b"\n".join(chunk) + b"\n")
        out.flush()
    except BrokenPipeError:
        # The reader stopped early: nothing to report, and nothing more to flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
