"""`modelport models derive | compare | jobs | derive-worker`: derived versions, their numbers."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from modelport.cli.models_common import common, registry_client
from modelport.cli.output import emit, pairs, print_json, table, to_dict

# The numbers `show` and `compare` put first; any other metric follows by name.
HEADLINE = (
    "accuracy",
    "accuracy_drop",
    "relative_accuracy_drop",
    "size_bytes",
    "peak_memory_mb",
    "latency_p50_ms",
    "throughput_per_s",
)


def parse_drop(text: str) -> tuple[float, bool]:
    """'0.01' → (0.01, absolute); '1%' → (0.01, relative)."""
    relative = text.strip().endswith("%")
    try:
        value = float(text.strip().rstrip("%"))
    except ValueError:
        raise click.BadParameter(
            f"'{text}': a number (absolute) or a percentage like 1%",
            param_hint="--max-accuracy-drop",
        ) from None
    return (value / 100.0 if relative else value), relative


def _progress_bar() -> Any:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), transient=False
    )


@click.command("derive")
@click.argument("source")
@click.option(
    "--quantize",
    type=click.Choice(["int8-dynamic", "int8-weight-only", "int4-weight-only", "fp8"]),
    default=None,
    help="torchao quantization.",
)
@click.option("--dtype", type=click.Choice(["fp16", "bf16"]), default=None, help="Compute dtype.")
@click.option("--prune", type=float, default=0.0, help="Magnitude-prune this fraction of weights.")
@click.option(
    "--prune-pattern",
    type=click.Choice(["unstructured", "2:4"]),
    default=None,
    help="Pruning pattern.",
)
@click.option(
    "--compile", "compile_", type=click.Choice(["aoti"]), default=None, help="AOTInductor package."
)
@click.option(
    "--eval",
    "eval_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help=".npz (inputs + expected outputs or labels) or .jsonl (prompt/reference).",
)
@click.option(
    "--metric",
    type=click.Choice(["max-abs-diff", "mse", "top1", "perplexity"]),
    default=None,
    help="Accuracy metric (default: top1 with labels, else max-abs-diff; perplexity for LMs).",
)
@click.option("--max-accuracy-drop", default=None, help="Gate: X absolute or X% relative.")
@click.option(
    "--alias", "aliases", multiple=True, help="Point this alias at the child if it passes."
)
@click.option("--force", is_flag=True, help="Move the aliases even if the gate rejects the child.")
@click.option("--label", "labels", multiple=True, help="KEY=VALUE on the child (repeatable).")
@click.option("--no-wait", is_flag=True, help="Start the job and print its id.")
@common
def derive(
    source: str,
    quantize: str | None,
    dtype: str | None,
    prune: float,
    prune_pattern: str | None,
    compile_: str | None,
    eval_path: Path | None,
    metric: str | None,
    max_accuracy_drop: str | None,
    aliases: tuple[str, ...],
    force: bool,
    labels: tuple[str, ...],
    no_wait: bool,
    registry: str,
    as_json: bool,
) -> None:
    """Derive a child of SOURCE (NAME, NAME:VERSION or NAME@ALIAS) in the registry,
    measure it against its parent on --eval data, and gate it."""
    drop, relative = (
        parse_drop(max_accuracy_drop) if max_accuracy_drop is not None else (None, False)
    )
    if drop is not None and eval_path is None:
        raise click.UsageError("--max-accuracy-drop needs --eval DATA to measure the drop on")
    options: dict[str, Any] = dict(
        quantize=quantize or "",
        dtype=dtype or "",
        prune=prune,
        prune_pattern=prune_pattern or "",
        compile=compile_ or "",
        eval_data=eval_path,
        metric=metric or "",
        max_accuracy_drop=drop,
        relative_drop=relative,
        aliases=aliases,
        force=force,
        labels=pairs(labels, "--label"),
    )
    with registry_client(registry) as client:
        if no_wait:
            job = client.derive(source, **options)
            emit(as_json, job, f"derive job {job.id} queued for {job.parent}")
            return
        if as_json or not sys.stderr.isatty():
            job = client.derive_and_wait(source, **options)
        else:
            with _progress_bar() as bar:
                task = bar.add_task(f"deriving {source}", total=1.0)

                def on_progress(event: Any) -> None:
                    bar.update(task, completed=event.progress, description=event.stage or "working")

                job = client.derive_and_wait(source, on_progress=on_progress, **options)
    _print_job(job, as_json)
    if job.state != job.SUCCEEDED:
        raise SystemExit(1)


def _print_job(job: Any, as_json: bool) -> None:
    if as_json:
        print_json(to_dict(job))
        return
    if job.state != job.SUCCEEDED:
        click.echo(f"derive job {job.id} failed: {job.message}", err=True)
        return
    click.echo(job.message)
    rows = metric_rows([dict(job.metrics)], with_parent=True)
    if rows:
        table(
            f"{job.model}:{job.child_version} vs {job.parent}", ["metric", "parent", "child"], rows
        )


def _ordered(keys: set[str]) -> list[str]:
    first = [k for k in HEADLINE if k in keys]
    return first + sorted(keys - set(first))


def metric_rows(
    all_metrics: list[dict[str, float]], *, with_parent: bool = False
) -> list[list[Any]]:
    if with_parent:
        metrics = all_metrics[0]
        own = {k for k in metrics if not k.startswith("parent.")}
        return [[k, _fmt(metrics.get(f"parent.{k}")), _fmt(metrics.get(k))] for k in _ordered(own)]
    keys = {k for m in all_metrics for k in m if not k.startswith("parent.")}
    return [[k, *(_fmt(m.get(k)) for m in all_metrics)] for k in _ordered(keys)]


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.6g}"


@click.command("compare")
@click.argument("first")
@click.argument("second")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write a bar chart (PNG) of the ratios second/first.",
)
@common
def compare(first: str, second: str, plot: Path | None, registry: str, as_json: bool) -> None:
    """Two versions (NAME:VERSION or NAME@ALIAS) side by side: lineage, status and metrics."""
    with registry_client(registry) as client:
        a, b = client.get_version(first), client.get_version(second)
    if as_json:
        print_json({"first": to_dict(a), "second": to_dict(b)})
    else:
        columns = ["", f"{a.model}:{a.version}", f"{b.model}:{b.version}"]
        rows: list[list[Any]] = [
            ["parent", a.parent, b.parent],
            ["method", a.lineage.method, b.lineage.method],
            ["status", a.status, b.status],
            ["archive size", a.size_bytes, b.size_bytes],
        ]
        rows += metric_rows([dict(a.metrics), dict(b.metrics)])
        table("compare", columns, rows)
    if plot is not None:
        write_ratio_plot(plot, f"{a.model}:{a.version}", f"{b.model}:{b.version}", a, b)
        if not as_json:
            click.echo(f"plot written to {plot}")


def write_ratio_plot(path: Path, first: str, second: str, a: Any, b: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, ratios = [], []
    for key in ("size_bytes", "peak_memory_mb", "latency_p50_ms", "throughput_per_s", "accuracy"):
        x = a.size_bytes if key == "size_bytes" and key not in a.metrics else a.metrics.get(key)
        y = b.size_bytes if key == "size_bytes" and key not in b.metrics else b.metrics.get(key)
        if x and y is not None:
            names.append(key)
            ratios.append(y / x)
    figure, axes = plt.subplots(figsize=(7, 3.5))
    axes.barh(names, ratios)
    axes.axvline(1.0, color="black", linewidth=0.8)
    axes.set_xlabel(f"{second} / {first}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


@click.command("jobs")
@click.argument("name", required=False, default="")
@common
def jobs(name: str, registry: str, as_json: bool) -> None:
    """Derive jobs (of model NAME, or all): state, stage, child and verdict."""
    with registry_client(registry) as client:
        found = client.list_derive_jobs(name)
    if as_json:
        print_json([to_dict(j) for j in found])
        return
    rows = [
        [
            j.id[:12],
            j.parent,
            _method(j),
            j.State.Name(j.state),
            j.stage,
            j.child_version or "",
            j.verdict,
        ]
        for j in found
    ]
    table("derive jobs", ["job", "parent", "method", "state", "stage", "child", "verdict"], rows)


def _method(job: Any) -> str:
    from modelport.compression.spec import DeriveSpec

    s = job.spec
    return DeriveSpec(s.prune, s.prune_pattern, s.dtype, s.quantize, s.compile).method()


@click.command("derive-worker", hidden=True)
@click.option("--registry", required=True, help="The registry that owns the job.")
@click.option("--job", "job_id", required=True, help="The derive job's id.")
def derive_worker(registry: str, job_id: str) -> None:
    """Run one derive job (the registry starts this; the token is in MODELPORT_DERIVE_TOKEN)."""
    import logging

    from modelport.compression.worker import run_job

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    token = os.environ.get("MODELPORT_DERIVE_TOKEN", "")
    if not token:
        raise click.UsageError("MODELPORT_DERIVE_TOKEN is not set")
    raise SystemExit(run_job(registry, job_id, token))
