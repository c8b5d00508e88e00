"""Named server variants for the prototype comparisons and the profiler."""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path

from . import targets

BENCH = targets.BENCH
VARIANTS = (
    "bare",
    "bare-generic",
    "modelport",
    "modelport-workers2",
    "compute-process",
    "router",
    "router-multiplex",
    "goforward",
)


def build_goforward() -> Path:
    """prototypes/goforward with Debian's Go and grpc-go (golang-go, golang-google-grpc-dev)."""
    source = BENCH / "prototypes" / "goforward"
    binary = BENCH.parent / "build" / "goforward"
    binary.parent.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": "/usr/share/gocode",
        "GOCACHE": str(BENCH.parent / "build" / "gocache"),
    }
    subprocess.run(["go", "build", "-o", str(binary), "."], cwd=source, env=env, check=True)
    return binary


def start(variant: str, repo: Path, args: argparse.Namespace, logs: Path) -> targets.Target:
    model = args.model
    if variant == "bare":
        return targets.start_bare(repo, model, logs)
    if variant == "bare-generic":
        return targets.start_script(
            variant, [str(BENCH / "bare_server.py"), str(repo), "--generic"], model, logs
        )
    if variant == "modelport":
        return targets.start_modelport(repo, model, logs, args.server_args.split())
    if variant.startswith("modelport-t"):  # modelport-t1, -t2: torch threads
        threads = variant.removeprefix("modelport-t")
        if threads.isdigit():
            target = targets.start_modelport(
                repo, model, logs, ["--torch-threads", threads, *args.server_args.split()]
            )
            target.name = variant
            return target
    if variant == "modelport-thread":  # the model in the server's own process
        target = targets.start_modelport(
            repo, model, logs, ["--executor", "thread", *args.server_args.split()]
        )
        target.name = variant
        return target
    if variant == "modelport-workers2":
        return targets.start_modelport(
            repo, model, logs, ["--workers", "2", *args.server_args.split()]
        )
    if variant == "compute-process":
        script = BENCH / "prototypes" / "compute_process.py"
        return targets.start_script(
            variant, [str(script), str(repo), model, *args.proto_args.split()], model, logs
        )
    if variant in ("router", "router-multiplex"):
        # The router alone in front of the bare server: only forwarding is measured.
        backend = targets.start_bare(repo, model, logs)
        extra = ["--multiplex"] if variant == "router-multiplex" else []
        routed = targets.start_router(backend, model, logs, [*extra, *args.router_args.split()])
        routed.name = variant
        routed.processes += backend.processes
        return routed
    if variant == "goforward":
        backend = targets.start_bare(repo, model, logs)
        binary = build_goforward()
        routed = targets.start_script(
            variant, ["-backend", f"{model}={backend.address}"], model, logs, python=str(binary)
        )
        routed.roles = {"router": routed.roles["server"], "server": backend.roles["server"]}
        routed.processes += backend.processes
        return routed
    raise SystemExit(f"unknown variant {variant}; known: {', '.join(VARIANTS)}")
