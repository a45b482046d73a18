"""``make bench``: measure happyhashtags end to end, side by side with its floor and the seed.

    .venv/bin/python benchmarks/run.py                 # 1,000,000 posts, 3 repeats
    .venv/bin/python benchmarks/run.py --quick         # 100,000 posts
    .venv/bin/python benchmarks/run.py --memory --latency --profile

Every case runs in its own subprocess against its own new Postgres database (dropped after),
and the repeats are interleaved (A, B, C, A, B, C, ...) so background noise hits every case
alike. A JSON report goes to ``.bench/report-<timestamp>.json``. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the benchmarks package importable
    sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402

from benchmarks import data, queue_case, report  # noqa: E402
from benchmarks.services import DEFAULT_NATS_URL, DEFAULT_PG_ADMIN_URL, Postgres  # noqa: E402

_NEEDS_DATABASE = {
    "run",
    "run-workers2",
    "seed-baseline",
    "process",
    "profile",
    "memory",
    "latency",
}
_SAME_COUNTS_AS_RUN = ("run-workers2", "process")

console = Console(stderr=True, highlight=False)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/run.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    size = parser.add_argument_group("data")
    size.add_argument("--posts", type=int, default=1_000_000, help="posts in the file [1000000]")
    size.add_argument("--quick", action="store_true", help="100,000 posts (overrides --posts)")
    size.add_argument("--seed", type=int, default=42)
    size.add_argument("--rate", type=float, default=3000.0, help="event-time posts/s [3000]")
    size.add_argument("--vocabulary", type=int, default=20_000, help="hashtags [20000]")
    size.add_argument("--authors", type=int, default=300_000, help="authors [300000]")
    size.add_argument("--spammers", type=int, default=50, help="spam accounts [50]")
    size.add_argument("--data-dir", type=Path, default=data.DEFAULT_DATA_DIR)
    runs = parser.add_argument_group("runs")
    runs.add_argument("--repeat", type=int, default=3, help="runs of each case [3]")
    runs.add_argument(
        "--cases",
        default=",".join(report.MAIN_CASES),
        help=f"comma-separated subset of: {', '.join(report.MAIN_CASES)}",
    )
    runs.add_argument(
        "--baseline-posts",
        type=int,
        default=100_000,
        help="the seed-style baseline reads only the file's first N posts: it is slow [100000]",
    )
    runs.add_argument("--timeout", type=float, default=3600.0, help="per case run, seconds")
    runs.add_argument(
        "--scaling-iterations",
        type=int,
        default=4_000_000,
        help="work of the machine's two-process scaling check, per process [4000000]",
    )
    extra = parser.add_argument_group("opt-in cases")
    extra.add_argument("--profile", action="store_true", help="profile the run case (cProfile)")
    extra.add_argument("--memory", action="store_true", help="peak RSS over a long stream")
    extra.add_argument("--memory-posts", type=int, default=10_000_000)
    extra.add_argument("--memory-vocabulary", type=int, default=7_000_000)
    extra.add_argument("--memory-sample", type=int, default=1_000_000, help="RSS sample every N")
    extra.add_argument("--latency", action="store_true", help="post -> visible latency")
    extra.add_argument("--latency-rate", type=float, default=10_000.0)
    extra.add_argument("--latency-seconds", type=float, default=20.0)
    extra.add_argument("--latency-flush", type=float, default=1.0, help="flush interval, s")
    where = parser.add_argument_group("services and output")
    where.add_argument("--pg-admin", default=DEFAULT_PG_ADMIN_URL, help="maintenance DB URL")
    where.add_argument("--nats", default=DEFAULT_NATS_URL)
    where.add_argument("--report", type=Path, help="JSON report path [.bench/report-TIME.json]")
    args = parser.parse_args(argv)
    if args.quick:
        args.posts = 100_000
    args.case_list = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(args.case_list) - set(report.MAIN_CASES))
    if unknown:
        parser.error(f"unknown case(s): {', '.join(unknown)}")
    if args.repeat < 1 or args.posts < 1 or args.scaling_iterations < 1:
        parser.error("--repeat, --posts and --scaling-iterations must be at least 1")
    return args


def run_case(name: str, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one case in a fresh interpreter; its result, or ``{"failed": why}``."""
    with tempfile.TemporaryDirectory(prefix="hh-bench-") as tmp:
        result_path = Path(tmp) / "result.json"
        # The spec goes in a file, not on the command line, where `ps` would show any password
        # in the database URL.
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps({**spec, "case": name, "result": str(result_path)}))
        paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
        try:
            done = subprocess.run(
                [sys.executable, "-m", "benchmarks.cases", str(spec_path)],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return {"failed": f"timed out after {timeout:g} s"}
        if done.returncode != 0 or not result_path.exists():
            tail = " | ".join(done.stderr.strip().splitlines()[-5:])
            return {"failed": f"exit status {done.returncode}: {tail}"}
        result: dict[str, Any] = json.loads(result_path.read_text())
        return result


def _describe(result: dict[str, Any]) -> str:
    if "failed" in result:
        return f"[red]failed: {result['failed']}[/]"
    if "unavailable" in result:
        return f"[yellow]unavailable: {result['unavailable']}[/]"
    return (
        f"{result['posts_per_second']:,.0f} posts/s ({result['posts']:,} posts in "
        f"{result['seconds']:.2f} s, peak RSS {result['peak_rss_mb']:,.0f} MB)"
    )


class Bench:
    """One benchmark session: the data file, the databases, the results."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.postgres = Postgres(args.pg_admin)
        self.runs: dict[str, list[dict[str, Any]]] = {name: [] for name in args.case_list}
        self.checks: dict[str, Any] = {"same_counts": []}
        self.extra: dict[str, dict[str, Any]] = {}
        self.scaling: float | None = None
        self.path = Path()
        self.queue: str | None = None  # the stream the process case reads
        self.queue_error = ""
        self.consumers = 0

    def spec(self, name: str, database: str | None) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "file": str(self.path),
            "database": database,
            "nats": self.args.nats,
        }
        if name == "seed-baseline":
            spec["limit"] = min(self.args.baseline_posts, self.args.posts)
        if name == "process":
            self.consumers += 1
            spec.update(
                queue=self.queue,
                queue_error=self.queue_error,
                consumer=f"bench-{self.consumers}",  # a new consumer reads from the start
                expected_posts=self.args.posts,
            )
        return spec

    def one(self, name: str, spec: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        database = None
        if name in _NEEDS_DATABASE:
            database = self.postgres.create(name)
        spec = {**spec, "database": database}
        try:
            result = run_case(name, spec, self.args.timeout)
            console.print(f"{prefix}{name}: {_describe(result)}")
            result["database"] = database
            return result
        except BaseException:
            if database is not None:
                self.postgres.drop(database)
            raise

    def repeats(self) -> None:
        """Every case, `repeat` times, interleaved; the file goes on a stream first if needed."""
        unavailable: dict[str, str] = {}
        stream = None
        if "process" in self.args.case_list:
            reason = queue_case.unavailable_reason(self.args.nats)
            if reason is not None:
                unavailable["process"] = reason
            else:
                stream = f"HHBENCH_{uuid.uuid4().hex[:12].upper()}"
        try:
            if stream is not None:
                self._ingest(stream)
            self._repeats(unavailable)
        finally:
            if stream is not None:
                queue_case.delete_stream(self.args.nats, stream)

    def _ingest(self, stream: str) -> None:
        queue = f"{self.args.nats.rstrip('/')}/{stream}"
        console.print(f"ingest: putting the file on stream {stream} (not part of any case)")
        result = queue_case.ingest(self.path, queue, timeout=self.args.timeout)
        if "failed" in result:
            self.queue_error = result["failed"]
            console.print(f"[red]ingest failed: {result['failed']}[/]")
        else:
            self.queue = queue
            result["posts_per_second"] = self.args.posts / result["seconds"]
            console.print(
                f"ingest: {result['posts_per_second']:,.0f} posts/s "
                f"({self.args.posts:,} posts in {result['seconds']:.1f} s)"
            )
        self.checks["ingest"] = result

    def _repeats(self, unavailable: dict[str, str]) -> None:
        for repeat in range(1, self.args.repeat + 1):
            results: dict[str, dict[str, Any]] = {}
            try:
                for name in self.args.case_list:
                    if name in unavailable:
                        results[name] = {"unavailable": unavailable[name]}
                        if repeat == 1:
                            console.print(
                                f"[{repeat}/{self.args.repeat}] {name}: {_describe(results[name])}"
                            )
                        continue
                    results[name] = self.one(
                        name, self.spec(name, None), f"[{repeat}/{self.args.repeat}] "
                    )
                    if "unavailable" in results[name]:
                        unavailable[name] = results[name]["unavailable"]
                self._compare(repeat, results)
            finally:
                for result in results.values():
                    database = result.pop("database", None)
                    if database is not None:
                        self.postgres.drop(database)
            for name, result in results.items():
                self.runs[name].append(result)

    def _compare(self, repeat: int, results: dict[str, dict[str, Any]]) -> None:
        """Fingerprint the counts of `run` and of the cases that must match it."""
        run = results.get("run", {})
        if run.get("database") is None or "failed" in run:
            return
        expected = self.postgres.fingerprint(run["database"])
        entry: dict[str, Any] = {"repeat": repeat, "run": expected.as_dict()}
        for name in _SAME_COUNTS_AS_RUN:
            other = results.get(name, {})
            if other.get("database") is None or "failed" in other or "unavailable" in other:
                continue
            got = self.postgres.fingerprint(other["database"])
            entry[name] = {"same": got == expected, **got.as_dict()}
            if got != expected:
                console.print(
                    f"[bold red]{name}: hashtag_counts differ from run's[/] ({got} vs {expected})"
                )
        self.checks["same_counts"].append(entry)

    def opt_in(self, name: str, spec: dict[str, Any]) -> None:
        result = self.one(name, spec)
        database = result.pop("database", None)
        if database is not None:
            self.postgres.drop(database)
        self.extra[name] = result

    def main(self) -> int:
        args = self.args
        if not self.postgres.available():
            console.print(
                "[red]error:[/] PostgreSQL is not reachable at "
                f"{args.pg_admin.rsplit('@', 1)[-1]}: start it first"
            )
            return 2
        load_before = data.load_average()
        started = datetime.now(UTC)
        # Measured first, on the machine as the cases will find it.
        self.scaling = data.parallel_scaling(args.scaling_iterations)
        console.print(
            f"this machine runs two independent CPU-bound processes {self.scaling:.2f}x as fast "
            "as one (the ceiling for --workers 2)"
        )
        dataset = data.Dataset(
            posts=args.posts,
            seed=args.seed,
            rate=args.rate,
            vocabulary=args.vocabulary,
            authors=args.authors,
            spammers=args.spammers,
        )
        self.path = data.ensure_dataset(dataset, args.data_dir, log=console.print)
        console.print(
            f"data: {self.path} ({self.path.stat().st_size / 1e6:,.0f} MB); "
            f"load average {load_before}"
        )
        self.repeats()
        if args.profile:
            self.opt_in("profile", self.spec("profile", None))
            profile = self.extra["profile"]
            if "profile_tottime" in profile:
                print(profile["profile_tottime"])
                print(profile["profile_cumulative"])
        if args.memory:
            self.opt_in(
                "memory",
                {
                    "posts": args.memory_posts,
                    "vocabulary": args.memory_vocabulary,
                    "sample_every": args.memory_sample,
                    "authors": args.authors,
                    "rate": args.rate,
                    "seed": args.seed,
                },
            )
        if args.latency:
            self.opt_in(
                "latency",
                {
                    "rate": args.latency_rate,
                    "seconds": args.latency_seconds,
                    "flush_interval": args.latency_flush,
                },
            )
        return self.finish(dataset, started, load_before)

    def finish(self, dataset: data.Dataset, started: datetime, load_before: list[float]) -> int:
        args = self.args
        cases = {name: report.summarise_case(runs) for name, runs in self.runs.items()}
        for name, key in (
            ("run-workers2", "workers_same_counts"),
            ("process", "process_same_counts"),
        ):
            same = [e[name]["same"] for e in self.checks["same_counts"] if name in e]
            self.checks[key] = all(same) if same else None
        result: dict[str, Any] = {
            "started_at": started.isoformat(timespec="seconds"),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {**data.machine_info(), "parallel_scaling": self.scaling},
            "postgres_version": self.postgres.server_version(),
            "load_before": load_before,
            "load_after": data.load_average(),
            "parameters": {
                **dataset.as_dict(),
                "file": str(self.path),
                "file_bytes": self.path.stat().st_size,
                "repeat": args.repeat,
                "baseline_posts": min(args.baseline_posts, args.posts),
                "generator": data.generator_fingerprint(),
            },
            "cases": cases,
            "checks": self.checks,
            "targets": report.targets(
                self.runs, cases, self.checks, self.extra, scaling=self.scaling
            ),
            **self.extra,
        }
        # Wide enough for the tables when the output goes to a file or a CI log.
        out = Console(highlight=False, width=max(150, Console().width))
        report.render(out, result)
        path = args.report or args.data_dir / f"report-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        out.print(f"report: {path}")
        failed = [n for n, c in cases.items() if c["status"] in ("failed", "partly failed")]
        failed += [n for n, r in self.extra.items() if "failed" in r]
        if failed:
            console.print(f"[red]failed cases: {', '.join(failed)}[/]")
            return 1
        return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``make bench``."""
    return Bench(parse_args(argv)).main()


if __name__ == "__main__":
    sys.exit(main())
