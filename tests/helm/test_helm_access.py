"""The chart's access and operations facts: RBAC, tokens, TLS, NetworkPolicies,
observability, the helm test Job, NOTES and dev sync."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helm.helmchart import (
    CHART,
    PREFIX,
    RELEASE,
    REPO_ROOT,
    SCENARIOS,
    Render,
    arg_value,
    by_kind,
    container,
    env_of,
    named,
    pod_spec,
    run_helm,
    scenario,
)

pytestmark = pytest.mark.fast  # tier 1: no servers (`make test-fast`)

# --- router RBAC ---------------------------------------------------------------------


def test_router_role_allows_exactly_list_and_watch_on_endpointslices(render: Render) -> None:
    objects = render(scenario("defaults"))
    role = named(objects, "Role", f"{PREFIX}-router")
    assert role["rules"] == [
        {
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["list", "watch"],
        }
    ]
    binding = named(objects, "RoleBinding", f"{PREFIX}-router")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    router = named(objects, "Deployment", f"{PREFIX}-router")
    account = pod_spec(router)["serviceAccountName"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": "serving"}
    ]
    args = container(router)["args"]
    assert arg_value(args, "--discovery") == "kubernetes"
    assert arg_value(args, "--namespace") == "serving"


def test_only_the_router_mounts_an_api_token(render: Render) -> None:
    for deployment in by_kind(render(scenario("two-models-gpu-keda")), "Deployment"):
        is_router = deployment["metadata"]["labels"]["app.kubernetes.io/component"] == "router"
        assert pod_spec(deployment).get("automountServiceAccountToken", True) is is_router


# --- TLS -----------------------------------------------------------------------------


def test_tls_secret_is_mounted_and_probes_speak_tls(render: Render) -> None:
    objects = render(scenario("postgresql-tls"))
    workloads = by_kind(objects, "Deployment") + by_kind(objects, "Job")
    assert len(workloads) == 4
    for workload in workloads:
        spec = pod_spec(workload)
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["tls"]["secret"]["secretName"] == "modelport-grpc-tls"
        main = spec["containers"][0]
        assert {"name": "tls", "mountPath": "/etc/modelport/tls", "readOnly": True} in main[
            "volumeMounts"
        ]
        env = env_of(main)
        assert env["MODELPORT_TLS_CERT_FILE"]["value"] == "/etc/modelport/tls/tls.crt"
        assert env["MODELPORT_TLS_KEY_FILE"]["value"] == "/etc/modelport/tls/tls.key"
        assert env["MODELPORT_TLS_CA_FILE"]["value"] == "/etc/modelport/tls/ca.crt"
        if workload["kind"] == "Deployment":
            # kubelet's gRPC probes are plaintext: with TLS they must be exec probes.
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert "grpc" not in main[probe]
                assert main[probe]["exec"]["command"][-1] == "modelport.internal"


# --- network policies ----------------------------------------------------------------


def test_network_policies_let_only_the_router_reach_inference(render: Render) -> None:
    objects = render(scenario("two-models-gpu-keda"))
    policy = named(objects, "NetworkPolicy", f"{PREFIX}-inference")
    grpc_rule = next(r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == 8001)
    assert grpc_rule["from"] == [
        {
            "podSelector": {
                "matchLabels": {
                    "app.kubernetes.io/name": "modelport",
                    "app.kubernetes.io/instance": RELEASE,
                    "app.kubernetes.io/component": "router",
                }
            }
        }
    ]
    # ...and that selector matches the router pods' labels.
    router_pod = named(objects, "Deployment", f"{PREFIX}-router")["spec"]["template"]
    selector = grpc_rule["from"][0]["podSelector"]["matchLabels"]
    assert selector.items() <= router_pod["metadata"]["labels"].items()


def test_network_policy_lets_inference_router_and_admins_reach_registry(render: Render) -> None:
    objects = render(scenario("two-models-gpu-keda"))
    policy = named(objects, "NetworkPolicy", f"{PREFIX}-registry")
    rule = next(r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == 8003)
    components = [
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for peer in rule["from"]
        if "podSelector" in peer
    ]
    assert components == ["inference", "router"]
    admin = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ml-platform"}}}
    assert admin in rule["from"]
    # Clients restricted by routerFrom; the helm test pod is let in beside them.
    router_policy = named(objects, "NetworkPolicy", f"{PREFIX}-router")
    router_rule = router_policy["spec"]["ingress"][0]
    loadtest = [p for p in router_rule["from"] if "podSelector" in p]
    assert loadtest[0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "loadtest"


# --- observability and helm test -----------------------------------------------------


def test_otlp_endpoint_and_service_monitor(render: Render) -> None:
    objects = render(scenario("two-models-gpu-keda"))
    for deployment in by_kind(objects, "Deployment"):
        env = env_of(container(deployment))
        assert env["MODELPORT_OTLP_ENDPOINT"]["value"].endswith(":4317")
        assert env["MODELPORT_LOG_FORMAT"]["value"] == "json"
    monitor = by_kind(objects, "ServiceMonitor")[0]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    for service in by_kind(objects, "Service"):
        assert "metrics" in {port["name"] for port in service["spec"]["ports"]}
        assert monitor["spec"]["selector"]["matchLabels"].items() <= (
            service["metadata"]["labels"].items()
        )
    assert not by_kind(render(scenario("defaults")), "ServiceMonitor")


def test_helm_test_job_load_tests_the_first_model_through_the_router(render: Render) -> None:
    objects = render(scenario("two-models-gpu-keda"))
    job = by_kind(objects, "Job")[0]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "test"
    main = pod_spec(job)["containers"][0]
    env = env_of(main)
    assert env["ROUTER"]["value"] == f"{PREFIX}-router:8001"
    assert env["MODEL"]["value"] == "simple"
    script = main["args"][0]
    assert "modelport loadtest" in script and "--random" in script
    assert "exit $status" in script  # the Job fails when the load test does
    assert not by_kind(render(scenario("disabled")), "Job")


def test_dev_sync_puts_writable_sources_first_on_the_path(render: Render) -> None:
    objects = render(scenario("minimal"), sets=("devSync.enabled=true",))
    for deployment in by_kind(objects, "Deployment"):
        spec = pod_spec(deployment)
        assert spec["initContainers"][0]["name"] == "dev-sync-seed"
        main = spec["containers"][0]
        assert env_of(main)["PYTHONPATH"]["value"] == "/opt/modelport-dev"
        assert {"name": "dev-src", "mountPath": "/opt/modelport-dev"} in main["volumeMounts"]


def test_dev_sync_seed_makes_the_synced_copy_the_one_python_imports(
    render: Render, tmp_path: Path
) -> None:
    """Run the init container's script here, then edit the copy as a skaffold sync would
    (services/modelport/x.py → <dest>/modelport/x.py) and check Python loads the edit."""
    objects = render(scenario("minimal"), sets=("devSync.enabled=true",))
    seed = pod_spec(named(objects, "Deployment", f"{PREFIX}-router"))["initContainers"][0]
    assert seed["command"][:2] == ["python", "-c"]
    script = seed["command"][2].replace("/opt/modelport-dev", str(tmp_path))
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "services")}
    subprocess.run([sys.executable, "-c", script], check=True, env=environment, timeout=60)
    synced = tmp_path / "modelport" / "dev_sync_probe.py"
    synced.write_text("EDITED = True\n")
    check = "import modelport, modelport.dev_sync_probe as m; print(modelport.__file__, m.EDITED)"
    done = subprocess.run(
        [sys.executable, "-c", check],
        env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO_ROOT / 'services'}"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.split() == [str(tmp_path / "modelport" / "__init__.py"), "True"]


@pytest.mark.parametrize("values", SCENARIOS, ids=lambda p: p.name)
def test_notes_tell_how_to_reach_the_router_and_run_an_inference(helm: Path, values: Path) -> None:
    done = run_helm(
        helm,
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        "serving",
        "--dry-run=client",
        "--values",
        str(values),
    )
    assert done.returncode == 0, done.stderr
    notes = done.stdout.split("NOTES:", 1)[1]
    settings = yaml.safe_load(values.read_text()) or {}
    if settings.get("router", {}).get("enabled", True):
        assert f"port-forward svc/{PREFIX}-router 8001:8001" in notes
    models = settings.get("models", [])
    if models and settings.get("router", {}).get("enabled", True):
        assert f"--model {models[0]['name']} --random" in notes
        tls = settings.get("tls", {}).get("enabled", False)
        assert ("-cacert" in notes) is tls and ("-plaintext" in notes) is not tls
    elif not models:
        assert "No models are deployed yet" in notes
