"""Every metric explains itself (HELP), and callers cannot mint series with model names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import numpy as np
from modelport.common import metrics
from modelport.common.scrape import scrape
from modelport.proto.inference import grpc_service_pb2_grpc as pb_grpc
from modelport.router.app import RouterApp
from modelport.router.discovery import StaticDiscovery
from modelport.router.forwarding import UNKNOWN_MODEL
from modelport.router.replicas import Endpoint

from tests.inference.requests import simple_request
from tests.router.router_helpers import serving, wait_until
from tests.support.toy_oip_server import ToyServer

A = np.arange(16, dtype=np.int32).reshape(1, 16)


async def test_unknown_model_names_collapse_and_every_metric_has_help(
    inference_server: Any, sample_repo: Path
) -> None:
    port = metrics.serve_metrics("127.0.0.1", 0)  # the process-wide provider both services use
    toy = ToyServer({"simple": ["1"]})
    await toy.start()
    router = RouterApp(StaticDiscovery([Endpoint("simple", toy.address)]), metrics=True)
    await router.start()
    inference = await inference_server(sample_repo)
    try:
        await wait_until(serving(router, "simple", 1))
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{router.port}") as via_router,
            grpc.aio.insecure_channel(inference.address) as direct,
        ):
            for stub in (pb_grpc.GRPCInferenceServiceStub(c) for c in (via_router, direct)):
                await stub.ModelInfer(simple_request(A, A), timeout=5)
                unknown = simple_request(A, A)
                for index in range(200):  # names chosen by callers
                    unknown.model_name = f"x{index}"
                    try:
                        await stub.ModelInfer(unknown, timeout=5)
                    except grpc.aio.AioRpcError as exc:
                        assert exc.code() == grpc.StatusCode.NOT_FOUND
        page = scrape(f"127.0.0.1:{port}")
    finally:
        await router.stop(0)
        await toy.stop()
    # The router's own counts (the exporter reports the first router of the process).
    outcomes = router.router.stats.outcomes
    assert {model for model, _ in outcomes} == {"simple", UNKNOWN_MODEL}
    assert outcomes[(UNKNOWN_MODEL, "NOT_FOUND")] == 200
    for family in (
        "modelport_router_requests_total",
        "modelport_router_request_duration_seconds_count",
    ):
        assert not any(m.startswith("x") for m in page.label_values(family, "model")), family
    # The inference service counts per loaded version only: unknown names add nothing.
    served = page.label_values("modelport_inference_requests_total", "model")
    assert "simple" in served and not any(m.startswith("x") for m in served)
    modelport = {name: text for name, text in page.help.items() if name.startswith("modelport")}
    assert {"modelport_router_requests", "modelport_inference_requests"} <= set(modelport)
    assert [name for name, text in modelport.items() if not text.strip()] == []
