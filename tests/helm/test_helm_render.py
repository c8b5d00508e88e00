"""Every ci/*-values.yaml scenario renders, lints strictly and validates against the
Kubernetes schemas of a current release with unknown fields rejected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.helm.helmchart import (
    CHART,
    REPO_ROOT,
    SCENARIOS,
    Manifest,
    Render,
    load_manifests,
    named,
    run_helm,
    scenario,
)

pytestmark = pytest.mark.fast  # tier 1: no servers (`make test-fast`)

# The newest Kubernetes whose schemas kubernetes-validate ships (strict variant).
KUBERNETES_VERSION = kubernetes_validate.utils.latest_version()

# Custom resources have no schema in kubernetes-validate: their required fields (those
# of the CRDs' openAPIV3Schema that the chart relies on) are checked by hand below.
CUSTOM_RESOURCE_REQUIRED: dict[tuple[str, str], list[str]] = {
    ("keda.sh/v1alpha1", "ScaledObject"): [
        "spec.scaleTargetRef.name",
        "spec.triggers",
    ],
    ("monitoring.coreos.com/v1", "ServiceMonitor"): [
        "spec.selector",
        "spec.endpoints",
    ],
    ("cert-manager.io/v1", "Certificate"): [
        "spec.secretName",
        "spec.issuerRef.name",
        "spec.dnsNames",
    ],
}

# Metadata each KEDA trigger type the chart renders needs (external-push: the router).
TRIGGER_FIELDS = {
    "prometheus": ("serverAddress", "query", "threshold"),
    "external-push": ("scalerAddress", "model", "targetPendingRequests"),
}


def dig(obj: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def check_custom_resource(obj: Manifest) -> None:
    key = (obj["apiVersion"], obj["kind"])
    for field in CUSTOM_RESOURCE_REQUIRED[key]:
        assert dig(obj, field), f"{obj['kind']}/{obj['metadata']['name']}: {field} missing"
    if obj["kind"] == "ScaledObject":
        for trigger in obj["spec"]["triggers"]:
            fields = TRIGGER_FIELDS[trigger["type"]]
            for field in fields:
                value = trigger["metadata"][field]
                # KEDA trigger metadata is map[string]string: numbers must be quoted.
                assert isinstance(value, str) and value, f"trigger metadata {field}={value!r}"
            assert set(trigger["metadata"]) <= set(fields) | {"activationThreshold"}
    if obj["kind"] == "ServiceMonitor":
        for endpoint in obj["spec"]["endpoints"]:
            assert endpoint.get("port") or endpoint.get("targetPort")


@pytest.mark.parametrize("values", SCENARIOS, ids=lambda p: p.name)
def test_scenario_objects_validate_against_kubernetes_schemas(render: Render, values: Path) -> None:
    objects = render(values)
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_RESOURCE_REQUIRED:
            check_custom_resource(obj)
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            name = f"{obj['kind']}/{obj['metadata'].get('name')}"
            pytest.fail(f"{values.name}: {name} invalid for {KUBERNETES_VERSION}: {error}")


@pytest.mark.parametrize("values", SCENARIOS, ids=lambda p: p.name)
def test_scenario_renders_one_workload_per_component_and_model(
    render: Render, values: Path
) -> None:
    settings = yaml.safe_load(values.read_text()) or {}
    objects = render(values)
    expected = {f"mp-modelport-model-{model['name']}" for model in settings.get("models", [])}
    for component in ("router", "registry"):
        if settings.get(component, {}).get("enabled", True):
            expected.add(f"mp-modelport-{component}")
    if settings.get("training", {}).get("enabled", False):  # off by default
        expected.add("mp-modelport-training")
    deployments = [obj["metadata"]["name"] for obj in objects if obj["kind"] == "Deployment"]
    assert sorted(deployments) == sorted(expected)
    services = [obj["metadata"]["name"] for obj in objects if obj["kind"] == "Service"]
    assert sorted(services) == sorted(expected)


def test_duplicate_keys_are_caught() -> None:
    glued = "kind: Service\nmetadata: {name: a}\nkind: Deployment\n"
    with pytest.raises(yaml.constructor.ConstructorError):
        load_manifests(glued)


@pytest.mark.parametrize("values", SCENARIOS, ids=lambda p: p.name)
def test_scenario_lints_strictly(helm: Path, values: Path) -> None:
    done = run_helm(helm, "lint", "--strict", str(CHART), "--values", str(values))
    assert done.returncode == 0, done.stdout + done.stderr


def test_scenarios_cover_the_required_cases() -> None:
    names = {path.name for path in SCENARIOS}
    for required in (
        "defaults-values.yaml",
        "two-models-gpu-keda-values.yaml",
        "postgresql-tls-values.yaml",
        "disabled-values.yaml",
    ):
        assert required in names


def test_strict_validation_rejects_an_unknown_field() -> None:
    """The validator itself must catch what the scenarios rely on it to catch."""
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": 8001}], "clusterIp": "None"},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service, KUBERNETES_VERSION, strict=True)


def test_example_loadtest_job_is_valid_and_admitted_by_the_router_policy(
    render: Render,
) -> None:
    example = yaml.safe_load((REPO_ROOT / "deploy" / "examples" / "loadtest-job.yaml").read_text())
    kubernetes_validate.validate(example, KUBERNETES_VERSION, strict=True)
    pod = example["spec"]["template"]
    assert "modelport loadtest" in pod["spec"]["containers"][0]["args"][0]
    # The router policy of a release with restricted clients admits the loadtest pods
    # (the example is written for release "modelport", the scenarios render "mp").
    objects = render(scenario("two-models-gpu-keda"))
    policy = named(objects, "NetworkPolicy", "mp-modelport-router")
    peers = [
        p["podSelector"]["matchLabels"]
        for p in policy["spec"]["ingress"][0]["from"]
        if "podSelector" in p
    ]
    loadtest = next(p for p in peers if p.get("app.kubernetes.io/component") == "loadtest")
    expected = {**loadtest, "app.kubernetes.io/instance": "modelport"}
    assert expected.items() <= pod["metadata"]["labels"].items()
