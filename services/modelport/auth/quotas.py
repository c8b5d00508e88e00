"""Quotas per tenant (and optionally per model): rates, concurrency, daily bytes.

- `TokenBucket`: `rate` tokens/s up to `burst`. Requests take one token before
  they run; generated tokens are `charge`d after the fact and may drive the
  balance below zero, which later admissions wait out (so a long generation
  is never cut off half way, and the tenant still pays for it).
- `Quotas.admit` checks every limit that applies to (tenant, model) and takes
  from all of them or from none; over a limit it raises `QuotaExceeded` with
  the seconds after which a retry may pass. The `Admission` it returns holds
  the concurrency slots until released.
- `UploadMeter` counts an upload's bytes against the tenant's allowance for
  the UTC day, reserved in an `UploadLedger` as they arrive (the registry's
  ledger lives in its database, so replicas share it).

Limits are per process: N router replicas admit N times the rate.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from functools import partial
from typing import Any, Protocol, TypeVar, cast

from modelport.errors import InvalidInput, QuotaExceeded

E = TypeVar("E")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?)?B?\s*$")
_UNITS = {"K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_UNITS.update({k + "i": 1 << (10 * (i + 1)) for i, k in enumerate("KMGT")})


def parse_bytes(value: Any, where: str) -> int:
    """An int, or a size such as '500M', '10Gi', '2GB'."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise InvalidInput(f"{where}: {value!r} is not a size (e.g. 500Mi, 10G, 1048576)")
    return int(float(match[1]) * _UNITS.get(match[2] or "", 1))


@dataclass(frozen=True)
class QuotaSpec:
    """The limits of one tenant, or of one model inside a tenant (None: no limit)."""

    requests_per_second: float | None = None
    burst: float | None = None
    concurrency: int | None = None
    # Generated tokens per second (charged after the fact) and the balance they may reach.
    tokens_per_second: float | None = None
    token_burst: float | None = None
    upload_bytes_per_day: int | None = None
    # (pattern, spec) per model, in file order: the first match applies.
    models: tuple[tuple[str, QuotaSpec], ...] = field(default=(), compare=True)

    @property
    def request_burst(self) -> float:
        return self.burst if self.burst is not None else max(1.0, self.requests_per_second or 1)

    @property
    def generated_token_burst(self) -> float:
        return self.token_burst if self.token_burst is not None else (self.tokens_per_second or 1)

    def for_model(self, model: str) -> QuotaSpec | None:
        for pattern, spec in self.models:
            if fnmatchcase(model, pattern):
                return spec
        return None

    @classmethod
    def from_config(cls, item: Any, where: str, nested: bool = True) -> QuotaSpec:
        if not isinstance(item, Mapping):
            raise InvalidInput(f"{where}: a quota is a mapping")
        known = {
            "requests_per_second",
            "burst",
            "concurrency",
            "tokens_per_second",
            "token_burst",
            "upload_bytes_per_day",
        } | ({"models"} if nested else set())
        unknown = set(item) - known
        if unknown:
            raise InvalidInput(f"{where}: unknown quota fields {sorted(unknown)}")

        def positive(name: str) -> float | None:
            value = item.get(name)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise InvalidInput(f"{where}.{name}: must be a positive number")
            return float(value)

        concurrency = positive("concurrency")
        if concurrency is not None and concurrency != int(concurrency):
            raise InvalidInput(f"{where}.concurrency: must be a whole number")
        upload = item.get("upload_bytes_per_day")
        models = item.get("models") or {}
        if not isinstance(models, Mapping):
            raise InvalidInput(f"{where}.models: maps a model (pattern) to its quota")
        return cls(
            requests_per_second=positive("requests_per_second"),
            burst=positive("burst"),
            concurrency=int(concurrency) if concurrency is not None else None,
            tokens_per_second=positive("tokens_per_second"),
            token_burst=positive("token_burst"),
            upload_bytes_per_day=(
                None if upload is None else parse_bytes(upload, f"{where}.upload_bytes_per_day")
            ),
            models=tuple(
                (str(p), cls.from_config(m, f"{where}.models[{p!r}]", nested=False))
                for p, m in models.items()
            ),
        )


class TokenBucket:
    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self._stamp = now

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._stamp)
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self._stamp = now

    def wait_for(self, cost: float, now: float) -> float:
        """Seconds until `cost` tokens (at most a full bucket) are there; 0 if now."""
        self._refill(now)
        need = min(cost, self.burst)
        return 0.0 if self.tokens >= need else (need - self.tokens) / self.rate

    def charge(self, cost: float, now: float) -> None:
        """Take `cost` tokens, going into debt if there are fewer."""
        self._refill(now)
        self.tokens -= cost


class ConcurrencyLimit:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0


# What was over its limit, for the caller's message and the rejection metric.
REQUESTS, CONCURRENCY, TOKENS, UPLOAD_BYTES = "requests", "concurrency", "tokens", "upload-bytes"


@dataclass
class _Limits:
    """(scope, limit) pairs; the scope names the limit in a refusal."""

    requests: list[tuple[str, TokenBucket]] = field(default_factory=list)
    tokens: list[tuple[str, TokenBucket]] = field(default_factory=list)
    slots: list[tuple[str, ConcurrencyLimit]] = field(default_factory=list)


class Admission:
    """Permission to run one request (or one stream of them): release it at the end."""

    def __init__(self, quotas: Quotas | None, tenant: str, model: str, limits: _Limits) -> None:
        self._quotas = quotas
        self.tenant = tenant
        self.model = model
        self._limits = limits
        self._released = False

    def take_request(self) -> None:
        """One more request inside this admission (the next message of a stream):
        a token from each request rate, or QuotaExceeded. Slots are already held."""
        if self._quotas is not None:
            self._quotas._take(self.tenant, self._limits)

    def charge_tokens(self, count: float) -> None:
        """Count `count` generated tokens against the tenant's (and model's) token rate."""
        if self._quotas is not None and count > 0:
            self._quotas._charge([b for _, b in self._limits.tokens], count)

    def release(self) -> None:
        if self._quotas is not None and not self._released:
            self._quotas._leave([slot for _, slot in self._limits.slots])
        self._released = True

    def __enter__(self) -> Admission:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


UNLIMITED = Admission(None, "", "", _Limits())


class Quotas:
    """Buckets and slots per (tenant) and (tenant, model), made on first use.

    `spec_of(tenant)` gives the tenant's limits (it may change as the policy
    file is reloaded: a changed spec gets fresh buckets). At most
    `max_entries` buckets are kept; the least recently used go first.
    """

    def __init__(
        self,
        spec_of: Callable[[str], QuotaSpec | None],
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 10_000,
        concurrency_retry_after: float = 0.1,
        on_reject: Callable[[str, str], None] | None = None,
    ) -> None:
        self._spec_of = spec_of
        self._clock = clock
        self._max_entries = max_entries
        self._concurrency_retry_after = concurrency_retry_after
        self._on_reject = on_reject
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[Any, ...], Any] = OrderedDict()

    def _entry(self, key: tuple[Any, ...], make: Callable[[], E]) -> E:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = make()
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
        return cast(E, entry)

    def _limits(self, tenant: str, model: str, now: float) -> _Limits:
        """Every bucket and slot that applies to (tenant, model), made if new."""
        limits = _Limits()
        spec = self._spec_of(tenant)
        if spec is None:
            return limits
        scopes = [(f"tenant '{tenant}'", "", spec)]
        model_spec = spec.for_model(model) if model else None
        if model_spec is not None:
            scopes.append((f"tenant '{tenant}' on model '{model}'", model, model_spec))
        for scope, scoped_model, s in scopes:
            key = (tenant, scoped_model, s)
            if s.requests_per_second:
                make = partial(TokenBucket, s.requests_per_second, s.request_burst, now)
                limits.requests.append((scope, self._entry((*key, REQUESTS), make)))
            if s.tokens_per_second:
                make = partial(TokenBucket, s.tokens_per_second, s.generated_token_burst, now)
                limits.tokens.append((scope, self._entry((*key, TOKENS), make)))
            if s.concurrency:
                slot = partial(ConcurrencyLimit, s.concurrency)
                limits.slots.append((scope, self._entry((*key, CONCURRENCY), slot)))
        return limits

    def admit(self, tenant: str, model: str = "") -> Admission:
        """Take one request from every limit on (tenant, model), or raise QuotaExceeded."""
        if self._spec_of(tenant) is None:
            return UNLIMITED  # no quota for this tenant: nothing to count
        with self._lock:
            now = self._clock()
            limits = self._limits(tenant, model, now)
            for scope, limit in limits.slots:
                if limit.in_flight >= limit.limit:
                    self._reject(
                        tenant,
                        CONCURRENCY,
                        f"{scope} has {limit.limit} requests in flight, its concurrency limit",
                        self._concurrency_retry_after,
                    )
            self._check(tenant, limits, now, tokens=True)
            for _, bucket in limits.requests:
                bucket.charge(1.0, now)
            for _, limit in limits.slots:
                limit.in_flight += 1
            return Admission(self, tenant, model, limits)

    def _check(self, tenant: str, limits: _Limits, now: float, tokens: bool) -> None:
        kinds = [(REQUESTS, limits.requests, "requests/s")]
        if tokens:
            kinds.append((TOKENS, limits.tokens, "generated tokens/s"))
        for kind, buckets, what in kinds:
            waits = [(b.wait_for(1.0, now), scope, b) for scope, b in buckets]
            worst = max(waits, key=lambda w: w[0], default=None)
            if worst is not None and worst[0] > 0:
                wait, scope, bucket = worst
                self._reject(
                    tenant, kind, f"{scope} is over its quota of {bucket.rate:g} {what}", wait
                )

    def _take(self, tenant: str, limits: _Limits) -> None:
        with self._lock:
            now = self._clock()
            self._check(tenant, limits, now, tokens=False)
            for _, bucket in limits.requests:
                bucket.charge(1.0, now)

    def _reject(self, tenant: str, kind: str, message: str, retry_after: float) -> None:
        if self._on_reject is not None:
            self._on_reject(tenant, kind)
        raise QuotaExceeded(f"{message}; retry after {retry_after:.3g}s", retry_after)

    def _charge(self, buckets: list[TokenBucket], count: float) -> None:
        with self._lock:
            now = self._clock()
            for bucket in buckets:
                bucket.charge(count, now)

    def _leave(self, slots: list[ConcurrencyLimit]) -> None:
        with self._lock:
            for limit in slots:
                limit.in_flight = max(0, limit.in_flight - 1)


# -- upload bytes per tenant per UTC day --


class UploadLedger(Protocol):
    def try_reserve(self, tenant: str, day: str, count: int, limit: int) -> bool:
        """Add `count` to the tenant's bytes of `day` if the total stays within `limit`."""
        ...


class MemoryUploadLedger:
    """A ledger for one process (tests, and a registry with one replica on SQLite)."""

    def __init__(self) -> None:
        self._used: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def used(self, tenant: str, day: str) -> int:
        return self._used.get((tenant, day), 0)

    def try_reserve(self, tenant: str, day: str, count: int, limit: int) -> bool:
        with self._lock:
            total = self._used.get((tenant, day), 0) + count
            if total > limit:
                return False
            self._used[(tenant, day)] = total
            return True


def seconds_to_next_utc_day(now: float) -> float:
    moment = datetime.fromtimestamp(now, UTC)
    midnight = datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
    return max(1.0, (midnight + timedelta(days=1)).timestamp() - now)


class UploadMeter:
    """Counts one upload's bytes as they arrive. Every byte received counts, a
    failed upload's too: the allowance bounds what a tenant can make the
    registry take in, not only what it keeps."""

    def __init__(
        self,
        tenant: str,
        limit: int | None,
        ledger: UploadLedger,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tenant = tenant
        self.limit = limit
        self.ledger = ledger
        self.clock = clock
        self.received = 0

    def add(self, count: int) -> None:
        self.received += count
        if self.limit is None or count == 0:
            return
        now = self.clock()
        day = datetime.fromtimestamp(now, UTC).date().isoformat()
        if not self.ledger.try_reserve(self.tenant, day, count, self.limit):
            wait = seconds_to_next_utc_day(now)
            raise QuotaExceeded(
                f"tenant '{self.tenant}' would exceed its upload allowance of "
                f"{self.limit} bytes for {day} (UTC); retry after {math.ceil(wait)}s",
                wait,
            )
