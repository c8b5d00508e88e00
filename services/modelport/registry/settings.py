"""Settings of `modelport serve registry` (flags and MODELPORT_* variables come from here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from modelport.common.settings import ServerSettings, setting


@dataclass(frozen=True)
class RegistrySettings(ServerSettings):
    grpc_port: int = setting(8003, "gRPC port.")
    database: str = setting(
        "sqlite:///modelport-registry/registry.db",
        "Metadata database: a SQLAlchemy URL (sqlite:///…, postgresql://…) or a SQLite path.",
    )
    blob_dir: Path = setting(
        Path("modelport-registry/blobs"),
        "Where version archives are stored (a PVC in the cluster).",
        path="dir",
    )
    max_upload_mb: int = setting(2048, "Largest accepted version archive.")
    stale_upload_minutes: float = setting(
        60.0, "Unfinished uploads untouched this long are removed (at start and every 10 min)."
    )
    sweep_interval_seconds: float = setting(
        600.0, "Seconds between sweeps of abandoned uploads.", cli=False
    )
