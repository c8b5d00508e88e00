"""`modelport loadtest --generate`: one generation load run, its table, report and plot."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from modelport.loadtest.generation import (
    GenPrompt,
    Lengths,
    StreamFn,
    grpc_stream,
    openai_stream,
    plot_generation,
    prompts_from_file,
    run_generation_load,
    summarize_generation,
    synthetic_prompts,
)


@dataclass
class GenerationOptions:
    # The OpenAI API's base (http://127.0.0.1:8000), or a gRPC address (127.0.0.1:8001,
    # grpcs://…) streamed over ModelStreamInfer.
    url: str
    model: str
    prompts_file: Path | None = None
    input_len: str = "uniform:16-128"
    output_len: str = "uniform:16-96"
    max_tokens: int = 64  # for prompts from a file that give none
    vocab: int = 500  # synthetic prompts are token ids below this
    concurrency: int = 0
    rate: float = 0.0
    duration_s: float = 10.0
    max_requests: int = 0
    temperature: float = 0.0
    report_path: Path | None = None
    plot_path: Path | None = None
    max_error_rate: float = 0.0


def _prompts(options: GenerationOptions) -> list[GenPrompt]:
    if options.prompts_file is not None:
        return prompts_from_file(options.prompts_file, options.max_tokens)
    return synthetic_prompts(
        1000,
        Lengths.parse(options.input_len),
        Lengths.parse(options.output_len),
        vocab=options.vocab,
    )


async def _run(options: GenerationOptions) -> dict[str, Any]:
    prompts = _prompts(options)
    extra = {"temperature": options.temperature, "ignore_eos": True}

    async def load(stream: StreamFn) -> tuple[list[Any], float]:
        return await run_generation_load(
            stream,
            prompts,
            concurrency=options.concurrency if options.concurrency or options.rate else 1,
            rate=options.rate,
            duration_s=options.duration_s,
            max_requests=options.max_requests,
        )

    if options.url.startswith(("http://", "https://")):
        import aiohttp

        base = options.url.rstrip("/").removesuffix("/v1")
        timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            stream = openai_stream(base, options.model, session=session, extra=extra)
            records, wall = await load(stream)
    else:
        from modelport.client import AsyncInferenceClient

        async with AsyncInferenceClient(options.url, timeout=None) as client:
            records, wall = await load(grpc_stream(client, options.model, extra=extra))
    if options.plot_path is not None:
        plot_generation(records, options.plot_path)
    return summarize_generation(records, wall)


def print_summary(summary: dict[str, Any], console: Console) -> None:
    table = Table(
        title=f"{summary['completed']}/{summary['requests']} requests in {summary['wall_s']:.1f} s"
    )
    table.add_column("ms")
    for q in ("p50", "p90", "p99", "mean"):
        table.add_column(q, justify="right")
    for label, key in (
        ("time to first token", "ttft_ms"),
        ("inter-token", "itl_ms"),
        ("end to end", "e2e_ms"),
    ):
        row = summary[key]
        table.add_row(label, *(f"{row.get(q, 0):.1f}" for q in ("p50", "p90", "p99", "mean")))
    console.print(table)
    console.print(
        f"output tokens/s {summary['output_tokens_per_s']:.1f} (aggregate), "
        f"requests/s {summary['requests_per_s']:.2f}, errors {summary['errors'] or 0}"
    )


def run_generation_session(options: GenerationOptions) -> tuple[dict[str, Any], bool]:
    summary = asyncio.run(_run(options))
    print_summary(summary, Console(stderr=True))
    if options.report_path is not None:
        options.report_path.write_text(json.dumps(summary, indent=2))
    failed = summary["requests"] - summary["completed"]
    passed = summary["completed"] > 0 and failed <= options.max_error_rate * summary["requests"]
    return summary, passed
