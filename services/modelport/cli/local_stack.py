"""What `modelport up` runs: registry, one inference service per model, and the router.

Everything runs in this one process, each service on its own port, as the
cluster runs them in their own pods: the router on the address clients use
(8001) balances over the inference services it is given (static discovery)
and follows the registry (8003) for aliases and traffic policies; it also
serves the OpenAI-compatible API (8000) for the generative sample, `tiny-llama`,
a small decoder trained on text the project ships (on the first run, about a
minute on two cores; then cached in the data folder). The sample models are
pushed to the registry once (alias `production` → version 1), and each
inference service follows its model's `production` and `canary` aliases there:
a version derived with `modelport models derive … --alias canary` is loaded
beside production, and a split policy sends it a slice. `--model DIR` brings the
user's own models in the same way: pushed (once per content), followed by alias,
served behind the same router.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from modelport.artifacts.refs import check_model_name
from modelport.common.settings import ServerSettings, setting
from modelport.errors import InvalidInput

SAMPLE_DECODER = "tiny-llama"  # the generative sample (inference.generative.sample_decoder)

log = logging.getLogger(__name__)

# What each inference service of the stack serves: production, and a canary once one is set.
FOLLOWED_ALIASES = ("production", "canary")


@dataclass(frozen=True)
class StackSettings(ServerSettings):
    """`modelport up`: the router's address is the stack's (TLS, if given, is the router's)."""

    host: str = setting("127.0.0.1", "Address to listen on.")
    grpc_port: int = setting(8001, "The one gRPC address clients use (router).")
    grace_seconds: float = setting(5.0, "On Ctrl-C, how long in-flight requests may take.")
    data_dir: Path = setting(
        Path(".modelport"), "Where the sample models and the registry's data live.", path="dir"
    )
    registry_port: int = setting(8003, "The registry's gRPC port.")
    http_port: int = setting(8000, "The OpenAI-compatible API of the router (-1 disables).")
    training_port: int = setting(8004, "The training service's gRPC port.")
    models: tuple[str, ...] = setting(
        ("simple", "mlp", SAMPLE_DECODER), "Sample models to serve.", cli=False
    )
    no_generative_sample: bool = setting(
        False, f"Leave out the generative sample '{SAMPLE_DECODER}' (its first start trains it)."
    )
    fast_path: Literal["auto", "off"] = setting(
        "auto",
        "The router's plain ModelInfer forwarding through modelport-fastpath (Go), as on "
        "`serve router`: auto (when the binary is built and TLS is off) or off.",
    )
    # Off by default, as on `serve inference`: a region can name any shared memory
    # object this user may open.
    allow_shared_memory: bool = setting(
        False, "Let clients on this host pass tensors through /dev/shm regions (via the router)."
    )

    user_models: tuple[str, ...] = setting(
        (),
        "A model folder to push and serve too (repeatable): [NAME=]DIR, Triton layout or a "
        "lone model.pt2; NAME defaults to the folder's name.",
        flag="--model",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        samples = set(self.served_models(with_own=False))
        seen: set[str] = set()
        for name, folder in self.own_models():
            check_model_name(name)
            if not folder.is_dir():
                raise InvalidInput(f"--model {name}={folder}: not a folder")
            if name in samples or name in seen:
                raise InvalidInput(f"--model {name}: a model of that name is served already")
            seen.add(name)

    def own_models(self) -> list[tuple[str, Path]]:
        """(name, folder) of each --model."""
        own = []
        for given in self.user_models:
            name, _, folder = given.rpartition("=")
            path = Path(folder).expanduser()
            own.append((name or path.resolve().name, path))
        return own

    def served_models(self, *, with_own: bool = True) -> tuple[str, ...]:
        samples = self.models
        if self.no_generative_sample:
            samples = tuple(name for name in samples if name != SAMPLE_DECODER)
        own = tuple(name for name, _ in self.own_models()) if with_own else ()
        return samples + own


class LocalStack:
    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.registry: Any = None
        self.inference: list[Any] = []
        self.router: Any = None
        self.training: Any = None
        self.training_port = 0
        self.address = ""  # the router's, once started
        self.registry_port = 0
        self.http_port = 0

    async def start(self) -> int:
        """Start every service; returns the router's port."""
        from modelport.client.channel import ModelportClientError
        from modelport.client.registry import ensure_pushed
        from modelport.common.fastpath_process import find_binary
        from modelport.inference.app import InferenceApp, InferenceSettings
        from modelport.inference.samples import build_samples
        from modelport.registry.server import RegistryServer, RegistrySettings
        from modelport.router.app import RouterApp
        from modelport.router.discovery import StaticDiscovery
        from modelport.router.registry_policies import RegistryPolicySource
        from modelport.router.replicas import Endpoint
        from modelport.training.server import TrainingServer, TrainingSettings

        settings = self.settings
        repo = await asyncio.to_thread(build_samples, settings.data_dir / "models")
        models = settings.served_models()
        folders = {name: repo / name for name in settings.served_models(with_own=False)}
        folders.update(settings.own_models())
        if SAMPLE_DECODER in models:
            await asyncio.to_thread(_build_decoder, repo)
        state = settings.data_dir / "registry"
        state.mkdir(parents=True, exist_ok=True)
        self.registry = RegistryServer(
            RegistrySettings(
                database=f"sqlite:///{state / 'registry.db'}",
                blob_dir=state / "blobs",
                host=settings.host,
                grpc_port=settings.registry_port,
            )
        )
        self.registry_port = await self.registry.start()
        registry_address = f"127.0.0.1:{self.registry_port}"
        for name in models:
            # Through the registry's own checks: a folder that would not serve is
            # refused here, with the registry's reason, before anything serves it.
            try:
                await asyncio.to_thread(ensure_pushed, registry_address, folders[name], name)
            except ModelportClientError as exc:
                raise InvalidInput(f"model '{name}' ({folders[name]}): {exc}") from None
        endpoints = []
        for name in models:
            # Following the registry: a fine-tuned version aliased `canary` is served
            # beside `production`, and the router splits traffic between them.
            app = InferenceApp(
                InferenceSettings(
                    host="127.0.0.1",
                    grpc_port=0,
                    metrics_port=-1,
                    registry=registry_address,
                    models=tuple(f"{name}@{alias}" for alias in FOLLOWED_ALIASES),
                    cache_dir=settings.data_dir / "cache",
                    allow_shared_memory=settings.allow_shared_memory,
                )
            )
            port = await app.start()
            self.inference.append(app)
            endpoints.append(Endpoint(name, f"127.0.0.1:{port}"))
        fast_path = None
        if settings.fast_path == "auto" and settings.tls_cert_file is None:
            fast_path = find_binary()  # None where Go was not there to build it
        self.router = RouterApp(
            StaticDiscovery(endpoints),
            RegistryPolicySource(registry_address),
            settings.server_options(),
            metrics=settings.metrics_port >= 0,
            http_port=settings.http_port,
            fast_path=fast_path,
        )
        router_port = await self.router.start()
        self.address = f"{settings.host}:{router_port}"
        self.http_port = self.router.http_port
        self.training = TrainingServer(
            TrainingSettings(
                data_dir=settings.data_dir / "training",
                registry=registry_address,
                host=settings.host,
                grpc_port=settings.training_port,
            )
        )
        self.training_port = await self.training.start()
        return router_port

    async def stop(self, grace: float = 5.0) -> None:
        if self.training is not None:
            await self.training.stop(grace)
        if self.router is not None:
            await self.router.stop(grace)
        for app in self.inference:
            await app.stop(grace)
        if self.registry is not None:
            await self.registry.stop(grace)


def _build_decoder(repo: Path) -> None:
    from modelport.inference.generative.sample_decoder import build_sample_decoder, is_built

    if not is_built(repo):
        log.warning("training the sample decoder '%s' (first start only, about a minute)",
                    SAMPLE_DECODER)  # fmt: skip
    build_sample_decoder(repo)
