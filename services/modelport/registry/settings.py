"""Settings of `modelport serve registry` (flags and MODELPORT_* variables come from here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

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

    derive_executor: Literal["local", "kubernetes", "none"] = setting(
        "local",
        "Where derive jobs run: worker processes beside the registry, Kubernetes Jobs, or none.",
    )
    derive_workers: int = setting(1, "Local executor: derive jobs running at once.")
    derive_namespace: str = setting("", "Kubernetes executor: the namespace of the Jobs.")
    derive_image: str = setting("", "Kubernetes executor: the image the Jobs run.")
    derive_registry_address: str = setting(
        "", "Kubernetes executor: how a Job reaches this registry (its Service, HOST:PORT)."
    )
    derive_gpu_node_selector: tuple[str, ...] = setting(
        (),
        "Kubernetes executor: KEY=VALUE node labels for GPU-only methods (fp8, 2:4); repeatable.",
        flag="--derive-gpu-node-selector",
    )
    derive_gpu_resource: str = setting(
        "nvidia.com/gpu", "Kubernetes executor: the extended resource a GPU Job asks for."
    )
    derive_memory_limit: str = setting("8Gi", "Kubernetes executor: a Job's memory limit.")
    derive_job_labels: tuple[str, ...] = setting(
        (),
        "Kubernetes executor: KEY=VALUE labels on the Jobs' pods (network policies); repeatable.",
        flag="--derive-job-label",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.blob_store:
            from modelport.registry.blob_backends import parse_s3_url

            parse_s3_url(self.blob_store)
