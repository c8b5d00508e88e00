"""The vLLM worker process (vllm_worker.py) from modelport's side: start, talk, stop.

vLLM lives in its own environment (`make vllm` → .venv-vllm): it pins a
transformers the project cannot share. So the worker script runs under that
environment's Python and the two sides speak JSON lines over its stdin/stdout
(the protocol is in vllm_worker.py's docstring). One reader thread routes each
line to the request it answers; writes come from any thread under a lock.

Started with subprocess.Popen from a worker thread (vfork), never asyncio's
subprocess support: under uvloop that is libuv's fork, which runs gRPC's fork
handlers in the child.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import json
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from modelport.errors import FailedPrecondition, InvalidInput, Unavailable

log = logging.getLogger(__name__)

WORKER_SCRIPT = Path(__file__).with_name("vllm_worker.py")
# services/modelport/inference/generative/ → the checkout's root, where `make vllm` puts it.
_CHECKOUT_VENV = Path(__file__).resolve().parents[4] / ".venv-vllm"
PYTHON_ENV = "MODELPORT_VLLM_PYTHON"

Sink = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class VllmConfig:
    max_num_seqs: int = 64
    max_waiting: int = 256
    max_model_len: int | None = None  # None: the model's max_position_embeddings
    max_num_batched_tokens: int | None = None  # None: vLLM's default
    dtype: str = "auto"  # auto: the checkpoint's dtype (float32 when it names none)
    kv_cache_bytes: int = 0  # >0: vLLM's kv_cache_memory_bytes
    memory_fraction: float = 0.05  # vLLM's gpu_memory_utilization (on CPU: of host RAM)
    tensor_parallel_size: int = 1
    enforce_eager: bool = True  # no torch.compile / CUDA graphs: starts in a minute, not ten
    start_timeout_s: float = 600.0

    def engine_args(self, model_dir: Path, model_config: dict[str, Any]) -> dict[str, Any]:
        dtype = self.dtype
        if dtype == "auto":
            dtype = str(model_config.get("dtype") or model_config.get("torch_dtype") or "float32")
        args: dict[str, Any] = {
            "model": str(model_dir),
            "dtype": dtype,
            "max_model_len": max_model_len(self, model_config),
            "max_num_seqs": self.max_num_seqs,
            "gpu_memory_utilization": self.memory_fraction,
            "tensor_parallel_size": self.tensor_parallel_size,
            "enforce_eager": self.enforce_eager,
        }
        if self.kv_cache_bytes > 0:
            args["kv_cache_memory_bytes"] = self.kv_cache_bytes
        if self.max_num_batched_tokens:
            args["max_num_batched_tokens"] = self.max_num_batched_tokens
        return args


def read_model_config(model_dir: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((model_dir / "config.json").read_text()))
    except (OSError, ValueError) as error:
        raise InvalidInput(f"{model_dir}/config.json: {error}") from None


def max_model_len(config: VllmConfig, model_config: dict[str, Any]) -> int:
    positions = int(model_config.get("max_position_embeddings") or 2048)
    return min(config.max_model_len or positions, positions)


def vllm_python() -> Path:
    """The Python that has vLLM: $MODELPORT_VLLM_PYTHON, else the checkout's .venv-vllm."""
    configured = os.environ.get(PYTHON_ENV)
    python = Path(configured) if configured else _CHECKOUT_VENV / "bin" / "python"
    if not os.access(python, os.X_OK):
        raise FailedPrecondition(
            f"engine 'vllm' needs vLLM in its own environment: run `make vllm` (creates "
            f"{_CHECKOUT_VENV}) or set {PYTHON_ENV} to a Python that has vllm "
            f"({python} is not an executable)"
        )
    return python


class VllmWorker:
    """One worker process: vLLM's engine over one model directory."""

    def __init__(self, engine_args: dict[str, Any], *, name: str = "model") -> None:
        self.engine_args = engine_args
        self.name = name
        self.info: dict[str, Any] = {}  # the worker's "ready" line: context, KV blocks, vocab
        self.steps = 0
        self.stats: dict[str, Any] = {"running": 0, "waiting": 0, "kv_usage": 0.0, "active": 0}
        self._sinks: dict[str, Sink] = {}
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._ready: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=30)
        self._threads: list[threading.Thread] = []
        self.dead: str | None = None  # why the worker is gone, once it is

    # -- lifecycle ---------------------------------------------------------------
    async def start(self, timeout: float = 600.0) -> None:
        python = vllm_python()
        await asyncio.to_thread(self._spawn, python)
        try:
            self.info = await asyncio.wait_for(asyncio.wrap_future(self._ready), timeout)
        except TimeoutError:
            await self.close()
            raise Unavailable(
                f"model '{self.name}': vLLM did not start in {timeout:.0f} s"
            ) from None
        except FailedPrecondition:
            await self.close()
            raise

    def _spawn(self, python: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # not modelport's
        self._proc = subprocess.Popen(
            # -I: the script's folder stays off sys.path (its types.py would shadow the stdlib's)
            [str(python), "-I", str(WORKER_SCRIPT), "--engine-args", json.dumps(self.engine_args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            bufsize=1 << 16,
            env=env,
            start_new_session=True,  # its engine processes form one group, ended together
        )
        assert self._proc.stdout is not None and self._proc.stderr is not None
        for target, stream in ((self._read, self._proc.stdout), (self._drain, self._proc.stderr)):
            thread = threading.Thread(
                target=target, args=(stream,), name=f"vllm-{self.name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    async def close(self, grace: float = 20.0) -> None:
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        await asyncio.to_thread(self._stop, proc, grace)
        for thread in self._threads:
            await asyncio.to_thread(thread.join, 5.0)

    def _stop(self, proc: subprocess.Popen[str], grace: float) -> None:
        try:
            with self._write_lock:
                assert proc.stdin is not None
                proc.stdin.write('{"op":"close"}\n')
                proc.stdin.close()
        except (BrokenPipeError, ValueError, OSError):
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            log.warning(
                "model '%s': the vLLM worker did not stop in %.0f s; killed", self.name, grace
            )
        # Whatever vLLM left of its engine processes goes with the worker's group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    # -- requests ------------------------------------------------------------------
    def submit(self, wid: str, prompt: list[int], params: dict[str, Any], sink: Sink) -> None:
        with self._lock:
            if self.dead is not None:
                raise Unavailable(f"model '{self.name}': {self.dead}")
            self._sinks[wid] = sink
        self._send({"op": "submit", "id": wid, "prompt": prompt, "params": params})

    def abort(self, wid: str) -> None:
        self._send({"op": "abort", "id": wid})

    def _send(self, message: dict[str, Any]) -> None:
        line = json.dumps(message, separators=(",", ":")) + "\n"
        try:
            with self._write_lock:
                proc = self._proc
                if proc is None or proc.stdin is None:
                    raise Unavailable(f"model '{self.name}': the vLLM worker is not running")
                proc.stdin.write(line)
                proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            raise Unavailable(f"model '{self.name}': the vLLM worker has exited") from None

    # -- the reader threads --------------------------------------------------------
    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            try:
                message = json.loads(line)
            except ValueError:
                log.warning("model '%s': vLLM worker: not a protocol line: %.200s", self.name, line)
                continue
            op = message.get("op")
            if op == "out":
                self._route(message)
            elif op == "stats":
                self.steps = message["steps"]
                self.stats = message
            elif op == "ready":
                self._ready.set_result(message)
            elif op == "fatal":
                self._fail(f"vLLM failed: {message.get('error')}")
        code = self._proc.poll() if self._proc is not None else None
        self._fail(f"the vLLM worker exited (code {code})")

    def _route(self, message: dict[str, Any]) -> None:
        with self._lock:
            if message.get("finish") is not None:
                sink = self._sinks.pop(message["id"], None)
            else:
                sink = self._sinks.get(message["id"])
        if sink is not None:
            sink(message)

    def _fail(self, why: str) -> None:
        """The worker is gone: every open request ends with an error, later ones are refused."""
        tail = "\n".join(self._stderr_tail)
        with self._lock:
            if self.dead is None:
                self.dead = why
                if not self._ready.done():
                    self._ready.set_exception(
                        FailedPrecondition(f"model '{self.name}': {why}; its log ends:\n{tail}")
                    )
                elif self._proc is not None:
                    log.error("model '%s': %s; its log ends:\n%s", self.name, why, tail)
            sinks, self._sinks = self._sinks, {}
        for wid, sink in sinks.items():
            sink({"op": "out", "id": wid, "tokens": [], "finish": "error", "error": why})

    def _drain(self, stream: IO[str]) -> None:
        for line in stream:
            line = line.rstrip()
            self._stderr_tail.append(line)
            log.debug("vllm[%s]: %s", self.name, line)
