"""Summarising case runs: medians, ratios, the issue's targets, and the printed report."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["LABELS", "MAIN_CASES", "render", "summarise_case", "targets"]

MAIN_CASES = [
    "decode-floor",
    "decode-minimal",
    "decode-post",
    "count-lines",
    "run",
    "run-workers2",
    "seed-baseline",
    "process",
]
"""The cases every run measures, in the order each repeat runs them."""

LABELS = {
    "decode-floor": "floor: msgspec decode only, the package's X schema",
    "decode-minimal": "floor: msgspec decode only, a minimal struct",
    "decode-post": "decode only, line -> Post (decode_x)",
    "count-lines": "decode and count in memory (count_x_lines), no I/O",
    "run": "run: file -> Postgres, 1 process, sessions on",
    "run-workers2": "run --workers 2: file -> Postgres",
    "seed-baseline": "SEED-STYLE BASELINE (json.loads, split, new conn per write)",
    "process": "process: JetStream -> Postgres, 1 consumer",
    "profile": "run under cProfile",
    "memory": "memory: generator -> run -> Postgres",
    "latency": "latency: paced source -> run -> Postgres",
}


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def summarise_case(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Status and median/min/max over a case's repeats (only successful runs count)."""
    ok = [r for r in runs if "unavailable" not in r and "failed" not in r]
    summary: dict[str, Any] = {"runs": runs}
    if not ok:
        failed = [r["failed"] for r in runs if "failed" in r]
        if failed:
            summary.update(status="failed", reason=failed[0])
        else:
            unavailable = [r["unavailable"] for r in runs if "unavailable" in r]
            summary.update(status="unavailable", reason=unavailable[0] if unavailable else "")
        return summary
    rates = [r["posts_per_second"] for r in ok]
    summary.update(
        status="ok" if len(ok) == len(runs) else "partly failed",
        posts=ok[0]["posts"],
        median_posts_per_second=round(statistics.median(rates), 1),
        min_posts_per_second=round(min(rates), 1),
        max_posts_per_second=round(max(rates), 1),
        median_seconds=round(statistics.median(r["seconds"] for r in ok), 4),
        peak_rss_mb=max(r["peak_rss_mb"] for r in ok),
        children_peak_rss_mb=max(r.get("children_peak_rss_mb", 0.0) for r in ok),
    )
    for key in ("cpu_seconds", "postgres_cpu_seconds"):
        values = [r[key] for r in ok if r.get(key) is not None]
        if len(values) == len(ok):
            summary[f"median_{key}"] = round(statistics.median(values), 3)
    return summary


def _cpu(case: dict[str, Any]) -> str:
    """ "ours + Postgres" median CPU seconds of a case, where it measured them."""
    ours = case.get("median_cpu_seconds")
    if ours is None:
        return ""
    postgres = case.get("median_postgres_cpu_seconds")
    return f"{ours:.2f}" if postgres is None else f"{ours:.2f} + {postgres:.2f}"


def cores_busy(case: dict[str, Any]) -> float | None:
    """How many cores a case kept busy: its median CPU seconds, ours and Postgres's, over its
    median seconds; None where they were not measured."""
    ours, postgres = case.get("median_cpu_seconds"), case.get("median_postgres_cpu_seconds")
    seconds = case.get("median_seconds")
    if ours is None or postgres is None or not seconds:
        return None
    return float(ours + postgres) / seconds


def workers_bound(busy: float | None, scaling: float | None) -> float | None:
    """The most ``--workers 2`` can gain over one process that keeps `busy` cores busy (its
    writer thread and Postgres run beside its counting), however cheap the routing: two
    CPU-bound processes get `scaling` cores' worth of work done here, so twice one process's
    work cannot go faster than ``scaling / busy`` (nor more than 2x)."""
    if busy is None or scaling is None or busy <= 0:
        return None
    return min(2.0, scaling / busy)


def _paired(
    runs: dict[str, list[dict[str, Any]]], a: str, b: str, key: str = "posts_per_second"
) -> list[float]:
    """a/b of `key` for each repeat where both cases succeeded (same repeat = same noise)."""
    pairs = []
    for x, y in zip(runs.get(a, []), runs.get(b, []), strict=False):
        if key in x and key in y and y[key]:
            pairs.append(x[key] / y[key])
    return pairs


def _target(
    name: str, value: float | None, goal: float, unit: str, *, at_least: bool, note: str = ""
) -> dict[str, Any]:
    passed = None if value is None else (value >= goal if at_least else value <= goal)
    return {
        "target": name,
        "measured": None if value is None else round(value, 4),
        "goal": f"{'>=' if at_least else '<='} {goal:,g}{unit}",
        "unit": unit,
        "passed": passed,
        "note": note,
    }


def targets(
    runs: dict[str, list[dict[str, Any]]],
    cases: dict[str, dict[str, Any]],
    checks: dict[str, Any],
    extra: dict[str, dict[str, Any]],
    *,
    scaling: float | None = None,
) -> list[dict[str, Any]]:
    """The issue's targets, each with what was measured and PASS (True) / MISS (False) / n/a.

    `scaling` is `data.parallel_scaling`, the machine's own ceiling for ``--workers 2``.
    """
    out = []
    run = cases.get("run", {})
    out.append(
        _target(
            "run: posts/s, one process, end to end into Postgres, sessions on",
            run.get("median_posts_per_second"),
            150_000,
            " posts/s",
            at_least=True,
        )
    )
    floor = _median(_paired(runs, "run", "decode-floor", "seconds"))
    out.append(
        _target(
            "run time / decode-only floor time (same file, same repeat)",
            floor,
            2.0,
            "x",
            at_least=False,
        )
    )
    baseline = _median(_paired(runs, "run", "seed-baseline"))
    out.append(_target("run vs seed-style baseline (posts/s)", baseline, 10.0, "x", at_least=True))
    workers = _median(_paired(runs, "run-workers2", "run"))
    notes = [] if scaling is None else [f"this machine's ceiling: {scaling:.2f}x"]
    busy = cores_busy(cases.get("run", {}))
    bound = workers_bound(busy, scaling)
    if bound is not None:
        notes.append(
            f"so at most {bound:.2f}x however cheap the routing: one process keeps {busy:.2f}"
            " cores busy"
        )
    one, two = _cpu(cases.get("run", {})), _cpu(cases.get("run-workers2", {}))
    if one and two:
        notes.append(f"CPU s (ours + Postgres): one process {one}, two {two}")
    ceiling = "; ".join(notes)
    out.append(
        _target(
            "--workers 2 vs one worker (posts/s)", workers, 1.7, "x", at_least=True, note=ceiling
        )
    )
    for key, what in (
        ("workers_same_counts", "--workers 2 writes the same hashtag_counts as one worker"),
        ("process_same_counts", "process writes the same hashtag_counts as run"),
    ):
        same = checks.get(key)
        note = "" if same is not None else "not compared (the case did not run)"
        out.append(
            {
                "target": what,
                "measured": same,
                "goal": "identical",
                "unit": "",
                "passed": same,
                "note": note,
            }
        )
    process = cases.get("process", {})
    out.append(
        _target(
            "process from JetStream, one consumer: posts/s",
            process.get("median_posts_per_second"),
            100_000,
            " posts/s",
            at_least=True,
            note=process.get("reason", "") if process.get("status") != "ok" else "",
        )
    )
    memory = extra.get("memory")
    if memory is not None and "peak_rss_mb" in memory:
        scale = (
            f"{memory['posts']:,} posts, {memory['distinct_hashtags']:,} distinct hashtags"
            " (target: 10M posts, >= 1M distinct)"
        )
        out.append(
            _target(
                "memory: peak RSS", memory["peak_rss_mb"], 300, " MB", at_least=False, note=scale
            )
        )
        growth = memory.get("growth_after_first")
        out.append(
            _target(
                "memory: RSS growth after the first sample",
                None if growth is None else 100 * growth,
                20,
                " %",
                at_least=False,
                note=scale,
            )
        )
    latency = extra.get("latency")
    if latency is not None and "p99_s" in latency:
        note = (
            f"{latency['offered_rate']:,.0f} posts/s, flush every {latency['flush_interval']:g} s,"
            f" {latency['unseen']} posts never seen"
        )
        target = _target(
            "latency: p99 post -> visible", latency["p99_s"], 2.0, " s", at_least=False, note=note
        )
        if latency["unseen"]:
            target["passed"] = False  # a post that never shows up misses any latency target
        out.append(target)
    return out


def _rate(value: float | None) -> str:
    return "" if value is None else f"{value:,.0f}"


def _verdict(passed: bool | None) -> str:
    if passed is None:
        return "[yellow]n/a[/]"
    return "[bold green]PASS[/]" if passed else "[bold red]MISS[/]"


def render(console: Console, report: dict[str, Any]) -> None:
    """Print the cases table, the targets with PASS/MISS, and where it was measured."""
    table = Table(title=f"happyhashtags benchmarks: {report['parameters']['posts']:,} posts")
    for column, justify in [
        ("case", "left"),
        ("what", "left"),
        ("posts", "right"),
        ("median posts/s", "right"),
        ("min", "right"),
        ("max", "right"),
        ("median s", "right"),
        ("CPU s (+PG)", "right"),
        ("peak RSS MB", "right"),
    ]:
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for name, case in report["cases"].items():
        label = LABELS.get(name, name)
        if case["status"] not in ("ok", "partly failed"):
            table.add_row(name, label, "", f"[yellow]{case['status']}[/]", "", "", "", "", "")
            continue
        rss = f"{case['peak_rss_mb']:,.0f}"
        if name == "run-workers2":
            rss = f"{rss} + {case['children_peak_rss_mb']:,.0f}/worker"
        table.add_row(
            name,
            label,
            f"{case['posts']:,}",
            _rate(case["median_posts_per_second"]),
            _rate(case["min_posts_per_second"]),
            _rate(case["max_posts_per_second"]),
            f"{case['median_seconds']:.2f}",
            _cpu(case),
            rss,
        )
    console.print(table)
    for name, case in report["cases"].items():
        if case["status"] != "ok":
            console.print(f"[yellow]{name}: {case['status']}: {case.get('reason', '')}[/]")

    checks = Table(title="targets (ratios: median over repeats of the same-repeat ratio)")
    for column in ("target", "measured", "goal", "verdict", "note"):
        checks.add_column(column)
    for target in report["targets"]:
        measured = target["measured"]
        if isinstance(measured, float):
            shown = f"{measured:,.2f}{target['unit']}"
        else:
            shown = "" if measured is None else str(measured)
        checks.add_row(
            target["target"], shown, target["goal"], _verdict(target["passed"]), target["note"]
        )
    console.print(checks)

    for key in ("memory", "latency"):
        if key in report:
            _render_extra(console, key, report[key])
    machine = report["machine"]
    console.print(
        f"machine: {machine['nproc']} CPUs, {machine['cpu']}, {machine['memory_mb']:,} MB; "
        f"Python {machine['python']}; Postgres {report.get('postgres_version', '?')}; "
        f"{machine['date']}; load average before {report['load_before']}, "
        f"after {report['load_after']}"
    )


def _render_extra(console: Console, key: str, result: dict[str, Any]) -> None:
    if "unavailable" in result or "failed" in result:
        console.print(f"[yellow]{key}: {result.get('unavailable') or result.get('failed')}[/]")
        return
    if key == "memory":
        samples = ", ".join(f"{s['posts']:,}: {s['rss_mb']:.0f}" for s in result["samples"])
        console.print(
            f"memory: {result['posts']:,} posts, {result['distinct_hashtags']:,} distinct hashtags,"
            f" peak RSS {result['peak_rss_mb']:.0f} MB; RSS MB by posts read: {samples}"
        )
    else:
        console.print(
            f"latency: {result['posts']:,} posts at {result['offered_rate']:,.0f}/s, flush every "
            f"{result['flush_interval']:g} s: p50 {result['p50_s']} s, p90 {result['p90_s']} s, "
            f"p99 {result['p99_s']} s, max {result['max_s']} s; {result['unseen']} unseen; "
            f"polled every {result['median_poll_gap_s']} s"
        )
