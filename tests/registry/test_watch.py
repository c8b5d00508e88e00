"""Watch: replay, live events, and resume after a reconnect (and a registry restart)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from modelport.client.registry import RegistryClient, parse_policy
from modelport.proto.modelport.registry.v1 import registry_pb2 as pb

from tests.registry.registry_servers import ThreadedRegistry, registry_settings

Kind = pb.WatchEvent.Kind


def take_until_caught_up(stream: Iterator[pb.WatchEvent]) -> list[pb.WatchEvent]:
    events = []
    for event in stream:
        if event.kind == pb.WatchEvent.CAUGHT_UP:
            return events
        events.append(event)
    raise AssertionError("stream ended before CAUGHT_UP")


def take(stream: Iterator[pb.WatchEvent], count: int) -> list[pb.WatchEvent]:
    return [next(stream) for _ in range(count)]


def test_watch_replays_then_streams_live_and_resumes(
    tmp_path: Path, make_model: Callable[..., Path], database_url: str
) -> None:
    settings = registry_settings(tmp_path, database_url)
    registry = ThreadedRegistry(settings)
    try:
        with RegistryClient(registry.address) as client:
            client.push(make_model("m", 2.0), name="m", aliases=["production"])
            stream = client.watch(after_revision=0, timeout=30)
            replay = take_until_caught_up(stream)
            assert [(e.kind, e.model) for e in replay] == [
                (Kind.MODEL_CREATED, "m"),
                (Kind.VERSION_ADDED, "m"),
                (Kind.ALIAS_MOVED, "m"),
            ]
            assert [e.revision for e in replay] == [1, 2, 3]

            client.push(make_model("m", 3.0), name="m")
            client.set_alias("m", 2, "production")
            live = take(stream, 2)
            assert [(e.kind, e.version) for e in live] == [
                (Kind.VERSION_ADDED, 2),
                (Kind.ALIAS_MOVED, 2),
            ]
            assert live[1].previous_version == 1 and live[1].alias == "production"
            seen = live[-1].revision
            stream.close()  # the watcher goes away ...

            # ... changes happen while it is gone ...
            client.set_policy("m", parse_policy({"production": 90, "canary": 10}))
            client.rollback("m", "production")
    finally:
        registry.stop()

    # ... and even the registry restarts: resuming from `seen` misses nothing.
    registry = ThreadedRegistry(settings)
    try:
        with RegistryClient(registry.address) as client:
            stream = client.watch(after_revision=seen, timeout=30)
            missed = take_until_caught_up(stream)
            assert [(e.kind, e.model, e.version) for e in missed] == [
                (Kind.POLICY_CHANGED, "m", 0),
                (Kind.ALIAS_MOVED, "m", 1),
            ]
            assert [e.revision for e in missed] == [seen + 1, seen + 2]
            stream.close()
    finally:
        registry.stop()


def test_watch_filters_by_model(registry: ThreadedRegistry) -> None:
    with RegistryClient(registry.address) as client:
        client.create_model("a")
        client.create_model("b")
        stream = client.watch(models=["b"], timeout=30)
        assert [e.model for e in take_until_caught_up(stream)] == ["b"]
        client.create_model("c")
        client.set_policy("b", parse_policy(scatter=True))
        event = next(stream)
        assert (event.kind, event.model) == (Kind.POLICY_CHANGED, "b")
        assert client.get_policy("b").WhichOneof("kind") == "scatter"
        stream.close()
