"""The Grafana dashboard ships in the chart, parses, and queries only metrics that the
services export (names from the metric conventions), covering what on-call needs first."""

from __future__ import annotations

import json
import re
from typing import Any

import promql_parser
import pytest

from tests.helm.helmchart import RELEASE, Render, by_kind, scenario

pytestmark = pytest.mark.fast  # tier 1: no servers (`make test-fast`)

COUNTERS = {
    "modelport_inference_requests_total",
    "modelport_router_requests_total",
    "modelport_router_picks_total",
    "modelport_router_retries_total",
    "modelport_router_ejections_total",
    "modelport_router_policy_splits_total",
    "modelport_registry_uploads_total",
    "modelport_registry_downloads_total",
    "modelport_generation_prompt_tokens_total",
    "modelport_generation_generated_tokens_total",
    "modelport_generation_sequences_total",
}
GAUGES = {
    "modelport_inference_in_flight",
    "modelport_inference_queue_depth",
    "modelport_router_replica_in_flight",
    "modelport_registry_watch_subscribers",
    "modelport_generation_running",
    "modelport_generation_waiting",
    "modelport_generation_kv_usage",
    "modelport_generation_preemptions",
}
HISTOGRAMS = {
    "modelport_inference_request_duration_seconds",
    "modelport_inference_queue_duration_seconds",
    "modelport_inference_compute_duration_seconds",
    "modelport_inference_batch_size",
    "modelport_router_request_duration_seconds",
    "modelport_generation_time_to_first_token_duration_seconds",
    "modelport_generation_inter_token_duration_seconds",
    "modelport_generation_e2e_duration_seconds",
}
EXPORTED = (
    COUNTERS
    | GAUGES
    | {f"{name}_{suffix}" for name in HISTOGRAMS for suffix in ("bucket", "sum", "count")}
)

# What an on-call engineer looks at first, as the metrics that answer it.
ON_CALL = {
    "request rate and errors by model/code": "modelport_router_requests_total",
    "p50/p99 latency": "modelport_router_request_duration_seconds_bucket",
    "queue time": "modelport_inference_queue_duration_seconds_bucket",
    "compute time": "modelport_inference_compute_duration_seconds_bucket",
    "batch size": "modelport_inference_batch_size_sum",
    "in-flight per pod": "modelport_inference_in_flight",
    "router per-replica in-flight": "modelport_router_replica_in_flight",
    "retries": "modelport_router_retries_total",
    "ejections": "modelport_router_ejections_total",
    "registry uploads": "modelport_registry_uploads_total",
    "registry downloads": "modelport_registry_downloads_total",
    "time to first token": "modelport_generation_time_to_first_token_duration_seconds_bucket",
    "inter-token latency": "modelport_generation_inter_token_duration_seconds_bucket",
    "generated tokens/s": "modelport_generation_generated_tokens_total",
    "waiting sequences": "modelport_generation_waiting",
    "KV cache usage": "modelport_generation_kv_usage",
}

# Grafana variables are substituted before Prometheus sees a query.
GRAFANA_SUBSTITUTIONS = {"$__rate_interval": "5m", "$namespace": ".*", "$model": ".*"}


@pytest.fixture(scope="module")
def dashboard(render: Render) -> dict[str, Any]:
    objects = render(scenario("two-models-gpu-keda"))
    config_maps = by_kind(objects, "ConfigMap")
    assert [cm["metadata"]["name"] for cm in config_maps] == [f"{RELEASE}-modelport-dashboard"]
    config_map = config_maps[0]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "modelport"}
    parsed: dict[str, Any] = json.loads(config_map["data"]["modelport.json"])
    return parsed


def graph_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def selectors(expr: str) -> set[str]:
    for variable, value in GRAFANA_SUBSTITUTIONS.items():
        expr = expr.replace(variable, value)
    names: set[str] = set()

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def test_dashboard_is_off_by_default(render: Render) -> None:
    assert not by_kind(render(scenario("defaults")), "ConfigMap")


def test_every_query_parses_and_uses_exported_metrics(dashboard: dict[str, Any]) -> None:
    used: set[str] = set()
    for panel in graph_panels(dashboard):
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = selectors(target["expr"])
            assert names, target["expr"]
            unknown = names - EXPORTED
            assert not unknown, f"{panel['title']}: {unknown} is not exported by modelport"
            used |= names
            # Counters are only meaningful as rates; gauges never are.
            for name in names & COUNTERS:
                assert re.search(rf"rate\({name}\{{", target["expr"]), target["expr"]
    missing = {need for need, metric in ON_CALL.items() if metric not in used}
    assert not missing, f"no panel for: {missing}"


def test_errors_panel_groups_by_model_and_code(dashboard: dict[str, Any]) -> None:
    panel = next(p for p in graph_panels(dashboard) if p["title"].startswith("Errors/s"))
    expr = panel["targets"][0]["expr"]
    assert "by (model, code)" in expr and 'code!="OK"' in expr


def test_every_panel_uses_the_datasource_variable_and_fits_the_grid(
    dashboard: dict[str, Any],
) -> None:
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "namespace", "model"} <= variables
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    occupied: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"
            for variable in re.findall(r"\$(\w+)", json.dumps(panel["targets"])):
                assert variable in variables or variable.startswith("__"), variable
