"""Real registry and inference services, secured: blobs and cache encrypted at rest
(models decrypted in memory only), mutual TLS on every channel, the inference
service serving only the router's certificate identity."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from modelport.artifacts.keyring import new_key
from modelport.artifacts.sealed_files import is_sealed
from modelport.auth.api_keys import new_key as new_api_key
from modelport.client.channel import ModelportClientError, TlsOptions
from modelport.client.registry import RegistryClient
from modelport.proto.inference import grpc_service_pb2_grpc as ipb_grpc

from tests.inference.requests import output, raw_request
from tests.registry.registry_servers import ThreadedRegistry, registry_settings
from tests.support.certificates import CertificateAuthority, Issued, localhost_server

X = np.arange(8, dtype=np.float32).reshape(2, 4)
ROUTER = "spiffe://modelport.test/router"
INFERENCE = "spiffe://modelport.test/inference"


def keyring(path: Path, kek_id: str) -> Path:
    path.write_text(
        yaml.safe_dump({"active": kek_id, "keys": {kek_id: base64.b64encode(new_key()).decode()}})
    )
    return path


def every_file(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


async def infer_factor(channel: grpc.aio.Channel) -> float:
    response = await ipb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
        raw_request("scale", {"INPUT0": ("FP32", X)}), timeout=30
    )
    return float(output(response, "OUTPUT0", np.float32)[0, 1] / X[0, 1])


async def test_models_are_encrypted_at_rest_and_served_from_memory(
    tmp_path: Path, make_model: Callable[..., Path], inference_server: Any
) -> None:
    model_dir = make_model("scale", 2.0)
    weights = (model_dir / "1" / "model.pt2").read_bytes()
    settings = dataclasses.replace(
        registry_settings(tmp_path), kek_file=keyring(tmp_path / "registry-kek.yaml", "r1")
    )
    registry = ThreadedRegistry(settings)
    cache = tmp_path / "cache"
    try:
        with RegistryClient(registry.address) as client:
            client.push(model_dir, name="scale", aliases=["production"])
        app = await inference_server(
            None,
            registry=registry.address,
            models=["scale@production"],
            cache_dir=cache,
            kek_file=keyring(tmp_path / "inference-kek.yaml", "i1"),
        )
        async with grpc.aio.insecure_channel(app.address) as channel:
            assert await infer_factor(channel) == 2.0
            with RegistryClient(registry.address) as client:  # a new version, still sealed
                pushed = client.push(make_model("scale", 3.0), name="scale")
                client.set_alias("scale", pushed.version, "production")
            for _ in range(300):
                if await infer_factor(channel) == 3.0:
                    break
                await asyncio.sleep(0.05)
            assert await infer_factor(channel) == 3.0
    finally:
        registry.stop()
    stored = every_file(settings.blob_dir)
    cached = every_file(cache)
    archives = [p for p in cached if p.suffix == ".tar"]
    assert len(archives) == 2 and all(is_sealed(p) for p in archives)
    assert not (cache / "models").exists() or not any((cache / "models").rglob("*.pt2"))
    for path in stored + cached:  # no run of the weights anywhere on disk
        data = path.read_bytes()
        assert all(weights[i : i + 64] not in data for i in range(0, len(weights) - 64, 2048)), path


def mtls(
    ca: CertificateAuthority, pair: Issued, folder: Path, name: str
) -> tuple[Path, Path, Path]:
    cert, key = pair.write(folder, name)
    return ca.write(folder), cert, key


async def test_mutual_tls_everywhere_and_only_the_router_may_call_inference(
    tmp_path: Path, make_model: Callable[..., Path], inference_server: Any
) -> None:
    ca = CertificateAuthority()
    folder = tmp_path / "tls"
    server = localhost_server(ca)
    ca_file, server_cert, server_key = mtls(ca, server, folder, "server")
    _, inference_cert, inference_key = mtls(
        ca, ca.issue("inference", uris=[INFERENCE], client=True), folder, "inference"
    )
    _, router_cert, router_key = mtls(
        ca, ca.issue("router", uris=[ROUTER], client=True, server=False), folder, "router"
    )
    _, other_cert, other_key = mtls(
        ca,
        ca.issue("intruder", uris=["spiffe://modelport.test/x"], client=True, server=False),
        folder,
        "intruder",
    )
    ops_key, ops_entry = new_api_key("ops")
    (tmp_path / "keys.yaml").write_text(yaml.safe_dump({"keys": [ops_entry.to_yaml_item()]}))
    (tmp_path / "policy.yaml").write_text(
        yaml.safe_dump(
            {
                "tenants": {
                    "ops": {"grants": [{"actions": ["admin"], "models": ["*"]}]},
                    "fleet": {"grants": [{"actions": ["read"], "models": ["*"]}]},
                },
                "peers": {INFERENCE: {"tenant": "fleet"}},
            }
        )
    )
    tls = {"tls_cert_file": server_cert, "tls_key_file": server_key, "tls_ca_file": ca_file}
    settings = dataclasses.replace(
        registry_settings(tmp_path),
        **tls,
        auth_policy_file=tmp_path / "policy.yaml",
        api_keys_file=tmp_path / "keys.yaml",
    )
    registry = ThreadedRegistry(settings)
    address = registry.address.replace("127.0.0.1", "localhost")
    try:
        # The admin pushes over mutual TLS (its own certificate) with its API key.
        admin_tls = TlsOptions(
            root_certificates=ca_file, certificate_chain=other_cert, private_key=other_key
        )
        with RegistryClient(address, tls=admin_tls, api_key=ops_key) as client:
            client.push(make_model("scale", 2.0), name="scale", aliases=["production"])
        app = await inference_server(
            None,
            **tls,
            registry=address,
            models=["scale@production"],
            cache_dir=tmp_path / "cache",
            upstream_tls_ca_file=ca_file,
            upstream_tls_cert_file=inference_cert,
            upstream_tls_key_file=inference_key,
            allowed_peers=(ROUTER,),
        )
        target = app.address.replace("127.0.0.1", "localhost")

        def credentials(cert: Path, key: Path) -> grpc.ChannelCredentials:
            return grpc.ssl_channel_credentials(
                ca_file.read_bytes(), key.read_bytes(), cert.read_bytes()
            )

        async with grpc.aio.secure_channel(target, credentials(router_cert, router_key)) as channel:
            assert await infer_factor(channel) == 2.0
        async with grpc.aio.secure_channel(target, credentials(other_cert, other_key)) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await infer_factor(channel)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            # Probes (health) stay open to any certificate the CA signed.
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        async with grpc.aio.secure_channel(
            target, grpc.ssl_channel_credentials(ca_file.read_bytes())
        ) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as no_certificate:
                await infer_factor(channel)
            assert no_certificate.value.code() == grpc.StatusCode.UNAVAILABLE  # the handshake fails
        # The registry refuses a client without a certificate, and one without a key.
        no_cert = RegistryClient(address, tls=TlsOptions(root_certificates=ca_file), timeout=5)
        with no_cert, pytest.raises(ModelportClientError) as error:
            no_cert.list_models()
        assert error.value.code == grpc.StatusCode.UNAVAILABLE
        no_key = RegistryClient(address, tls=admin_tls, timeout=5)
        with no_key, pytest.raises(ModelportClientError) as error:
            no_key.list_models()
        assert error.value.code == grpc.StatusCode.UNAUTHENTICATED
    finally:
        registry.stop()
