"""The benchmark harness works: `make bench` at a tiny size produces a complete, sane report.

These tests check the harness, never the engine's speed: numbers must be present and plausible,
not fast. The harness runs for real (subprocesses, Postgres, NATS when the queue exists).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from services import NATS_URL, require_service

ROOT = Path(__file__).resolve().parents[1]
# The harness is a package at the project root, not part of the installed library.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import report, seed_baseline, soak  # noqa: E402

POSTS = 2000


@pytest.fixture(scope="module")
def bench_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One tiny run of every case, the opt-in ones included; the parsed JSON report."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    require_service("NATS", "127.0.0.1", 4222)
    out = tmp_path_factory.mktemp("bench")
    path = out / "report.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            f"--posts={POSTS}",
            "--repeat=1",
            "--scaling-iterations=100000",
            f"--baseline-posts={POSTS}",
            f"--data-dir={out}",
            f"--report={path}",
            f"--nats={NATS_URL}",
            "--memory",
            "--memory-posts=6000",
            "--memory-sample=2000",
            "--memory-vocabulary=5000",
            "--latency",
            "--latency-rate=1000",
            "--latency-seconds=1.5",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "targets" in done.stdout  # the printed report, not only the JSON
    result: dict[str, Any] = json.loads(path.read_text())
    return result


@pytest.mark.postgres
def test_report_has_every_case_with_sane_numbers(bench_report: dict[str, Any]) -> None:
    cases = bench_report["cases"]
    assert list(cases) == report.MAIN_CASES
    for name, case in cases.items():
        if name == "process" and case["status"] == "unavailable":
            assert case["reason"]  # says why rather than giving a number
            continue
        assert case["status"] == "ok", (name, case)
        assert case["posts"] == POSTS, name
        assert 0 < case["min_posts_per_second"] <= case["median_posts_per_second"]
        assert case["median_posts_per_second"] <= case["max_posts_per_second"]
        assert case["median_seconds"] > 0
        assert 10 < case["peak_rss_mb"] < 4096, name
    assert cases["run-workers2"]["children_peak_rss_mb"] > 10  # the workers were measured
    # CPU seconds of the engine cases: ours (with the workers, once joined) and Postgres's.
    for name in ("run", "run-workers2"):
        for run in cases[name]["runs"]:
            assert 0 < run["cpu_seconds"] < 10 * run["seconds"] + 1, name
            assert run["postgres_cpu_seconds"] >= 0, name  # /proc read (10 ms ticks)
    workers_cpu = cases["run-workers2"]["median_cpu_seconds"]
    assert workers_cpu > cases["run"]["median_cpu_seconds"]  # the worker's share was counted
    assert cases["run"]["runs"][0]["dead_letters"] == 0


@pytest.mark.postgres
def test_workers_and_one_process_wrote_identical_counts(bench_report: dict[str, Any]) -> None:
    checks = bench_report["checks"]
    assert checks["workers_same_counts"] is True
    (entry,) = checks["same_counts"]
    assert entry["run"]["rows"] > 0
    assert entry["run"]["tweets"] > 0
    assert entry["run-workers2"]["same"] is True
    if bench_report["cases"]["process"]["status"] == "ok":
        assert checks["process_same_counts"] is True
        assert checks["ingest"]["posts_per_second"] > 0


@pytest.mark.postgres
def test_targets_have_verdicts_and_the_ratios_are_computed(bench_report: dict[str, Any]) -> None:
    targets = {t["target"]: t for t in bench_report["targets"]}
    for target in targets.values():
        assert target["passed"] in (True, False, None)
        assert target["goal"]
    measured = [t["measured"] for name, t in targets.items() if name.startswith(("run ", "--"))]
    assert all(m is not None for m in measured)
    assert any(name.startswith("memory") for name in targets)
    assert any(name.startswith("latency") for name in targets)


@pytest.mark.postgres
def test_machine_and_load_are_recorded(bench_report: dict[str, Any]) -> None:
    assert bench_report["machine"]["nproc"] >= 1
    assert bench_report["machine"]["cpu"]
    # Two processes side by side against one: more than 0, at most about the CPU count.
    scaling = bench_report["machine"]["parallel_scaling"]
    assert 0.3 < scaling <= bench_report["machine"]["nproc"] * 1.2
    workers = next(t for t in bench_report["targets"] if t["target"].startswith("--workers 2 vs"))
    assert workers["note"].startswith(f"this machine's ceiling: {scaling:.2f}x; so at most ")
    assert "cores busy; CPU s (ours + Postgres): one process " in workers["note"]
    assert len(bench_report["load_before"]) == 3
    assert len(bench_report["load_after"]) == 3
    assert bench_report["parameters"]["posts"] == POSTS
    assert bench_report["parameters"]["file_bytes"] > 0


@pytest.mark.postgres
def test_memory_and_latency_cases_report(bench_report: dict[str, Any]) -> None:
    memory = bench_report["memory"]
    assert memory["posts"] == 6000
    assert memory["generator_exit"] == 0
    assert memory["distinct_hashtags"] > 100
    assert [s["posts"] for s in memory["samples"]] == sorted(s["posts"] for s in memory["samples"])
    assert all(s["rss_mb"] > 10 for s in memory["samples"])
    latency = bench_report["latency"]
    assert latency["posts"] == 1500
    assert latency["unseen"] == 0
    assert 0 < latency["p50_s"] <= latency["p99_s"] <= latency["max_s"]


def test_visibility_latency_is_measured_from_the_first_poll_showing_the_post() -> None:
    # Batches of posts 0-9 sent at t=1.0 and 10-19 at t=2.0; the polls show post 9 at t=1.5
    # and post 19 at t=3.0.
    sent = [(0, 1.0), (10, 2.0)]
    polls = [(1.2, -1), (1.5, 9), (2.5, 9), (3.0, 19)]
    latencies, unseen = soak.visibility_latencies(sent, 20, polls)
    assert unseen == 0
    assert latencies == pytest.approx([0.5] * 10 + [1.0] * 10)
    latencies, unseen = soak.visibility_latencies(sent, 20, polls[:3])
    assert unseen == 10


def test_the_workers_bound_is_the_scaling_over_the_cores_one_process_keeps_busy() -> None:
    run = {"median_cpu_seconds": 1.5, "median_postgres_cpu_seconds": 0.5, "median_seconds": 1.6}
    assert report.cores_busy(run) == pytest.approx(1.25)
    assert report.workers_bound(1.25, 1.9) == pytest.approx(1.52)
    assert report.workers_bound(0.8, 1.9) == 2.0  # two processes never do more than twice
    assert report.cores_busy({**run, "median_postgres_cpu_seconds": None}) is None
    assert report.workers_bound(None, 1.9) is None
    assert report.workers_bound(1.25, None) is None


def test_growth_is_relative_to_the_first_sample_at_the_threshold() -> None:
    samples = [
        {"posts": 0, "rss_mb": 50.0},
        {"posts": 1000, "rss_mb": 100.0},
        {"posts": 2000, "rss_mb": 130.0},
        {"posts": 3000, "rss_mb": 110.0},
    ]
    assert soak.growth_after(samples, 1000) == pytest.approx(0.3)
    assert soak.growth_after(samples[:2], 1000) is None


@pytest.mark.postgres
def test_seed_baseline_counts_happy_hashtags_per_hour(postgres_url: str) -> None:
    lines = [
        b'{"data": {"text": "sunny #Day :)", "created_at": "2026-01-01T10:05:00.000Z"}}\n',
        b'{"data": {"text": "rain #day", "created_at": "2026-01-01T10:06:00.000Z"}}\n',
        b'{"data": {"text": ":) #day #Cats", "created_at": "2026-01-01T11:00:00.000Z"}}\n',
        b"\n",
    ]
    seed_baseline.create_table(postgres_url)
    assert seed_baseline.count_lines(lines, postgres_url) == 3
    with psycopg.connect(postgres_url) as connection:
        rows = connection.execute(
            "SELECT hashtag, hour, count FROM hourly_counts ORDER BY hour, hashtag"
        ).fetchall()
    assert rows == [
        ("day", "2026-01-01T10", 1),
        ("cats", "2026-01-01T11", 1),
        ("day", "2026-01-01T11", 1),
    ]
