"""Settings of `modelport serve router` (flags and MODELPORT_* variables come from here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from modelport.common.settings import ServerSettings, UpstreamSettings, setting
from modelport.errors import InvalidInput
from modelport.router import discovery


@dataclass(frozen=True)
class RouterSettings(ServerSettings, UpstreamSettings):
    registry: str = setting("", "Registry gRPC address for policies and aliases.")
    discovery: Literal["static", "dns", "kubernetes"] = setting(
        "static", "Where the replicas come from."
    )
    endpoints: tuple[str, ...] = setting(
        (), "static: MODEL=HOST:PORT (repeatable).", flag="--endpoint"
    )
    pool_endpoints: tuple[str, ...] = setting(
        (),
        "static: HOST:PORT of a pool replica (serve inference --pool), repeatable; "
        "models no dedicated replica serves are placed on the pool.",
        flag="--pool-endpoint",
    )
    endpoints_file: Path | None = setting(
        None, "static: a file of MODEL=HOST:PORT lines, re-read when it changes.", path="file"
    )
    dns_names: tuple[str, ...] = setting(
        (), "dns: MODEL=NAME:PORT of a headless Service.", flag="--dns-name"
    )
    dns_interval: float = setting(5.0, "dns: seconds between lookups.")
    namespace: str = setting("", "kubernetes: namespace to watch (all when empty).")
    label_selector: str = setting(
        "modelport.io/model", "kubernetes: selects the EndpointSlices of model Services."
    )
    index_interval: float = setting(5.0, "Seconds between index reads.")
    http_port: int = setting(
        8000, "OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions, /v1/models) "
        "for generative models; -1 disables."
    )  # fmt: skip
    multiplex: bool = setting(
        False, "Forward over one ModelStreamInfer stream per replica instead of a call per request."
    )
    stream_relay: bool = setting(
        True,
        "Relay ModelStreamInfer requests of models that answer once over one shared stream "
        "per replica instead of a stream per request.",
    )
    fast_path: Literal["auto", "on", "off"] = setting(
        "auto",
        "Forward plain ModelInfer calls through modelport-fastpath (Go), which listens on the "
        "public port and relays everything else to this router: on (or fail), auto (when the "
        "binary exists and nothing configured needs Python: TLS, access control, tracing), off.",
    )
    fast_path_binary: Path | None = setting(
        None, "The modelport-fastpath binary (default: on PATH, else build/fastpath/).", path="file"
    )
    hold_models: tuple[str, ...] = setting(
        (),
        "A model that may scale to zero (repeatable): its requests wait for a replica "
        "instead of failing, and KEDA's external scaler on this port reports its demand.",
        flag="--hold-model",
    )
    hold_queue_size: int = setting(
        256, "Requests held per model at most; more get RESOURCE_EXHAUSTED."
    )
    max_hold_seconds: float = setting(
        120.0, "Longest hold for a request sent without a deadline (then DEADLINE_EXCEEDED)."
    )
    idle_seconds: float = setting(
        300.0, "A held model with no request for this long is reported inactive (scaled to zero)."
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.discovery == "static":
            for endpoint in self.endpoints:
                discovery.parse_endpoint(endpoint)
            for address in self.pool_endpoints:
                discovery.parse_endpoint(f"pool={address}")
            if not self.endpoints and not self.pool_endpoints and self.endpoints_file is None:
                raise InvalidInput(
                    "--discovery static needs --endpoint, --pool-endpoint or --endpoints-file"
                )
        if self.hold_queue_size < 1:
            raise InvalidInput("--hold-queue-size must be at least 1")
        if self.max_hold_seconds <= 0 or self.idle_seconds <= 0:
            raise InvalidInput("--max-hold-seconds and --idle-seconds must be positive")
        if self.discovery == "dns":
            for target in self.dns_names:
                discovery.parse_dns_target(target)
            if not self.dns_names:
                raise InvalidInput("--discovery dns needs --dns-name MODEL=NAME:PORT")
