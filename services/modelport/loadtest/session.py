"""A whole `modelport loadtest` invocation: inputs, one run or a sweep, outputs, verdict."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from modelport.client import InferenceClient, ModelportClientError, TlsOptions
from modelport.common.scrape import Scrape, scrape
from modelport.loadtest import display, inputs
from modelport.loadtest.report import summarize, verdict
from modelport.loadtest.runner import LoadSpec, RunResult, run_load
from modelport.loadtest.server_metrics import server_breakdown


@dataclass
class SessionOptions:
    url: str
    model: str
    version: str = ""
    random: bool = False
    shapes: dict[str, list[int]] = field(default_factory=dict)
    npy_files: dict[str, Path] = field(default_factory=dict)
    requests_json: Path | None = None
    concurrency: int = 0
    rate: float = 0.0
    duration_s: float = 10.0
    warmup_s: float = 1.0
    timeout_s: float = 10.0
    streaming: bool = False
    processes: int = 0
    sweep: list[float] = field(default_factory=list)
    tls: TlsOptions | None = None
    api_key: str | None = None
    report_path: Path | None = None
    plot_path: Path | None = None
    max_error_rate: float = 0.0
    server_metrics: list[str] = field(default_factory=list)  # /metrics addresses to explain
    wait_ready_s: float = 0.0  # poll ModelReady this long first (a freshly deployed stack)
    live: bool = True


def wait_until_ready(client: InferenceClient, model: str, version: str, wait_s: float) -> None:
    """Return once `model` reports ready; RuntimeError when `wait_s` passes first."""
    deadline = time.monotonic() + wait_s
    last = "not ready"
    while True:
        try:
            if client.is_model_ready(model, version):
                return
        except ModelportClientError as error:
            last = str(error)
        if time.monotonic() >= deadline:
            raise RuntimeError(f"model '{model}' not ready after {wait_s:g} s ({last})")
        time.sleep(0.5)


def build_requests(options: SessionOptions) -> list[bytes]:
    """Serialized requests from the chosen source; metadata supplies names and datatypes."""
    sources = sum([options.random, bool(options.npy_files), options.requests_json is not None])
    if sources != 1:
        raise inputs.InputError("choose one input source: --random, --input-npy or --requests-json")
    with InferenceClient(
        options.url, tls=options.tls, api_key=options.api_key, timeout=30
    ) as client:
        if options.wait_ready_s > 0:
            wait_until_ready(client, options.model, options.version, options.wait_ready_s)
        try:
            metadata = client.model_metadata(options.model, options.version)
        except ModelportClientError as error:
            if options.random:
                raise inputs.InputError(f"--random needs the model's metadata: {error}") from None
            metadata = None  # npy/json carry their own dtypes; the run will show the error
    if options.random:
        assert metadata is not None
        built = inputs.random_requests(metadata, version=options.version, shapes=options.shapes)
    elif options.npy_files:
        built = inputs.npy_requests(
            options.model, options.npy_files, version=options.version, metadata=metadata
        )
    else:
        assert options.requests_json is not None
        built = inputs.json_requests(
            options.requests_json, options.model, version=options.version, metadata=metadata
        )
    return inputs.serialize(built)


def _scrape(addresses: list[str], console: Console) -> Scrape | None:
    if not addresses:
        return None
    try:
        return scrape(*addresses)
    except (OSError, ValueError) as error:  # the run itself still counts
        console.print(f"[yellow]could not read server metrics: {error}[/]")
        return None


def _levels(options: SessionOptions, base: LoadSpec) -> list[LoadSpec]:
    if not options.sweep:
        return [base]
    if options.rate > 0:
        return [replace(base, rate=float(v)) for v in options.sweep]
    return [replace(base, concurrency=int(v), rate=0.0) for v in options.sweep]


def run_session(
    options: SessionOptions, console: Console | None = None
) -> tuple[dict[str, Any], bool]:
    """Run, print, write the report and plots; returns (report, passed)."""
    console = console or Console(stderr=True)
    requests = build_requests(options)
    concurrency = options.concurrency or (0 if options.rate > 0 else 1)
    if options.sweep and not options.rate:
        concurrency = int(options.sweep[0])
    base = LoadSpec(
        url=options.url,
        requests=requests,
        concurrency=concurrency,
        rate=options.rate,
        duration_s=options.duration_s,
        warmup_s=options.warmup_s,
        timeout_s=options.timeout_s,
        streaming=options.streaming,
        processes=options.processes,
        tls=options.tls,
        api_key=options.api_key,
    )
    reports: list[dict[str, Any]] = []
    last: RunResult | None = None
    for spec in _levels(options, base):
        label = f"rate {spec.rate:g}/s" if spec.rate else f"c={spec.concurrency}"
        before = _scrape(options.server_metrics, console)
        if options.live and console.is_terminal:
            with display.live_progress(console, label) as show:
                last = run_load(spec, on_progress=show)
        else:
            last = run_load(spec)
        report = summarize(last, model=options.model, version=options.version)
        after = _scrape(options.server_metrics, console)
        if before is not None and after is not None:
            report["server"] = server_breakdown(before, after, options.model)
        reports.append(report)
        display.print_report(console, report)

    passed_all = [verdict(r, options.max_error_rate) for r in reports]
    passed = all(ok for ok, _ in passed_all)
    document: dict[str, Any]
    if options.sweep:
        console.print(display.sweep_table(reports))
        document = {"sweep": reports}
    else:
        document = reports[0]
    document["passed"] = passed
    document["failures"] = [why for ok, why in passed_all if not ok]
    if options.report_path is not None:
        options.report_path.write_text(json.dumps(document, indent=2) + "\n")
    if options.plot_path is not None:
        if options.sweep:
            display.plot_sweep(reports, options.plot_path)
        elif last is not None:
            display.plot_run(last.samples, reports[0], options.plot_path)
    for ok, why in passed_all:
        if not ok:
            console.print(f"[red]FAILED:[/] {why}")
    return document, passed
