"""Where the replicas are: one interface, several sources.

A discovery source runs for the router's lifetime and calls `on_change` with
the full list of endpoints every time that list changes. `static` reads flags
or a file (re-read when it changes, which is what `modelport up` relies on);
`dns` re-resolves headless Service names; `kubernetes` (in
`discovery_kubernetes`) watches EndpointSlices.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from modelport.errors import InvalidInput
from modelport.router.replicas import Endpoint

log = logging.getLogger(__name__)

OnChange = Callable[[list[Endpoint]], None]


class Discovery(Protocol):
    async def run(self, on_change: OnChange) -> None:
        """Report the endpoints now and after every change; runs until cancelled."""
        ...


def parse_endpoint(text: str) -> Endpoint:
    """`MODEL=HOST:PORT` → Endpoint."""
    model, sep, address = text.strip().partition("=")
    host, colon, port = address.rpartition(":")
    if not sep or not model or not colon or not host or not port.isdigit():
        raise InvalidInput(f"endpoint '{text}': expected MODEL=HOST:PORT")
    return Endpoint(model=model.strip(), address=address.strip())


def parse_endpoints_file(text: str) -> list[Endpoint]:
    """One `MODEL=HOST:PORT` per line; blank lines and `#` comments ignored."""
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [parse_endpoint(line) for line in lines if line]


class StaticDiscovery:
    def __init__(
        self,
        endpoints: Iterable[Endpoint] = (),
        file: Path | None = None,
        poll_seconds: float = 1.0,
    ) -> None:
        self.endpoints = list(endpoints)
        self.file = file
        self.poll_seconds = poll_seconds

    def _read(self) -> list[Endpoint]:
        listed = list(self.endpoints)
        if self.file is not None:
            try:
                listed += parse_endpoints_file(self.file.read_text())
            except FileNotFoundError:
                log.warning("endpoints file %s does not exist (yet)", self.file)
        return listed

    def _stamp(self) -> float | None:
        if self.file is None:
            return None
        try:
            return os.stat(self.file).st_mtime_ns
        except FileNotFoundError:
            return None

    async def run(self, on_change: OnChange) -> None:
        stamp = self._stamp()
        current = self._read()
        on_change(current)
        if self.file is None:
            await asyncio.Event().wait()
        while True:
            await asyncio.sleep(self.poll_seconds)
            new_stamp = self._stamp()
            if new_stamp == stamp:
                continue
            stamp = new_stamp
            try:
                fresh = self._read()
            except InvalidInput as exc:
                log.error("endpoints file %s: %s; keeping the previous list", self.file, exc)
                continue
            if fresh != current:
                current = fresh
                on_change(current)


@dataclass(frozen=True)
class DnsTarget:
    """A model whose replicas are the addresses of one (headless Service) name."""

    model: str
    name: str
    port: int


def parse_dns_target(text: str) -> DnsTarget:
    """`MODEL=NAME:PORT`, e.g. `mlp=mlp-headless.models.svc.cluster.local:8001`."""
    model, sep, rest = text.strip().partition("=")
    name, colon, port = rest.rpartition(":")
    if not sep or not model or not colon or not name or not port.isdigit():
        raise InvalidInput(f"dns name '{text}': expected MODEL=NAME:PORT")
    return DnsTarget(model=model, name=name, port=int(port))


Resolver = Callable[[str, int], Awaitable[Sequence[str]]]


async def resolve_with_getaddrinfo(name: str, port: int) -> list[str]:
    """Every address of `name` as `host:port`, IPv6 in brackets, sorted."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    addresses = set()
    for family, _type, _proto, _canon, sockaddr in infos:
        host = str(sockaddr[0])
        addresses.add(f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}")
    return sorted(addresses)


class DnsDiscovery:
    """Re-resolves each name every `interval` seconds.

    A name that fails to resolve keeps its last known addresses: a DNS hiccup
    must not take every replica of a model out of rotation.
    """

    def __init__(
        self,
        targets: Sequence[DnsTarget],
        interval: float = 5.0,
        resolve: Resolver = resolve_with_getaddrinfo,
    ) -> None:
        self.targets = list(targets)
        self.interval = interval
        self.resolve = resolve

    async def run(self, on_change: OnChange) -> None:
        known: dict[DnsTarget, list[str]] = {}
        reported: list[Endpoint] | None = None
        while True:
            for target in self.targets:
                try:
                    known[target] = list(await self.resolve(target.name, target.port))
                except OSError as exc:
                    log.warning("dns: cannot resolve %s (%s); keeping last addresses", target, exc)
            endpoints = sorted(
                (Endpoint(model=t.model, address=a) for t, addrs in known.items() for a in addrs),
                key=lambda e: (e.model, e.address),
            )
            if endpoints != reported:
                reported = endpoints
                on_change(endpoints)
            await asyncio.sleep(self.interval)
