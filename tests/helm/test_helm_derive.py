"""Contract: with `registry.derive.executor: kubernetes` the rendered registry's real args
build the Kubernetes executor, whose Jobs validate, land GPU-only methods on the selected
GPU nodes, and carry the labels the registry's network policy admits; with TLS on, each
Job mounts the registry's certificate Secret and its worker dials back with those files."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import kubernetes_validate
from modelport.cli.models import models
from modelport.cli.options import settings_from
from modelport.cli.serve import serve
from modelport.registry.derive_executor import KubernetesExecutor, job_manifests
from modelport.registry.derive_jobs import DeriveJobInfo
from modelport.registry.server import make_executor
from modelport.registry.settings import RegistrySettings

from tests.helm.helmchart import PREFIX, Manifest, Render, container, named, scenario

NOW = datetime.now(UTC)
JOB = DeriveJobInfo(
    "0123456789abcdef0123456789abcdef", "mlp", 1, {}, "QUEUED", "", 0.0, "", 0, "", {},
    "kubernetes", NOW, NOW,
)  # fmt: skip


def executor_of(objects: list[Manifest]) -> KubernetesExecutor:
    """The executor the rendered registry's real args build."""
    args = container(named(objects, "Deployment", f"{PREFIX}-registry"))["args"]
    command = serve.get_command(None, "registry")  # type: ignore[attr-defined]
    context = command.make_context("registry", args[2:])
    settings = settings_from(RegistrySettings, context.params)
    executor = make_executor(settings, SimpleNamespace(jobs=None), lambda: "")  # type: ignore[arg-type]
    assert isinstance(executor, KubernetesExecutor)
    return executor


def test_registry_runs_derive_jobs_as_kubernetes_jobs(render: Render) -> None:
    objects = render(scenario("derive-kubernetes"))
    registry = named(objects, "Deployment", f"{PREFIX}-registry")
    assert registry["spec"]["template"]["spec"]["serviceAccountName"] == f"{PREFIX}-registry"
    role = named(objects, "Role", f"{PREFIX}-registry-derive")
    assert {"create", "get"} <= set(role["rules"][0]["verbs"])
    executor = executor_of(objects)
    secret, job = job_manifests(executor.settings, JOB, needs_gpu=True)
    version = kubernetes_validate.utils.latest_version()
    for manifest in (secret, job):
        kubernetes_validate.validate(manifest, version, strict=True)
    pod = job["spec"]["template"]["spec"]
    assert pod["nodeSelector"]["cloud.google.com/gke-accelerator"] == "nvidia-h100-80gb"
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["containers"][0]["args"][:2] == ["models", "derive-worker"]
    # The registry's network policy admits the Job's pods.
    policy = named(objects, "NetworkPolicy", f"{PREFIX}-registry")
    selectors = [
        peer["podSelector"]["matchLabels"] for peer in policy["spec"]["ingress"][0]["from"]
    ]
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert any(
        selector.items() <= labels.items()
        for selector in selectors
        if selector.get("app.kubernetes.io/component") == "derive"
    )
    _, cpu_job = job_manifests(executor.settings, JOB, needs_gpu=False)
    assert "nodeSelector" not in cpu_job["spec"]["template"]["spec"]


def test_with_tls_a_derive_job_mounts_the_registry_certificate_and_dials_with_it(
    render: Render,
) -> None:
    objects = render(scenario("derive-kubernetes"), scenario("secured"))
    executor = executor_of(objects)
    registry = named(objects, "Deployment", f"{PREFIX}-registry")
    secret_name = f"{PREFIX}-registry-tls"  # cert-manager's Certificate for the registry
    assert any(
        v.get("secret", {}).get("secretName") == secret_name
        for v in registry["spec"]["template"]["spec"]["volumes"]
    )
    _, job = job_manifests(executor.settings, JOB, needs_gpu=False)
    kubernetes_validate.validate(job, kubernetes_validate.utils.latest_version(), strict=True)
    pod = job["spec"]["template"]["spec"]
    assert pod["volumes"][0]["secret"]["secretName"] == secret_name
    worker = pod["containers"][0]
    mount = worker["volumeMounts"][0]
    assert mount["name"] == pod["volumes"][0]["name"] and mount["readOnly"]
    # The worker's real CLI parses its args: TLS with the mounted files, the chart's name.
    command = models.get_command(None, "derive-worker")  # type: ignore[attr-defined]
    params = command.make_context("derive-worker", worker["args"][2:]).params
    assert params["registry"].endswith(".svc:8003") and params["job_id"] == JOB.id
    assert params["tls_ca_file"] == f"{mount['mountPath']}/ca.crt"
    assert params["tls_cert_file"] == f"{mount['mountPath']}/tls.crt"
    assert params["tls_key_file"] == f"{mount['mountPath']}/tls.key"
    assert params["tls_server_name"] == "modelport.internal"  # tls.serverName
