"""The audit trail: one structured event per registry write or model-control call.

An event says who (tenant, subject, how they authenticated), what (service,
action, operation, model, version, details), from where (peer address) and
how it ended (ok / denied / failed, with the status code and message). The
registry keeps events in its database for `modelport audit` and
`modelport models history`; every service also writes them as one JSON line
on the `modelport.audit` logger, for a log pipeline to keep.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from modelport.auth.identity import Credentials, Principal
from modelport.errors import ModelportError

OK, DENIED, FAILED = "ok", "denied", "failed"
_DENIALS = {"UNAUTHENTICATED", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED"}
audit_log = logging.getLogger("modelport.audit")


@dataclass(frozen=True)
class AuditEvent:
    service: str  # registry | inference | router
    action: str  # the policy action: push, alias, delete, policy, model-control, …
    operation: str  # the RPC or command: UploadVersion, RepositoryModelLoad, …
    outcome: str  # ok | denied | failed
    tenant: str = ""  # empty when the caller was not authenticated
    subject: str = ""
    method: str = ""  # api-key | jwt | mtls | "" (none)
    peer: str = ""
    model: str = ""
    version: str = ""
    details: Mapping[str, str] = field(default_factory=dict)
    code: str = "OK"
    message: str = ""
    time: float = field(default_factory=time.time)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    trace_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["details"] = dict(self.details)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditEvent:
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})


def outcome_of(error: BaseException | None) -> tuple[str, str, str]:
    """(outcome, status code name, message) for how an operation ended."""
    if error is None:
        return OK, "OK", ""
    if isinstance(error, ModelportError):
        return (DENIED if error.code in _DENIALS else FAILED), error.code, str(error)
    return FAILED, "INTERNAL", type(error).__name__


def event(
    service: str,
    action: str,
    operation: str,
    principal: Principal | None,
    creds: Credentials | None,
    error: BaseException | None = None,
    model: str = "",
    version: str = "",
    details: Mapping[str, str] | None = None,
    trace_id: str = "",
) -> AuditEvent:
    outcome, code, message = outcome_of(error)
    return AuditEvent(
        service=service,
        action=action,
        operation=operation,
        outcome=outcome,
        tenant=principal.tenant if principal else "",
        subject=principal.subject if principal else "",
        method=principal.method if principal else "",
        peer=creds.peer if creds else "",
        model=model,
        version=version,
        details=dict(details or {}),
        code=code,
        message=message,
        trace_id=trace_id,
    )


@dataclass(frozen=True)
class AuditQuery:
    """Which events to list (None / empty: any)."""

    model: str = ""
    tenant: str = ""
    action: str = ""
    outcome: str = ""
    since: float | None = None
    until: float | None = None
    limit: int = 100

    def matches(self, e: AuditEvent) -> bool:
        return (
            (not self.model or e.model == self.model)
            and (not self.tenant or e.tenant == self.tenant)
            and (not self.action or e.action == self.action)
            and (not self.outcome or e.outcome == self.outcome)
            and (self.since is None or e.time >= self.since)
            and (self.until is None or e.time < self.until)
        )


class AuditSink(Protocol):
    def record(self, event: AuditEvent) -> None: ...


class LogSink:
    """One JSON line per event on the `modelport.audit` logger."""

    def record(self, event: AuditEvent) -> None:
        audit_log.info("%s", event.to_json())


class MemorySink:
    """Events kept in a bounded list (a service without a database, and tests)."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self.events: list[AuditEvent] = []

    def record(self, event: AuditEvent) -> None:
        self.events.append(event)
        del self.events[: max(0, len(self.events) - self.limit)]

    def query(self, query: AuditQuery) -> list[AuditEvent]:
        """Newest first, as `modelport audit` lists them."""
        found = [e for e in reversed(self.events) if query.matches(e)]
        return found[: query.limit]


class Fanout:
    def __init__(self, sinks: Iterable[AuditSink]) -> None:
        self.sinks = list(sinks)

    def record(self, event: AuditEvent) -> None:
        for sink in self.sinks:
            sink.record(event)
