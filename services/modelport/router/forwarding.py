"""Forwarding one request: pick, call, retry once, keep the books; and the policies.

`Router.infer` takes the request as serialized bytes and answers with the
backend's serialized answer. Plain requests are never decoded here: the plan
may append a version to the bytes (`wire.retarget`), nothing more. Ensemble
and scatter decode tensors through a `Codec`. The transport and the codec are
interfaces, so this module knows nothing of gRPC.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry.trace import SpanKind

from modelport.common import tracing
from modelport.errors import DeadlineExceeded, NotFound, Unavailable, code_of
from modelport.router import tensors, wire
from modelport.router.balancer import Balancer, describe
from modelport.router.policies import Plan, Planner, Target
from modelport.router.pool_routing import PoolRouting
from modelport.router.replicas import Replica, ReplicaTable
from modelport.router.scale_from_zero import ScaleFromZero

log = logging.getLogger(__name__)

# A retry needs at least this much of the caller's deadline left to be worth it.
MIN_RETRY_SECONDS = 0.002
# The metric label of every model no replica serves and no policy names: callers
# choose model names, and each name must not become a series of its own.
UNKNOWN_MODEL = "_unknown"


class BackendUnavailable(Unavailable):
    """The replica could not be reached or refused the call (gRPC UNAVAILABLE).

    Inference has no side effects, so sending the request to another replica
    is safe even when this one may have seen it.
    """


class Transport(Protocol):
    async def infer(self, replica: Replica, request: bytes, timeout: float | None) -> bytes: ...

    def stream_infer(
        self, replica: Replica, request: bytes, timeout: float | None
    ) -> AsyncIterator[bytes]: ...


@dataclass
class DecodedRequest:
    model: str
    version: str
    id: str
    inputs: list[tensors.Tensor]
    message: Any  # the codec's own representation, reused to re-encode


class Codec(Protocol):
    def decode_request(self, request: bytes) -> DecodedRequest: ...

    def encode_request(
        self, original: DecodedRequest, target: Target, inputs: Sequence[tensors.Tensor]
    ) -> bytes: ...

    def decode_response(self, response: bytes) -> list[tensors.Tensor]: ...

    def encode_response(
        self, model: str, version: str, request_id: str, outputs: Sequence[tensors.Tensor]
    ) -> bytes: ...


@dataclass
class RouterStats:
    """Plain counters, read by the metrics exporter (cheaper than per-request instruments)."""

    picks: Counter[tuple[str, str]] = field(default_factory=Counter)
    retries: Counter[str] = field(default_factory=Counter)
    ejections: Counter[tuple[str, str]] = field(default_factory=Counter)
    splits: Counter[tuple[str, str]] = field(default_factory=Counter)
    shadow_errors: Counter[str] = field(default_factory=Counter)
    shadow_dropped: Counter[str] = field(default_factory=Counter)
    # (model, status code name) of every answered request.
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    # The part of `outcomes` the fast path (services/fastpath) forwarded itself.
    fast_path: Counter[tuple[str, str]] = field(default_factory=Counter)


# Told (model, seconds) for every request answered: the latency histogram.
LatencyRecorder = Callable[[str, float], None]


class Router:
    def __init__(
        self,
        table: ReplicaTable,
        planner: Planner,
        transport: Transport,
        codec: Codec,
        balancer: Balancer | None = None,
        max_shadow_in_flight: int = 64,
        scaling: ScaleFromZero | None = None,
        latency: LatencyRecorder | None = None,
    ) -> None:
        self.table = table
        self.planner = planner
        self.transport = transport
        self.codec = codec
        self.balancer = balancer or Balancer(table)
        self.stats = RouterStats()
        self.max_shadow_in_flight = max_shadow_in_flight
        self._latency = latency
        self._shadows: set[asyncio.Task[None]] = set()
        # Models held at zero replicas until one is ready (None: none are).
        self.scaling = scaling
        # Models no dedicated replica serves go to pool replicas (None: no pool).
        self.pool: PoolRouting | None = None

    async def infer(
        self,
        model: str,
        version_ref: str,
        request: bytes,
        session: str = "",
        deadline: float | None = None,
        sequence: str = "",
    ) -> bytes:
        """Answer one ModelInferRequest (bytes) with a ModelInferResponse (bytes).

        `deadline` is absolute, on `time.monotonic()`. A request of a sequence
        (`sequence`: its correlation id) goes to the replica that holds it,
        and a split policy keeps the whole sequence on one version. Every
        request is counted by outcome and, with a latency recorder, timed.
        """
        started = time.perf_counter()
        code = "OK"
        try:
            return await self._admit(model, version_ref, request, session, deadline, sequence)
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except Exception as exc:
            code = code_of(exc)
            raise
        finally:
            label = model if code == "OK" or self._known(model) else UNKNOWN_MODEL
            self.stats.outcomes[(label, code)] += 1
            if self._latency is not None:
                self._latency(label, time.perf_counter() - started)

    def _known(self, model: str) -> bool:
        state = self.planner.state
        if self.table.knows(model) or model in state.policies or model in state.aliases:
            return True
        return self.scaling is not None and self.scaling.holds(model)

    async def _admit(
        self,
        model: str,
        version_ref: str,
        request: bytes,
        session: str,
        deadline: float | None,
        sequence: str,
    ) -> bytes:
        """Route now, or, for a model held at zero replicas, once a replica is ready."""
        scaling = self.scaling
        if scaling is None or not scaling.holds(model):
            return await self._route(model, version_ref, request, session, deadline, sequence)
        scaling.started(model)
        since = time.monotonic()
        try:
            while True:
                await scaling.before_forward(model, deadline)  # held while at zero replicas
                try:
                    return await self._route(
                        model, version_ref, request, session, deadline, sequence
                    )
                except Unavailable:
                    # The replica left (scaled down) or is not ready yet: held again.
                    if not await scaling.wait_after_failure(model, deadline, since):
                        raise
        finally:
            scaling.finished(model)

    async def _route(
        self,
        model: str,
        version_ref: str,
        request: bytes,
        session: str,
        deadline: float | None,
        sequence: str,
    ) -> bytes:
        plan = self._plan(model, version_ref, session or sequence)
        if plan.kind == "ensemble":
            return await self._ensemble(model, request, plan, deadline)
        target, request = self._aim(plan, version_ref, request, deadline)
        if plan.kind == "scatter":
            return await self._scatter(target, request, deadline)
        return await self.forward(target, request, deadline, sequence=sequence)

    def _plan(self, model: str, version_ref: str, session: str) -> Plan:
        plan = self.planner.plan(model, version_ref, session)
        if plan.split_alias:
            self.stats.splits[(model, plan.split_alias)] += 1
        return plan

    def _aim(
        self, plan: Plan, version_ref: str, request: bytes, deadline: float | None
    ) -> tuple[Target, bytes]:
        """The plan's target, the request retargeted at its version, the shadow started."""
        target = plan.targets[0]
        if target.version != version_ref:
            request = wire.retarget(request, version=target.version)
        if plan.shadow is not None:
            self._start_shadow(plan.shadow, request, deadline)
        return target, request

    def _pick(
        self,
        target: Target,
        sequence: str,
        exclude: Sequence[Replica] = (),
        *,
        streamed: bool = False,
    ) -> Replica:
        if sequence:
            return self.balancer.pick_for_key(target.model, target.version, sequence, exclude)
        if streamed:
            return self.balancer.pick_stream(target.model, target.version, exclude)
        return self.balancer.pick(target.model, target.version, exclude)

    async def forward(
        self,
        target: Target,
        request: bytes,
        deadline: float | None,
        replica: Replica | None = None,
        sequence: str = "",
    ) -> bytes:
        """Send to `replica` (or a balanced pick); on UNAVAILABLE retry once elsewhere."""
        if replica is not None:
            first = replica
        elif self.pool is not None and self.pool.takes(target.model, target.version):
            return await self.pool.forward(self, target, request, deadline)
        else:
            with tracing.span(tracing.ROUTER_PICK, model=target.model) as pick:
                first = self._pick(target, sequence)
                if pick is not None:
                    pick.set_attribute("replica", first.address)
        try:
            return await self._call(first, target, request, deadline)
        except BackendUnavailable as exc:
            failure = BackendUnavailable(f"{describe(target.model, target.version)}: {exc}")
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining < MIN_RETRY_SECONDS:
                raise failure from None
            try:
                second = self._pick(target, sequence, exclude=(first,))
            except (Unavailable, NotFound):
                raise failure from None
        self.stats.retries[target.model] += 1
        try:
            return await self._call(second, target, request, deadline)
        except BackendUnavailable as exc:
            raise BackendUnavailable(f"{describe(target.model, target.version)}: {exc}") from None

    async def _call(
        self, replica: Replica, target: Target, request: bytes, deadline: float | None
    ) -> bytes:
        timeout = _timeout(target, deadline)
        self.table.started(replica)
        self.stats.picks[(target.model, replica.address)] += 1
        outcome = "transport"
        try:
            with tracing.span(
                tracing.ROUTER_FORWARD, kind=SpanKind.CLIENT, replica=replica.address
            ):
                answer = await self.transport.infer(replica, request, timeout)
            outcome = "ok"
            return answer
        except BackendUnavailable:
            raise
        except BaseException:
            outcome = "answered"
            raise
        finally:
            self._settle(replica, target, outcome)

    def _settle(self, replica: Replica, target: Target, outcome: str) -> None:
        if outcome == "ok":
            self.table.succeeded(replica)
        elif self.table.failed(replica, transport=outcome == "transport"):
            self.stats.ejections[(target.model, replica.address)] += 1
            log.warning(
                "ejected replica %s of model '%s' after repeated failures",
                replica.address,
                target.model,
            )

    # -- streamed requests --------------------------------------------------------

    async def stream(
        self,
        model: str,
        version_ref: str,
        request: bytes,
        session: str = "",
        deadline: float | None = None,
        sequence: str = "",
    ) -> AsyncIterator[bytes]:
        """Every ModelStreamInferResponse (bytes) to one streamed request, as it comes.

        A decoupled model answers zero or more times; the replica's answers are
        relayed one by one. A replica that cannot be reached before it answers
        anything is retried once elsewhere, as for unary calls. Counted and timed
        as `infer` is.
        """
        started = time.perf_counter()
        code = "OK"
        try:
            async for message in self._stream_route(
                model, version_ref, request, session, deadline, sequence
            ):
                yield message
        except (asyncio.CancelledError, GeneratorExit):
            code = "CANCELLED"
            raise
        except Exception as exc:
            code = code_of(exc)
            raise
        finally:
            self.stats.outcomes[(model, code)] += 1
            if self._latency is not None:
                self._latency(model, time.perf_counter() - started)

    async def _stream_route(
        self,
        model: str,
        version_ref: str,
        request: bytes,
        session: str,
        deadline: float | None,
        sequence: str,
    ) -> AsyncIterator[bytes]:
        plan = self._plan(model, version_ref, session or sequence)
        if plan.kind == "ensemble":
            yield wire.stream_response(await self._ensemble(model, request, plan, deadline))
            return
        target, request = self._aim(plan, version_ref, request, deadline)
        if plan.kind == "scatter":
            yield wire.stream_response(await self._scatter(target, request, deadline))
            return
        first = self._pick(target, sequence, streamed=True)
        relayed = False
        try:
            async for message in self._stream_from(first, target, request, deadline):
                relayed = True
                yield message
            return
        except BackendUnavailable as exc:
            failure = BackendUnavailable(f"{describe(target.model, target.version)}: {exc}")
            if relayed:
                raise failure from None
            try:
                second = self._pick(target, sequence, exclude=(first,), streamed=True)
            except (Unavailable, NotFound):
                raise failure from None
        self.stats.retries[target.model] += 1
        async for message in self._stream_from(second, target, request, deadline):
            yield message

    async def _stream_from(
        self, replica: Replica, target: Target, request: bytes, deadline: float | None
    ) -> AsyncIterator[bytes]:
        timeout = _timeout(target, deadline)
        self.table.started(replica)
        self.stats.picks[(target.model, replica.address)] += 1
        outcome = "transport"
        try:
            async for message in self.transport.stream_infer(replica, request, timeout):
                outcome = "answering"
                yield message
            outcome = "ok"
        except BackendUnavailable:
            outcome = "transport"
            raise
        except BaseException:
            outcome = "answered"
            raise
        finally:
            self._settle(replica, target, "ok" if outcome == "answering" else outcome)

    # -- shadow -----------------------------------------------------------------

    def _start_shadow(self, target: Target, request: bytes, deadline: float | None) -> None:
        if len(self._shadows) >= self.max_shadow_in_flight:
            # Shadow traffic must never queue up behind a slow shadow.
            self.stats.shadow_dropped[target.model] += 1
            return
        task = asyncio.get_running_loop().create_task(self._shadow(target, request, deadline))
        self._shadows.add(task)
        task.add_done_callback(self._shadows.discard)

    async def _shadow(self, target: Target, request: bytes, deadline: float | None) -> None:
        try:
            await self.forward(target, wire.retarget(request, version=target.version), deadline)
        except Exception as exc:
            self.stats.shadow_errors[target.model] += 1
            log.debug("shadow request to %s failed: %s", target, exc)

    # -- ensemble and scatter --------------------------------------------------

    async def _ensemble(
        self, model: str, request: bytes, plan: Plan, deadline: float | None
    ) -> bytes:
        calls = [
            self.forward(member, wire.retarget(request, member.model, member.version), deadline)
            for member in plan.targets
        ]
        answers = await asyncio.gather(*calls)
        decoded = [self.codec.decode_response(answer) for answer in answers]
        request_id = self.codec.decode_request(request).id if answers else ""
        mean = tensors.ensemble_mean(model, decoded)
        return self.codec.encode_response(model, "", request_id, mean)

    async def _scatter(self, target: Target, request: bytes, deadline: float | None) -> bytes:
        decoded = self.codec.decode_request(request)
        replicas = self.balancer.pick_many(
            target.model, target.version, count=len(self.table.replicas)
        )
        slices = tensors.scatter(target.model, decoded.inputs, len(replicas))
        calls = [
            self.forward(
                target, self.codec.encode_request(decoded, target, part), deadline, replica
            )
            for part, replica in zip(slices, replicas, strict=False)
        ]
        answers = [self.codec.decode_response(a) for a in await asyncio.gather(*calls)]
        outputs = tensors.gather(target.model, answers)
        return self.codec.encode_response(target.model, target.version, decoded.id, outputs)

    async def close(self) -> None:
        for task in list(self._shadows):
            task.cancel()
        await asyncio.gather(*self._shadows, return_exceptions=True)


def _timeout(target: Target, deadline: float | None) -> float | None:
    if deadline is None:
        return None
    timeout = deadline - time.monotonic()
    if timeout <= 0:
        raise DeadlineExceeded(f"model '{target.model}': deadline passed before sending")
    return timeout
