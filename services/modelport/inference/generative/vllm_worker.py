"""modelport's vLLM worker: vLLM's async engine behind a JSON-lines protocol.

Run as a script by path under the Python of `.venv-vllm` (`make vllm`), never
imported by modelport: vLLM pins a transformers that the project's environment
cannot hold, so it lives in its own environment and process. It imports vLLM
and the standard library only.

    python vllm_worker.py --engine-args '{"model": DIR, "max_model_len": 256, ...}'

stdin, one JSON object a line (modelport → worker):
    {"op": "submit", "id": ID, "prompt": [token ids], "params": {vLLM SamplingParams keys}}
    {"op": "abort", "id": ID}
    {"op": "close"}                      (or end of input: the same)
stdout, one JSON object a line (worker → modelport):
    {"op": "ready", "max_model_len": N, "kv_total_blocks": N, "block_size": N, "vocab_size": N}
    {"op": "out", "id": ID, "tokens": [...], "logprobs": [[id, lp, [[id, lp], ...]], ...] | null,
     "finish": null | "stop" | "length" | "abort" | "error", "error"?: str, "active": N}
    {"op": "stats", "steps": N, "running": N, "waiting": N, "kv_usage": F, "active": N}
    {"op": "fatal", "error": str}       (the engine could not start or died)
Every submitted id gets outputs until one has a finish; `active` is how many
requests the worker holds once that line is written. vLLM's own logs go to
stderr: stdout is the protocol's alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any, TextIO

_LINE_LIMIT = 64 << 20  # a prompt of a million token ids fits


class Channel:
    """Lines to modelport, written together once per turn of the event loop."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._pending: list[str] = []
        self._scheduled = False

    def send(self, message: dict[str, Any]) -> None:
        self._pending.append(json.dumps(message, separators=(",", ":")))
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if self._pending:
            lines, self._pending = self._pending, []
            self._stream.write("\n".join(lines) + "\n")
            self._stream.flush()


def _logprobs(positions: Any, asked: int | None) -> list[Any] | None:
    """vLLM's per-position {token id: Logprob} as [chosen id, logprob, [[id, lp], ...]]."""
    if asked is None or positions is None:
        return None
    found = []
    for position, chosen in positions:
        top = sorted(
            ((tid, lp) for tid, lp in position.items() if lp.rank is not None and lp.rank <= asked),
            key=lambda item: item[1].rank,
        )
        found.append([chosen, position[chosen].logprob, [[t, lp.logprob] for t, lp in top]])
    return found


class Worker:
    def __init__(self, engine_args: dict[str, Any], channel: Channel) -> None:
        self.engine_args = engine_args
        self.channel = channel
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.steps = 0
        self.engine: Any = None

    async def start(self) -> None:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM
        from vllm.v1.metrics.loggers import StatLoggerBase

        worker = self

        class StepStats(StatLoggerBase):
            """Told of every engine step: the step count and the scheduler's load."""

            def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
                pass

            def record(
                self,
                scheduler_stats: Any,
                iteration_stats: Any,
                mm_cache_stats: Any = None,
                engine_idx: int = 0,
            ) -> None:
                if scheduler_stats is None:
                    return
                worker.steps += 1
                worker.channel.send(
                    {
                        "op": "stats",
                        "steps": worker.steps,
                        "running": scheduler_stats.num_running_reqs,
                        "waiting": scheduler_stats.num_waiting_reqs
                        + scheduler_stats.num_skipped_waiting_reqs,
                        "kv_usage": scheduler_stats.kv_cache_usage,
                        "active": len(worker.tasks),
                    }
                )

            def log_engine_initialized(self) -> None:
                pass

        args = AsyncEngineArgs(
            **{
                "skip_tokenizer_init": True,  # modelport tokenizes and detokenizes
                "disable_log_stats": True,  # no default loggers; StepStats still runs
                **self.engine_args,
            }
        )
        self.engine = AsyncLLM.from_engine_args(args, stat_loggers=[StepStats])
        config = self.engine.vllm_config
        self.channel.send(
            {
                "op": "ready",
                "max_model_len": config.model_config.max_model_len,
                "kv_total_blocks": config.cache_config.num_gpu_blocks or 0,
                "block_size": config.cache_config.block_size,
                "vocab_size": config.model_config.get_vocab_size(),
            }
        )

    def submit(self, message: dict[str, Any]) -> None:
        request_id = str(message["id"])
        if request_id in self.tasks:
            self._finish(request_id, "error", f"request id {request_id!r} is already running")
            return
        task = asyncio.get_running_loop().create_task(self._run(request_id, message))
        self.tasks[request_id] = task

    def abort(self, request_id: str) -> None:
        task = self.tasks.get(request_id)
        if task is not None:
            task.cancel()  # vLLM's generate() aborts the request when cancelled

    def _finish(self, request_id: str, reason: str, error: str | None = None) -> None:
        self.tasks.pop(request_id, None)
        message: dict[str, Any] = {
            "op": "out", "id": request_id, "tokens": [], "logprobs": None, "finish": reason,
            "active": len(self.tasks),
        }  # fmt: skip
        if error is not None:
            message["error"] = error
        self.channel.send(message)

    async def _run(self, request_id: str, message: dict[str, Any]) -> None:
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind, SamplingParams

        asked = message["params"].get("logprobs")
        try:
            params = SamplingParams(
                **message["params"], output_kind=RequestOutputKind.DELTA, detokenize=False
            )
            prompt = TokensPrompt(prompt_token_ids=[int(t) for t in message["prompt"]])
            async for result in self.engine.generate(prompt, params, request_id):
                done = result.outputs[0]
                finish = done.finish_reason if result.finished else None
                if finish is not None:
                    self.tasks.pop(request_id, None)
                self.channel.send(
                    {
                        "op": "out",
                        "id": request_id,
                        "tokens": list(done.token_ids),
                        "logprobs": _logprobs(
                            None
                            if done.logprobs is None
                            else zip(done.logprobs, done.token_ids, strict=True),
                            asked,
                        ),
                        "finish": finish,
                        "active": len(self.tasks),
                    }
                )
                if finish is not None:
                    return
            self._finish(request_id, "error", "vLLM ended the stream without a finish reason")
        except asyncio.CancelledError:
            self._finish(request_id, "abort")
        except Exception as error:  # one request's failure is that request's only
            self._finish(request_id, "error", f"{type(error).__name__}: {error}")

    async def close(self) -> None:
        for task in list(self.tasks.values()):
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        if self.engine is not None:
            self.engine.shutdown()


async def serve(engine_args: dict[str, Any], out: TextIO) -> int:
    loop = asyncio.get_running_loop()
    channel = Channel(out)
    worker = Worker(engine_args, channel)
    try:
        await worker.start()
    except Exception as error:
        channel.send({"op": "fatal", "error": f"{type(error).__name__}: {error}"})
        channel.flush()
        return 1
    reader = asyncio.StreamReader(limit=_LINE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            message = json.loads(line)
            op = message.get("op")
            if op == "submit":
                worker.submit(message)
            elif op == "abort":
                worker.abort(str(message["id"]))
            elif op == "close":
                break
            if worker.engine.errored:
                channel.send(
                    {"op": "fatal", "error": f"vLLM's engine died: {worker.engine.dead_error}"}
                )
                break
    finally:
        await worker.close()
        channel.flush()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine-args", required=True, help="vLLM AsyncEngineArgs as JSON")
    engine_args = json.loads(parser.parse_args().engine_args)
    # The protocol keeps the real stdout; everything else printed to fd 1 (vLLM's
    # logs, its engine process's) goes to stderr.
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    return asyncio.run(serve(engine_args, protocol))


if __name__ == "__main__":  # vLLM starts its engine core by spawning this module again
    sys.exit(main())
