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
        "Where version archives are stored (a PVC in the cluster); with --blob-store, "
        "only where uploads are staged while they are checked.",
        path="dir",
    )
    blob_store: str = setting(
        "",
        "s3://BUCKET/PREFIX: keep blobs in an S3-compatible bucket (credentials and "
        "region from AWS_* variables) instead of --blob-dir.",
    )
    s3_endpoint: str = setting(
        "", "Endpoint of the S3-compatible service (MinIO, Ceph); default: AWS's."
    )
    max_upload_mb: int = setting(2048, "Largest accepted version archive.")
    stale_upload_minutes: float = setting(
        60.0, "Unfinished uploads untouched this long are removed (at start and every 10 min)."
    )
    sweep_interval_seconds: float = setting(
        600.0, "Seconds between sweeps of abandoned uploads.", cli=False
    )
    kek_file: Path | None = setting(
        None,
        "Key-encryption keys (a Secret): blobs are stored encrypted (AES-GCM, a data key per "
        "blob wrapped by the active KEK); re-read on change.",
        path="file",
    )
    scratch_dir: Path | None = setting(
        None,
        "With --kek-file: where an upload's plaintext lives while it is checked (a "
        "memory-backed volume keeps it off disk); default: the blob dir.",
        path="dir",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.blob_store:
            from modelport.registry.blob_backends import parse_s3_url

            parse_s3_url(self.blob_store)
