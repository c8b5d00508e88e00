"""The generation load test's core: prompt sources, closed and open loop, the summary."""

from __future__ import annotations

import asyncio
import json
import random
import sys
from pathlib import Path

import aiohttp
import pytest
from modelport.loadtest.generation import (
    Lengths,
    openai_stream,
    plot_generation,
    prompts_from_file,
    run_generation_load,
    summarize_generation,
    synthetic_prompts,
)
from modelport.loadtest.generation_session import GenerationOptions, run_generation_session


def test_length_distributions_and_synthetic_prompts():
    rng = random.Random(0)
    assert Lengths.parse("fixed:7").draw(rng) == 7
    assert all(3 <= Lengths.parse("uniform:3-9").draw(rng) <= 9 for _ in range(50))
    assert Lengths.parse("normal:5,100").draw(rng) >= 1
    with pytest.raises(ValueError, match="uniform:LO-HI"):
        Lengths.parse("uniform:9-3")
    prompts = synthetic_prompts(5, Lengths.parse("fixed:4"), Lengths.parse("uniform:2-3"), vocab=50)
    assert [len(p.prompt) for p in prompts] == [4] * 5 and {p.max_tokens for p in prompts} <= {2, 3}


def test_prompts_from_a_file_of_json_lines_or_text(tmp_path: Path):
    path = tmp_path / "prompts.txt"
    path.write_text(json.dumps({"prompt": "The river", "max_tokens": 5}) + "\nThe harbor\n\n")
    prompts = prompts_from_file(path, default_max_tokens=9)
    assert [(p.prompt, p.max_tokens) for p in prompts] == [("The river", 5), ("The harbor", 9)]
    path.write_text('{"max_tokens": 5}\n')
    with pytest.raises(ValueError, match=r"prompts\.txt:1"):
        prompts_from_file(path, 9)


@pytest.mark.parametrize("loop", ["closed", "open"])
async def test_streams_against_the_openai_api_and_summarizes(served, tmp_path: Path, loop):
    url, _ = served
    prompts = synthetic_prompts(
        6, Lengths.parse("uniform:3-20"), Lengths.parse("fixed:5"), vocab=400
    )
    async with aiohttp.ClientSession() as session:
        stream = openai_stream(
            url, "tiny", session=session, extra={"ignore_eos": True, "temperature": 0}
        )
        shape = {"concurrency": 2} if loop == "closed" else {"rate": 50.0}
        records, wall = await run_generation_load(
            stream, prompts, duration_s=20, max_requests=6, **shape
        )
    summary = summarize_generation(records, wall)
    assert summary["requests"] == 6, summary
    assert summary["completed"] + sum(summary["errors"].values()) == 6, summary
    if loop == "closed":  # two callers never exceed the two slots: nothing is refused
        assert summary["completed"] == 6 and summary["output_tokens"] == 30, [
            r.error for r in records
        ]
    assert summary["ttft_ms"]["p50"] > 0 and summary["itl_ms"]["p99"] >= summary["itl_ms"]["p50"]
    assert summary["output_tokens_per_s"] > 0
    plot_generation(records, tmp_path / "latency.png")
    assert (tmp_path / "latency.png").stat().st_size > 1000


async def test_the_generation_session_streams_over_grpc_through_the_router(stack):
    one = await stack()
    options = GenerationOptions(
        url=one.address, model="tiny", input_len="uniform:3-20", output_len="fixed:5",
        vocab=400, concurrency=2, max_requests=6, duration_s=20,
    )  # fmt: skip
    summary, passed = await asyncio.to_thread(run_generation_session, options)
    assert passed and summary["completed"] == 6 and summary["output_tokens"] == 30, summary
    assert summary["ttft_ms"]["p50"] > 0 and summary["itl_ms"]["p50"] > 0


async def test_modelport_loadtest_generate_against_the_openai_api(served, tmp_path: Path):
    url, _ = served
    plot = tmp_path / "gen.png"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "modelport.cli",
        "loadtest",
        "--generate",
        "--url",
        url,
        "--model",
        "tiny",
        "--concurrency",
        "2",
        "--max-requests",
        "4",
        "--input-len",
        "uniform:3-10",
        "--output-len",
        "fixed:4",
        "--duration",
        "60s",
        "--report",
        "-",
        "--plot",
        str(plot),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    report = json.loads(out)
    assert report["completed"] == 4 and report["output_tokens"] == 16
    assert "time to first token" in err.decode() and plot.stat().st_size > 1000
    bad = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "modelport.cli",
        "loadtest",
        "--generate",
        "--url",
        url,
        "--model",
        "tiny",
        "--input-len",
        "uniform:9-3",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(bad.communicate(), 60)
    assert bad.returncode == 2 and b"uniform:LO-HI" in err
