"""Settings of `modelport serve router` (flags and MODELPORT_* variables come from here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from modelport.common.settings import ServerSettings, setting
from modelport.errors import InvalidInput
from modelport.router import discovery


@dataclass(frozen=True)
class RouterSettings(ServerSettings):
    registry: str = setting("", "Registry gRPC address for policies and aliases.")
    discovery: Literal["static", "dns", "kubernetes"] = setting(
        "static", "Where the replicas come from."
    )
    endpoints: tuple[str, ...] = setting(
        (), "static: MODEL=HOST:PORT (repeatable).", flag="--endpoint"
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
    multiplex: bool = setting(
        False, "Forward over one ModelStreamInfer stream per replica instead of a call per request."
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.discovery == "static":
            for endpoint in self.endpoints:
                discovery.parse_endpoint(endpoint)
            if not self.endpoints and self.endpoints_file is None:
                raise InvalidInput("--discovery static needs --endpoint or --endpoints-file")
        if self.discovery == "dns":
            for target in self.dns_names:
                discovery.parse_dns_target(target)
            if not self.dns_names:
                raise InvalidInput("--discovery dns needs --dns-name MODEL=NAME:PORT")
