"""The chart's security: per-component certificates and identities, the policy the
router and registry read (parsed by the real policy parser), encryption and scratch
volumes, safe defaults, and a registry started from the secured scenario's rendered
args and env (parsed by the real CLI) whose rendered TLS probe passes."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from modelport.artifacts.keyring import new_key
from modelport.auth.identity import Principal
from modelport.auth.policy import Policy
from modelport.cli import main
from modelport.cli.options import settings_from
from modelport.registry.server import RegistryServer
from modelport.registry.settings import RegistrySettings

from tests.helm.helmchart import PREFIX, RELEASE, Manifest, Render, by_kind, named, scenario
from tests.support.certificates import CertificateAuthority

COMPONENTS = ("router", "registry", "inference", "loadtest")
IDENTITY = "spiffe://modelport.local/ns/serving/" + PREFIX + "-{}"


def container(workload: Manifest) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]


def env_of(workload: Manifest) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container(workload).get("env", [])}


def workloads(objects: list[Manifest]) -> dict[str, Manifest]:
    found = by_kind(objects, "Deployment") + by_kind(objects, "Job")
    return {w["metadata"]["labels"]["app.kubernetes.io/component"]: w for w in found}


def test_each_component_has_its_own_certificate_and_identity(render: Render) -> None:
    objects = render(scenario("secured"))
    certificates = {c["metadata"]["name"]: c["spec"] for c in by_kind(objects, "Certificate")}
    assert set(certificates) == {f"{PREFIX}-{c}" for c in COMPONENTS}
    for component, workload in workloads(objects).items():
        spec = certificates[f"{PREFIX}-{component}"]
        assert spec["uris"] == [IDENTITY.format(component)]
        assert "modelport.internal" in spec["dnsNames"] and "client auth" in spec["usages"]
        assert spec["issuerRef"] == {
            "name": "modelport-ca",
            "kind": "Issuer",
            "group": "cert-manager.io",
        }
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
        assert volumes["tls"]["secret"]["secretName"] == spec["secretName"]


def test_the_rendered_policy_parses_and_lets_the_fleet_read_and_infer(render: Render) -> None:
    objects = render(scenario("secured"))
    config = named(objects, "ConfigMap", f"{PREFIX}-auth")
    policy = Policy.parse(config["data"]["policy.yaml"])
    for component in ("router", "inference", "loadtest"):
        peer = policy.peers.identify([IDENTITY.format(component)])
        assert peer is not None and peer.tenant == "modelport-fleet"
        assert policy.allows(peer, "read", "mlp") and policy.allows(peer, "infer", "mlp")
        assert not policy.allows(peer, "push", "mlp")
    assert policy.peers.identify([IDENTITY.format("registry")]) is None
    team_a = Principal("team-a", "key:x", "api-key")
    assert policy.allows(team_a, "push", "team-a-fraud") and not policy.allows(
        team_a, "push", "mlp"
    )
    assert policy.quota_of("team-a").for_model("mlp").requests_per_second == 50  # type: ignore[union-attr]
    assert policy.quota_of("someone").concurrency == 4  # type: ignore[union-attr]


def test_secured_env_and_volumes_per_component(render: Render) -> None:
    objects = render(scenario("secured"))
    by_component = workloads(objects)
    inference, router, registry = (
        env_of(by_component[c]) for c in ("inference", "router", "registry")
    )
    assert inference["MODELPORT_ALLOWED_PEER"] == IDENTITY.format("router")
    for env in (inference, router):
        assert env["MODELPORT_UPSTREAM_TLS_CERT_FILE"] == "/etc/modelport/tls/tls.crt"
        assert env["MODELPORT_UPSTREAM_TLS_SERVER_NAME"] == "modelport.internal"
    for env in (router, registry):
        assert env["MODELPORT_AUTH_POLICY_FILE"] == "/etc/modelport/policy/policy.yaml"
        assert env["MODELPORT_API_KEYS_FILE"] == "/etc/modelport/api-keys/keys.yaml"
        assert env["MODELPORT_JWKS_URL"].startswith("https://idp.example.com/")
    assert "MODELPORT_AUTH_POLICY_FILE" not in inference  # inference trusts the router instead
    assert (
        registry["MODELPORT_KEK_FILE"]
        == inference["MODELPORT_KEK_FILE"]
        == "/etc/modelport/kek/kek.yaml"
    )
    volumes = {
        v["name"]: v for v in by_component["registry"]["spec"]["template"]["spec"]["volumes"]
    }
    assert volumes["scratch"]["emptyDir"]["medium"] == "Memory"
    assert volumes["kek"]["secret"]["secretName"] == "modelport-kek"
    assert all(
        env_of(w)["MODELPORT_REFLECTION"] == "false"
        for c, w in by_component.items()
        if c != "loadtest"
    )


def test_defaults_are_safe(render: Render) -> None:
    objects = render(scenario("defaults"))
    for component, workload in workloads(objects).items():
        env = env_of(workload)
        args = container(workload).get("args", [])
        if component != "loadtest":
            assert env["MODELPORT_REFLECTION"] == "false", component
        assert not any("model-control-mode" in a for a in args)  # inference: none (no load/unload)
        assert "MODELPORT_AUTH_POLICY_FILE" not in env
    assert by_kind(objects, "Certificate") == []
    assert all(c["metadata"]["name"] != f"{PREFIX}-auth" for c in by_kind(objects, "ConfigMap"))


def settings_of(
    workload: Manifest, files: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> RegistrySettings:
    """The registry container's args and env, read by the real `serve registry` command,
    with the pod's mounted paths mapped to this test's files."""

    def mapped(value: str) -> str:
        for pod_path, local in files.items():
            value = value.replace(pod_path, local)
        return value

    for name, value in env_of(workload).items():
        if name.startswith("MODELPORT_"):
            monkeypatch.setenv(name, mapped(value))
    args = [mapped(a) for a in container(workload)["args"]]
    assert args[:2] == ["serve", "registry"]
    command = main.commands["serve"].commands["registry"]  # type: ignore[attr-defined]
    context = command.make_context("registry", args[2:])
    return settings_from(RegistrySettings, context.params)


def test_a_registry_from_the_rendered_args_serves_and_its_tls_probe_passes(
    render: Render, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = render(scenario("secured"))
    registry = workloads(objects)["registry"]
    ca = CertificateAuthority()
    identity = IDENTITY.format("registry")
    leaf = ca.issue(
        "registry",
        dns=["modelport.internal", "localhost"],
        ips=["127.0.0.1"],
        uris=[identity],
        client=True,
    )
    tls = tmp_path / "tls"
    tls.mkdir()
    (tls / "ca.crt").write_bytes(ca.cert_pem)
    (tls / "tls.crt").write_bytes(leaf.cert_pem)
    (tls / "tls.key").write_bytes(leaf.key_pem)
    (tmp_path / "policy").mkdir()
    (tmp_path / "policy" / "policy.yaml").write_text(
        named(objects, "ConfigMap", f"{PREFIX}-auth")["data"]["policy.yaml"]
    )
    (tmp_path / "api-keys").mkdir()
    (tmp_path / "api-keys" / "keys.yaml").write_text("keys: []\n")
    (tmp_path / "kek").mkdir()
    (tmp_path / "kek" / "kek.yaml").write_text(
        yaml.safe_dump({"active": "k1", "keys": {"k1": base64.b64encode(new_key()).decode()}})
    )
    files = {
        "/etc/modelport/": f"{tmp_path}/",
        "/data/": f"{tmp_path}/data/",
        "/scratch": str(tmp_path / "scratch"),
    }
    settings = settings_of(registry, files, monkeypatch)
    assert settings.tls is not None and settings.tls.ca_file == tls / "ca.crt"
    assert settings.auth is not None and settings.kek_file == tmp_path / "kek" / "kek.yaml"
    assert settings.jwks_url.startswith("https://idp.example.com") and not settings.reflection
    probe = container(registry)["readinessProbe"]["exec"]["command"]
    script = probe[2].replace("/etc/modelport/tls/", f"{tls}/")

    async def serve_and_probe() -> tuple[int, int]:
        server = RegistryServer(
            settings.__class__(**{**settings.__dict__, "grpc_port": 0, "metrics_port": -1})
        )
        port = await server.start()
        try:
            ready = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-c", script, str(port), "", probe[-1]],
                capture_output=True,
                timeout=60,
                check=False,
            )
            wrong_name = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-c", script, str(port), "", "other.name"],
                capture_output=True,
                timeout=60,
                check=False,
            )
        finally:
            await server.stop(0.5)
        return ready.returncode, wrong_name.returncode

    ready, wrong_name = asyncio.run(serve_and_probe())
    assert ready == 0 and wrong_name != 0
    assert RELEASE in registry["metadata"]["name"]
