"""Quotas on a fake clock: rates and bursts, concurrency, tokens charged after the
fact, per-model limits, retry-after hints, and daily upload bytes."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from modelport.auth.quotas import (
    MemoryUploadLedger,
    Quotas,
    QuotaSpec,
    UploadMeter,
    parse_bytes,
    seconds_to_next_utc_day,
)
from modelport.errors import InvalidInput, QuotaExceeded

pytestmark = pytest.mark.fast  # tier 1: no servers (`make test-fast`)


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def quotas_for(spec: QuotaSpec, clock: Clock, **options: object) -> Quotas:
    return Quotas(lambda tenant: spec if tenant != "free" else None, clock=clock, **options)  # type: ignore[arg-type]


def spec(**fields: object) -> QuotaSpec:
    return QuotaSpec.from_config(fields, "test")


def test_the_burst_passes_then_the_rate_with_an_exact_retry_after() -> None:
    clock = Clock()
    quotas = quotas_for(spec(requests_per_second=10, burst=5), clock)
    for _ in range(5):
        quotas.admit("team-a").release()
    with pytest.raises(QuotaExceeded) as error:
        quotas.admit("team-a")
    assert error.value.retry_after_seconds == pytest.approx(0.1)
    assert "tenant 'team-a' is over its quota of 10 requests/s" in str(error.value)
    clock.now += 0.1
    quotas.admit("team-a").release()
    with pytest.raises(QuotaExceeded):
        quotas.admit("team-a")
    quotas.admit("free").release()  # no quota: never refused
    quotas.admit("team-b").release()  # another tenant has its own bucket


def test_open_loop_load_is_held_to_the_configured_rate() -> None:
    """Poisson arrivals at 3x the rate for 60 simulated seconds: what passes is the
    rate times the time, plus the burst, within a request."""
    clock = Clock()
    quotas = quotas_for(spec(requests_per_second=50, burst=10), clock)
    rng = random.Random(7)
    admitted = 0
    while clock.now < 1060.0:
        clock.now += rng.expovariate(150)
        try:
            quotas.admit("team-a").release()
            admitted += 1
        except QuotaExceeded:
            pass
    assert abs(admitted - (50 * 60 + 10)) <= 1


def test_concurrency_is_limited_until_admissions_are_released() -> None:
    clock = Clock()
    quotas = quotas_for(spec(concurrency=2), clock, concurrency_retry_after=0.25)
    first, second = quotas.admit("team-a"), quotas.admit("team-a")
    with pytest.raises(QuotaExceeded, match="2 requests in flight") as error:
        quotas.admit("team-a")
    assert error.value.retry_after_seconds == 0.25
    first.release()
    first.release()  # idempotent: does not free a second slot
    with quotas.admit("team-a"), pytest.raises(QuotaExceeded):
        quotas.admit("team-a")
    second.release()


def test_a_stream_holds_one_slot_and_takes_a_token_per_message() -> None:
    clock = Clock()
    quotas = quotas_for(spec(requests_per_second=10, burst=3, concurrency=1), clock)
    stream = quotas.admit("team-a", "mlp")
    stream.take_request()
    stream.take_request()
    with pytest.raises(QuotaExceeded, match="requests/s"):
        stream.take_request()
    with pytest.raises(QuotaExceeded, match="concurrency"):
        quotas.admit("team-a", "mlp")
    clock.now += 0.1
    stream.take_request()
    stream.release()
    clock.now += 0.1
    quotas.admit("team-a", "mlp").release()  # the slot is free again


def test_a_model_limit_applies_inside_the_tenant_and_a_refusal_takes_nothing() -> None:
    clock = Clock()
    quotas = quotas_for(
        spec(requests_per_second=10, burst=10, models={"fraud*": {"requests_per_second": 1}}),
        clock,
    )
    quotas.admit("team-a", "fraud-v2").release()
    with pytest.raises(QuotaExceeded, match="tenant 'team-a' on model 'fraud-v2'") as error:
        quotas.admit("team-a", "fraud-v2")
    assert error.value.retry_after_seconds == pytest.approx(1.0)
    # The refused call took no tenant token: 9 remain for other models.
    for _ in range(9):
        quotas.admit("team-a", "mlp").release()
    with pytest.raises(QuotaExceeded, match="tenant 'team-a' is over"):
        quotas.admit("team-a", "mlp")


def test_generated_tokens_are_charged_after_the_fact_and_debt_is_waited_out() -> None:
    clock = Clock()
    quotas = quotas_for(spec(tokens_per_second=100, token_burst=200), clock)
    with quotas.admit("team-a", "llm") as admission:
        admission.charge_tokens(500)  # one long generation overdraws the balance
    with pytest.raises(QuotaExceeded, match="100 generated tokens/s") as error:
        quotas.admit("team-a", "llm")
    assert error.value.retry_after_seconds == pytest.approx(3.01)  # from -300 back to 1
    clock.now += 3.02
    quotas.admit("team-a", "llm").release()


def test_a_changed_spec_gets_fresh_buckets_and_old_ones_are_bounded() -> None:
    clock = Clock()
    current = {"spec": spec(requests_per_second=1, burst=1)}
    quotas = Quotas(lambda tenant: current["spec"], clock=clock, max_entries=3)
    quotas.admit("team-a").release()
    with pytest.raises(QuotaExceeded):
        quotas.admit("team-a")
    current["spec"] = spec(requests_per_second=100, burst=100)  # the policy file was edited
    for _ in range(50):
        quotas.admit("team-a").release()
    for tenant in range(10):
        quotas.admit(f"tenant-{tenant}").release()
    assert len(quotas._entries) <= 3


def test_rejections_are_reported_by_tenant_and_kind() -> None:
    clock = Clock()
    seen: list[tuple[str, str]] = []
    quotas = quotas_for(
        spec(requests_per_second=1, concurrency=1),
        clock,
        on_reject=lambda tenant, kind: seen.append((tenant, kind)),
    )
    held = quotas.admit("team-a")
    with pytest.raises(QuotaExceeded):
        quotas.admit("team-a")
    held.release()
    with pytest.raises(QuotaExceeded):
        quotas.admit("team-a")
    assert seen == [("team-a", "concurrency"), ("team-a", "requests")]


def test_upload_bytes_per_day_are_counted_across_uploads_and_reset_at_midnight() -> None:
    midnight = datetime(2026, 11, 23, tzinfo=UTC).timestamp()
    clock = Clock(midnight - 60)
    ledger = MemoryUploadLedger()
    first = UploadMeter("team-a", 1000, ledger, clock)
    first.add(600)
    second = UploadMeter("team-a", 1000, ledger, clock)
    second.add(400)
    with pytest.raises(
        QuotaExceeded, match="upload allowance of 1000 bytes for 2026-11-22"
    ) as error:
        second.add(1)
    assert error.value.retry_after_seconds == pytest.approx(60)
    UploadMeter("team-b", 1000, ledger, clock).add(1000)  # tenants are separate
    clock.now = midnight + 1
    UploadMeter("team-a", 1000, ledger, clock).add(1000)
    assert ledger.used("team-a", "2026-11-23") == 1000
    UploadMeter("team-a", None, ledger, clock).add(10**12)  # no allowance: not counted
    assert seconds_to_next_utc_day(midnight + 1) == pytest.approx(86399)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (1024, 1024),
        ("500M", 500 * 10**6),
        ("10Gi", 10 * 2**30),
        ("2GB", 2 * 10**9),
        ("1.5Ki", 1536),
    ],
)
def test_sizes(text: object, value: int) -> None:
    assert parse_bytes(text, "x") == value


def test_bad_quota_specs_are_rejected() -> None:
    for fields in (
        {"concurrency": 1.5},
        {"burst": True},
        {"upload_bytes_per_day": "lots"},
        {"models": {"m": {"models": {}}}},
        {"models": ["m"]},
    ):
        with pytest.raises(InvalidInput):
            QuotaSpec.from_config(fields, "q")
