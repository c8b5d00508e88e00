"""What people see: a live progress line while running, tables and plots afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.live import Live
from rich.table import Table

from modelport.loadtest.recorder import Samples
from modelport.loadtest.runner import Progress


@contextlib.contextmanager
def live_progress(console: Console, label: str) -> Iterator[Callable[[Progress], None]]:
    """A progress line refreshed from the workers' shared counters."""
    last: dict[str, float] = {"t": 0.0, "done": 0.0}

    def render(progress: Progress) -> str:
        done = progress.ok + progress.errors
        dt = progress.elapsed_s - last["t"]
        rps = (done - last["done"]) / dt if dt > 0 else 0.0
        last.update(t=progress.elapsed_s, done=done)
        phase = "warm-up" if progress.elapsed_s < progress.warmup_s else "measuring"
        return (
            f"[bold]{label}[/] {phase} {min(progress.elapsed_s, progress.total_s):5.1f}"
            f"/{progress.total_s:.0f}s  ok [green]{progress.ok}[/]  errors [red]"
            f"{progress.errors}[/]  in flight {progress.in_flight}  ~{rps:,.0f} req/s"
        )

    with Live("", console=console, refresh_per_second=4, transient=True) as live:
        yield lambda progress: live.update(render(progress))


def summary_table(report: dict[str, Any]) -> Table:
    lat = report["latency_ms"]
    load = (
        f"rate {report['rate']:g}/s" if report["mode"] == "open" else f"c={report['concurrency']}"
    )
    table = Table(title=f"{report['model'] or 'model'} @ {report['url']} ({load}), latency in ms")
    for column in ("sent", "ok", "errors", "req/s", "p50", "p90", "p99", "p99.9", "max ms"):
        table.add_column(column, justify="right")
    table.add_row(
        str(report["requests"]["total"]),
        str(report["requests"]["ok"]),
        str(report["requests"]["errors"]),
        f"{report['throughput_rps']:,.0f}",
        *(f"{lat[k]:.2f}" for k in ("p50", "p90", "p99", "p99.9", "max")),
    )
    return table


def errors_table(report: dict[str, Any]) -> Table | None:
    if not report["errors_by_status"]:
        return None
    table = Table(title="errors by gRPC status")
    table.add_column("status")
    table.add_column("count", justify="right")
    for status, count in sorted(report["errors_by_status"].items(), key=lambda kv: -kv[1]):
        table.add_row(status, str(count))
    return table


def sweep_table(reports: list[dict[str, Any]]) -> Table:
    table = Table(title="sweep")
    for column in ("load", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "errors", "generator"):
        table.add_column(column, justify="right")
    for r in reports:
        load = f"{r['rate']:g}/s" if r["mode"] == "open" else f"c={r['concurrency']}"
        table.add_row(
            load,
            f"{r['throughput_rps']:,.0f}",
            f"{r['latency_ms']['p50']:.2f}",
            f"{r['latency_ms']['p99']:.2f}",
            f"{r['latency_ms']['p99.9']:.2f}",
            str(r["requests"]["errors"]),
            "SATURATED" if r["generator"]["saturated"] else "ok",
        )
    return table


def print_report(console: Console, report: dict[str, Any]) -> None:
    console.print(summary_table(report))
    errors = errors_table(report)
    if errors is not None:
        console.print(errors)
    server = report.get("server")
    if server:
        parts = [
            f"{label} {server[key]:.2f} ms"
            for key, label in (("router_ms", "router"), ("queue_ms", "queue"),
                               ("compute_ms", "compute"), ("request_ms", "inference"))
            if key in server
        ]  # fmt: skip
        if "batch_size_mean" in server:
            parts.append(f"batch {server['batch_size_mean']:.1f}")
        console.print("server means: " + (", ".join(parts) or "no modelport metrics seen"))
    style = "yellow" if report["generator"]["saturated"] else "dim"
    console.print(f"[{style}]{report['generator']['note']}[/]")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed in a pod or CI
    import matplotlib.pyplot as plt

    return plt


def plot_run(samples: Samples, report: dict[str, Any], path: Path) -> None:
    """Latency over time (every request, plus a p99 per second) and a latency histogram."""
    plt = _pyplot()
    fig, (over_time, histogram) = plt.subplots(1, 2, figsize=(13, 4.5))
    ok = samples.codes == 0
    t_s = samples.starts_ns / 1e9
    lat_ms = samples.latencies_ns / 1e6
    step = max(1, ok.sum() // 50_000)  # keep the scatter light for long runs
    over_time.scatter(t_s[ok][::step], lat_ms[ok][::step], s=2, alpha=0.3, label="ok")
    if (~ok).any():
        over_time.scatter(t_s[~ok], lat_ms[~ok], s=4, color="red", label="error")
    if ok.any():
        # p99 over ~40 windows: enough points to show a spike, enough samples per point.
        width = max(0.05, float(t_s.max() - t_s.min()) / 40)
        window = np.floor(t_s[ok] / width).astype(np.int64)
        marks = np.unique(window)
        p99 = [np.percentile(lat_ms[ok][window == w], 99) for w in marks]
        over_time.step((marks + 0.5) * width, p99, where="mid", color="black", label="p99")
    over_time.set(xlabel="time since start (s)", ylabel="latency (ms)", yscale="log")
    over_time.set_title("latency over time")
    over_time.legend(loc="upper right")
    if ok.any():
        bins = np.logspace(np.log10(max(lat_ms[ok].min(), 1e-3)), np.log10(lat_ms[ok].max()), 60)
        histogram.hist(lat_ms[ok], bins=bins)
        histogram.set_xscale("log")
        for name in ("p50", "p99"):
            value = report["latency_ms"][name]
            histogram.axvline(value, color="black", linestyle="--")
            histogram.annotate(name, (value, 0), textcoords="offset points", xytext=(3, 5))
    histogram.set(xlabel="latency (ms)", ylabel="requests", title="latency histogram")
    fig.suptitle(f"{report['model']}: {report['throughput_rps']:,.0f} req/s")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sweep(reports: list[dict[str, Any]], path: Path) -> None:
    """Throughput against p99: where latency turns up is the usable capacity."""
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(7, 4.5))
    x = [r["throughput_rps"] for r in reports]
    y = [r["latency_ms"]["p99"] for r in reports]
    axis.plot(x, y, marker="o")
    for r, xi, yi in zip(reports, x, y, strict=True):
        label = f"{r['rate']:g}/s" if r["mode"] == "open" else f"c={r['concurrency']}"
        axis.annotate(label, (xi, yi), textcoords="offset points", xytext=(4, 4))
    axis.set(xlabel="throughput (req/s)", ylabel="p99 latency (ms)", title="throughput vs p99")
    axis.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
