"""`modelport loadtest`: load-test a model over the OIP v2 gRPC protocol."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import click

from modelport.cli.connection import Connection, connection_options
from modelport.cli.options import option, split_multi


class Seconds(click.ParamType):
    """A duration: `10`, `10s`, `500ms`, `2m` or `1h` (seconds when no unit)."""

    name = "duration"
    _UNITS = {"": 1.0, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    _PATTERN = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        match = self._PATTERN.match(str(value))
        if match is None:
            self.fail(f"{value!r} is not a duration like 10, 10s, 500ms or 2m", param, ctx)
        return float(match.group(1)) * self._UNITS[match.group(2) or ""]


SECONDS = Seconds()


def _npy_files(values: tuple[str, ...]) -> dict[str, Path]:
    files = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise click.BadParameter(f"{value!r}: expected NAME=FILE.npy", param_hint="--input-npy")
        files[name] = Path(path)
    return files


@click.command()
@option(
    "--url",
    default="localhost:8001",
    help="host:port of the router or an inference service (grpcs:// for TLS).",
)
@option("--model", required=True, help="Model to call.")
@option("--model-version", default="", help='Version or alias ("" = the default).')
@option(
    "--random",
    "random_inputs",
    is_flag=True,
    help="Random inputs shaped from the model's metadata.",
)
@option("--shape", multiple=True, help="NAME:D1,D2 for variable (-1) dimensions (default 1).")
@option("--input-npy", multiple=True, help="NAME=FILE.npy, one per input.")
@option(
    "--requests-json",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="perf_analyzer-style JSON input data.",
)
@option(
    "--concurrency",
    type=int,
    default=0,
    help="Closed loop: callers waiting for their answer before sending again (default 1).",
)
@option(
    "--rate", type=float, default=0.0, help="Open loop: requests per second on a fixed schedule."
)
@option("--duration", type=SECONDS, default="10s", help="Measured time per load level.")
@option("--warmup", type=SECONDS, default="2s", help="Time sent before measuring.")
@option("--timeout", type=SECONDS, default="10s", help="Per-request deadline.")
@option("--streaming", is_flag=True, help="Use ModelStreamInfer (one bidi stream per caller).")
@option("--processes", type=int, default=0, help="Load processes (0 = one per usable CPU, 2 to 8).")
@option(
    "--sweep", default="", help="Comma-separated load levels (concurrency, or rates with --rate)."
)
@option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the report as JSON here ('-' = stdout).",
)
@option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write a PNG: latency over time and histogram (sweep: throughput vs p99).",
)
@option(
    "--max-error-rate",
    type=click.FloatRange(0.0, 1.0),
    default=0.0,
    help="Exit 1 when the share of failed requests exceeds this (0: any failure fails).",
)
@option(
    "--server-metrics",
    multiple=True,
    help="host:port of a /metrics page (repeat per replica): adds queue/compute times.",
)
@option(
    "--wait-ready",
    type=SECONDS,
    default="0s",
    help="First wait up to this long for the model to be ready (helm test, CI).",
)
@option(
    "--generate",
    is_flag=True,
    help="Generation load: stream tokens from the OpenAI API (--url http://host:port) "
    "or over gRPC ModelStreamInfer (--url host:port).",
)
@option(
    "--prompts",
    "prompts_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="--generate: prompts, JSON lines {prompt, max_tokens} or one text per line.",
)
@option("--input-len", default="uniform:16-128", help="--generate: synthetic prompt lengths.")
@option("--output-len", default="uniform:16-96", help="--generate: synthetic output lengths.")
@option("--max-tokens", type=int, default=64, help="--generate: for prompts that give none.")
@option("--max-requests", type=int, default=0, help="--generate: stop after this many (0: none).")
@option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="warning",
    help="Log level (the report goes to stdout or --report either way).",
)
@option("--log-format", type=click.Choice(["text", "json"]), default="text", help="Log format.")
@connection_options
def loadtest(
    url: str,
    model: str,
    model_version: str,
    random_inputs: bool,
    shape: tuple[str, ...],
    input_npy: tuple[str, ...],
    requests_json: str | None,
    concurrency: int,
    rate: float,
    duration: float,
    warmup: float,
    timeout: float,
    streaming: bool,
    processes: int,
    sweep: str,
    report_path: str | None,
    plot_path: str | None,
    max_error_rate: float,
    server_metrics: tuple[str, ...],
    wait_ready: float,
    generate: bool,
    prompts_file: str | None,
    input_len: str,
    output_len: str,
    max_tokens: int,
    max_requests: int,
    log_level: str,
    log_format: str,
    connection: Connection,
) -> None:
    """Load-test MODEL: throughput, latency percentiles and errors by gRPC status.

    Closed loop (--concurrency) or open loop (--rate, latency counted from each
    request's scheduled send time). Exits 1 when the error rate is above
    --max-error-rate or nothing succeeded.
    """
    from modelport.common import logs
    from modelport.loadtest.inputs import InputError, parse_shapes
    from modelport.loadtest.session import SessionOptions, run_session

    logs.configure(log_level, log_format)
    if concurrency and rate:
        raise click.UsageError(
            "--concurrency (closed loop) and --rate (open loop) exclude each other"
        )
    if generate:
        _generate(
            url,
            model,
            prompts_file,
            input_len,
            output_len,
            max_tokens,
            max_requests,
            concurrency,
            rate,
            duration,
            report_path,
            plot_path,
            max_error_rate,
        )
    try:
        levels = [float(v) for v in split_multi((sweep,))] if sweep else []
        shapes = parse_shapes(list(shape))  # not comma-split: "X:1,256" holds commas
    except (ValueError, InputError) as error:
        raise click.UsageError(str(error)) from None
    to_stdout = report_path == "-"
    options = SessionOptions(
        url=url,
        model=model,
        version=model_version,
        random=random_inputs,
        shapes=shapes,
        npy_files=_npy_files(input_npy),
        requests_json=Path(requests_json) if requests_json else None,
        concurrency=concurrency,
        rate=rate,
        duration_s=duration,
        warmup_s=warmup,
        timeout_s=timeout,
        streaming=streaming,
        processes=processes,
        sweep=levels,
        tls=connection.tls,
        api_key=connection.api_key,
        report_path=None if to_stdout or not report_path else Path(report_path),
        plot_path=Path(plot_path) if plot_path else None,
        max_error_rate=max_error_rate,
        server_metrics=split_multi(server_metrics),
        wait_ready_s=wait_ready,
    )
    try:
        document, passed = run_session(options)
    except (InputError, ValueError) as error:
        raise click.UsageError(str(error)) from None
    except (RuntimeError, TimeoutError) as error:
        click.echo(f"loadtest failed: {error}", err=True)
        sys.exit(2)
    if to_stdout:
        click.echo(json.dumps(document, indent=2))
    sys.exit(0 if passed else 1)


def _generate(
    url: str,
    model: str,
    prompts_file: str | None,
    input_len: str,
    output_len: str,
    max_tokens: int,
    max_requests: int,
    concurrency: int,
    rate: float,
    duration: float,
    report_path: str | None,
    plot_path: str | None,
    max_error_rate: float,
) -> None:
    from modelport.loadtest.generation_session import GenerationOptions, run_generation_session

    to_stdout = report_path == "-"
    options = GenerationOptions(
        url=url,
        model=model,
        prompts_file=Path(prompts_file) if prompts_file else None,
        input_len=input_len,
        output_len=output_len,
        max_tokens=max_tokens,
        concurrency=concurrency,
        rate=rate,
        duration_s=duration,
        max_requests=max_requests,
        report_path=None if to_stdout or not report_path else Path(report_path),
        plot_path=Path(plot_path) if plot_path else None,
        max_error_rate=max_error_rate,
    )
    try:
        summary, passed = run_generation_session(options)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    if to_stdout:
        click.echo(json.dumps(summary, indent=2))
    sys.exit(0 if passed else 1)
