"""Statistics as Triton's ModelStatistics messages: written from the counters, and summed.

The one place statistics become messages: this process's versions
(`statistics_message`) and the answers of sibling workers, merged by model
version (`merge_statistics`).
"""

from __future__ import annotations

from collections.abc import Iterable

from modelport.inference.stats import Duration, VersionStats
from modelport.proto.inference import grpc_service_pb2 as pb

INFERENCE_FIELDS = ("success", "fail", "queue", "compute_input", "compute_infer",
                    "compute_output", "cache_hit", "cache_miss")  # fmt: skip
BATCH_FIELDS = ("compute_input", "compute_infer", "compute_output")


def _duration(d: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=d.count, ns=d.ns)


def statistics_message(stats: VersionStats) -> pb.ModelStatistics:
    return pb.ModelStatistics(
        name=stats.model,
        version=stats.version,
        last_inference=stats.last_inference_ms,
        inference_count=stats.inference_count,
        execution_count=stats.execution_count,
        inference_stats=pb.InferStatistics(
            success=_duration(stats.success),
            fail=_duration(stats.fail),
            queue=_duration(stats.queue),
            compute_input=_duration(stats.compute_input),
            compute_infer=_duration(stats.compute_infer),
            compute_output=_duration(stats.compute_output),
        ),
        batch_stats=[
            pb.InferBatchStatistics(
                batch_size=size,
                compute_input=_duration(b.compute_input),
                compute_infer=_duration(b.compute_infer),
                compute_output=_duration(b.compute_output),
            )
            for size, b in sorted(stats.batches.items())
        ],
    )


def _add(total: pb.StatisticDuration, part: pb.StatisticDuration) -> None:
    total.count += part.count
    total.ns += part.ns


def merge_statistics(stats: Iterable[pb.ModelStatistics]) -> list[pb.ModelStatistics]:
    """Sum the statistics of the same model version reported by several workers."""
    merged: dict[tuple[str, str], pb.ModelStatistics] = {}
    for item in stats:
        key = (item.name, item.version)
        if key not in merged:
            merged[key] = pb.ModelStatistics()
            merged[key].CopyFrom(item)
            continue
        total = merged[key]
        total.last_inference = max(total.last_inference, item.last_inference)
        total.inference_count += item.inference_count
        total.execution_count += item.execution_count
        for field in INFERENCE_FIELDS:
            _add(getattr(total.inference_stats, field), getattr(item.inference_stats, field))
        by_size = {b.batch_size: b for b in total.batch_stats}
        for batch in item.batch_stats:
            if batch.batch_size not in by_size:
                total.batch_stats.add().CopyFrom(batch)
                by_size[batch.batch_size] = total.batch_stats[-1]
                continue
            for field in BATCH_FIELDS:
                _add(getattr(by_size[batch.batch_size], field), getattr(batch, field))
    for total in merged.values():
        total.batch_stats.sort(key=lambda b: b.batch_size)
    return list(merged.values())
