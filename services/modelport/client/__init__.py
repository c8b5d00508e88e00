"""Python SDK for modelport callers: numpy in, numpy out, over the OIP v2 gRPC protocol."""

from modelport.client.channel import ModelportClientError, TlsOptions
from modelport.client.inference import AsyncInferenceClient, InferenceClient

__all__ = ["AsyncInferenceClient", "InferenceClient", "ModelportClientError", "TlsOptions"]
