"""modelport: PyTorch models served over gRPC (KServe OIP v2 + Triton extensions)."""

__version__ = "0.1.0"
