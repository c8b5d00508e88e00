"""Audit events: who, what, from where, outcome; JSON lines; queries."""

from __future__ import annotations

import json
import logging

import pytest
from modelport.auth.audit import AuditEvent, AuditQuery, Fanout, LogSink, MemorySink, event
from modelport.auth.identity import Credentials, Principal
from modelport.errors import InvalidInput, PermissionDenied, QuotaExceeded, Unauthenticated

pytestmark = pytest.mark.fast  # tier 1: no servers (`make test-fast`)

ALICE = Principal("team-a", "key:abcdef12", "api-key")
FROM = Credentials(peer="ipv4:10.0.0.7:5123")


def test_an_event_says_who_what_where_and_how_it_ended() -> None:
    ok = event(
        "registry",
        "alias",
        "SetAlias",
        ALICE,
        FROM,
        model="fraud",
        version="7",
        details={"alias": "production", "previous": "6"},
    )
    assert (ok.tenant, ok.subject, ok.method, ok.peer) == (
        "team-a",
        "key:abcdef12",
        "api-key",
        "ipv4:10.0.0.7:5123",
    )
    assert (ok.outcome, ok.code, ok.details["alias"]) == ("ok", "OK", "production")
    denied = event(
        "registry",
        "delete",
        "DeleteModel",
        ALICE,
        FROM,
        PermissionDenied("tenant 'team-a' may not 'delete' model 'fraud'"),
        model="fraud",
    )
    assert (denied.outcome, denied.code) == ("denied", "PERMISSION_DENIED")
    anonymous = event(
        "inference",
        "model-control",
        "RepositoryModelUnload",
        None,
        FROM,
        Unauthenticated("credentials required"),
        model="mlp",
    )
    assert (anonymous.tenant, anonymous.outcome, anonymous.code) == (
        "",
        "denied",
        "UNAUTHENTICATED",
    )
    quota = event("registry", "push", "UploadVersion", ALICE, FROM, QuotaExceeded("over", 5.0))
    assert quota.outcome == "denied"
    failed = event("registry", "push", "UploadVersion", ALICE, FROM, InvalidInput("bad archive"))
    assert (failed.outcome, failed.code, failed.message) == (
        "failed",
        "INVALID_ARGUMENT",
        "bad archive",
    )
    crashed = event("registry", "push", "UploadVersion", ALICE, FROM, RuntimeError("secret path"))
    assert (crashed.code, crashed.message) == ("INTERNAL", "RuntimeError")
    assert ok.id != denied.id


def test_events_round_trip_as_one_json_line(caplog: pytest.LogCaptureFixture) -> None:
    original = event(
        "registry",
        "policy",
        "SetPolicy",
        ALICE,
        FROM,
        model="fraud",
        details={"split": "production=90,canary=10"},
        trace_id="ab" * 16,
    )
    line = original.to_json()
    assert "\n" not in line
    assert AuditEvent.from_dict(json.loads(line)) == original
    memory = MemorySink()
    with caplog.at_level(logging.INFO, logger="modelport.audit"):
        Fanout([LogSink(), memory]).record(original)
    assert [json.loads(r.getMessage())["id"] for r in caplog.records] == [original.id]
    assert memory.events == [original]


def test_queries_filter_newest_first_and_the_memory_sink_is_bounded() -> None:
    sink = MemorySink(limit=5)
    for i in range(8):
        sink.record(
            AuditEvent(
                "registry",
                "push" if i % 2 else "alias",
                "X",
                "ok",
                tenant="team-a" if i < 6 else "team-b",
                model=f"m{i % 3}",
                time=1000.0 + i,
            )
        )
    assert len(sink.events) == 5
    assert [e.time for e in sink.query(AuditQuery())] == [1007, 1006, 1005, 1004, 1003]
    assert [e.time for e in sink.query(AuditQuery(tenant="team-a", action="push"))] == [1005, 1003]
    assert [e.time for e in sink.query(AuditQuery(model="m1", since=1004))] == [1007, 1004]
    assert [e.time for e in sink.query(AuditQuery(until=1005, limit=1))] == [1004]
