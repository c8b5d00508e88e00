"""KEDA's `externalscaler.ExternalScaler` at the router: demand for models held at zero.

A ScaledObject's trigger (`external-push`, or `external` for polling) names
the router as its scaler and the model in its metadata (`model: NAME`).
`StreamIsActive` pushes each activity change the moment it happens, so a
request held at zero replicas activates the Deployment without waiting for a
poll or a metrics scrape; `IsActive` answers the same for polling triggers.
Above zero the HPA scales on `GetMetrics`: requests pending for the model
(held + in flight), against `targetPendingRequests` per replica.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from modelport.errors import InvalidInput, NotFound
from modelport.proto.keda import externalscaler_pb2 as pb
from modelport.proto.keda import externalscaler_pb2_grpc as pb_grpc
from modelport.router.scale_from_zero import ScaleFromZero

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ExternalScaler"].full_name
DEFAULT_TARGET = 8.0


def metric_name(model: str) -> str:
    return f"modelport-pending-{model}"


class ExternalScalerServicer(pb_grpc.ExternalScalerServicer):
    def __init__(self, scaling: ScaleFromZero) -> None:
        self.scaling = scaling

    def _model(self, ref: Any) -> str:
        model = ref.scalerMetadata.get("model", "")
        if not model:
            raise InvalidInput(
                f"ScaledObject {ref.namespace}/{ref.name}: the trigger's metadata needs "
                "'model: NAME'"
            )
        if not self.scaling.holds(model):
            raise NotFound(
                f"ScaledObject {ref.namespace}/{ref.name}: model '{model}' is not held at zero "
                "by this router (start it with --hold-model)"
            )
        return model

    async def IsActive(self, request: Any, context: Any) -> Any:
        return pb.IsActiveResponse(result=self.scaling.demand.is_active(self._model(request)))

    async def StreamIsActive(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        model = self._model(request)
        demand = self.scaling.demand
        changes = demand.watch(model)
        try:
            while True:
                yield pb.IsActiveResponse(result=await changes.get())
        finally:
            demand.unwatch(model, changes)

    async def GetMetricSpec(self, request: Any, context: Any) -> Any:
        model = self._model(request)
        target = _target(request)
        spec = pb.MetricSpec(
            metricName=metric_name(model), targetSize=max(1, round(target)), targetSizeFloat=target
        )
        return pb.GetMetricSpecResponse(metricSpecs=[spec])

    async def GetMetrics(self, request: Any, context: Any) -> Any:
        model = self._model(request.scaledObjectRef)
        pending = self.scaling.demand.pending(model)
        value = pb.MetricValue(
            metricName=metric_name(model), metricValue=pending, metricValueFloat=float(pending)
        )
        return pb.GetMetricsResponse(metricValues=[value])


def _target(ref: Any) -> float:
    text = ref.scalerMetadata.get("targetPendingRequests", "")
    if not text:
        return DEFAULT_TARGET
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise InvalidInput(
            f"ScaledObject {ref.namespace}/{ref.name}: targetPendingRequests '{text}' "
            "must be a positive number"
        )
    return value


def register(server: grpc.aio.Server, servicer: ExternalScalerServicer) -> None:
    pb_grpc.add_ExternalScalerServicer_to_server(servicer, server)
