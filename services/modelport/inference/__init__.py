"""The inference service: serves PyTorch models over OIP v2 / Triton gRPC."""
