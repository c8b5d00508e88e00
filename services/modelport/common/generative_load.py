"""A generative version's load as a replica reports it, and its wire form.

Running and waiting sequences and the share of KV blocks in use: what the
router balances generation streams by. The seam between the two sides is this
value type and `LoadSink` (whoever is told of reports); the carrier today is
the trailing metadata of every ModelStreamInfer call a replica answers (one
`modelport-generative-load` entry per generative version, as gRPC's ORCA does
per-call load reports), so a router learns a replica's load whenever one of
its streams ends, at no cost to the messages themselves. A push channel from
replicas to routers can carry the same values without changing either side.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

METADATA_KEY = "modelport-generative-load"


@dataclass(frozen=True)
class GenerativeLoad:
    model: str
    version: str
    running: int
    waiting: int
    kv_usage: float  # KV blocks in use / blocks in the pool, 0..1
    at: float = field(default_factory=time.monotonic, compare=False)

    def to_text(self) -> str:
        return (
            f"model={self.model};version={self.version};running={self.running};"
            f"waiting={self.waiting};kv={self.kv_usage:.4f}"
        )

    @classmethod
    def from_text(cls, text: str) -> GenerativeLoad | None:
        """None for a value this version cannot read (a newer replica's, or garbage)."""
        try:
            values = dict(part.split("=", 1) for part in text.split(";"))
            return cls(
                model=values["model"],
                version=values["version"],
                running=max(0, int(values["running"])),
                waiting=max(0, int(values["waiting"])),
                kv_usage=min(1.0, max(0.0, float(values["kv"]))),
            )
        except (KeyError, ValueError):
            return None


def to_metadata(loads: Iterable[GenerativeLoad]) -> tuple[tuple[str, str], ...]:
    return tuple((METADATA_KEY, load.to_text()) for load in loads)


def from_metadata(metadata: Sequence[tuple[str, str | bytes]] | None) -> list[GenerativeLoad]:
    found = []
    for key, value in metadata or ():
        if key == METADATA_KEY and isinstance(value, str):
            load = GenerativeLoad.from_text(value)
            if load is not None:
                found.append(load)
    return found


class LoadSink(Protocol):
    """Told of the loads a replica (`address`) reported."""

    def report(self, address: str, loads: Sequence[GenerativeLoad]) -> None: ...
