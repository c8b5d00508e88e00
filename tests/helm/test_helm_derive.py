"""Contract: with `registry.derive.executor: kubernetes` the rendered registry's real args
build the Kubernetes executor, whose Jobs validate, land GPU-only methods on the selected
GPU nodes, and carry the labels the registry's network policy admits."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import kubernetes_validate
from modelport.cli.options import settings_from
from modelport.cli.serve import serve
from modelport.registry.derive_executor import KubernetesExecutor, job_manifests
from modelport.registry.derive_jobs import DeriveJobInfo
from modelport.registry.server import make_executor
from modelport.registry.settings import RegistrySettings

from tests.helm.helmchart import PREFIX, Render, container, named, scenario

NOW = datetime.now(UTC)
JOB = DeriveJobInfo(
    "0123456789abcdef0123456789abcdef", "mlp", 1, {}, "QUEUED", "", 0.0, "", 0, "", {},
    "kubernetes", NOW, NOW,
)  # fmt: skip


def test_registry_runs_derive_jobs_as_kubernetes_jobs(render: Render) -> None:
    objects = render(scenario("derive-kubernetes"))
    registry = named(objects, "Deployment", f"{PREFIX}-registry")
    args = container(registry)["args"]
    assert registry["spec"]["template"]["spec"]["serviceAccountName"] == f"{PREFIX}-registry"
    role = named(objects, "Role", f"{PREFIX}-registry-derive")
    assert {"create", "get"} <= set(role["rules"][0]["verbs"])
    command = serve.get_command(None, "registry")  # type: ignore[attr-defined]
    context = command.make_context("registry", args[2:])
    settings = settings_from(RegistrySettings, context.params)
    executor = make_executor(settings, SimpleNamespace(jobs=None), lambda: "")  # type: ignore[arg-type]
    assert isinstance(executor, KubernetesExecutor)
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
