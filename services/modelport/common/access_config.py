"""Access control from a server's settings: the policy file and identities, and/or
`--allowed-peer` (serve only callers with a matching client certificate).

`--allowed-peer` alone is how an inference service trusts only the router: the
peers it names are one tenant granted every action, everyone else is refused.
With a policy file as well, those peers are added to it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence

from modelport.auth.audit import AuditSink
from modelport.auth.authenticator import Authenticator
from modelport.auth.gate import Gate
from modelport.auth.identity import Principal
from modelport.auth.peers import PeerIdentities, PeerRule
from modelport.auth.policy import ACTIONS, Grant, Policy, TenantEntry
from modelport.auth.quotas import UploadLedger
from modelport.common.access import AccessControl
from modelport.common.settings import ServerSettings

log = logging.getLogger(__name__)

TRUSTED_PEERS = "trusted-peer"  # the tenant of --allowed-peer callers


def with_trusted_peers(policy: Policy, patterns: Sequence[str]) -> Policy:
    """`policy` plus: callers whose SAN matches `patterns` may do anything."""
    if not patterns:
        return policy
    rules = [PeerRule(p, TRUSTED_PEERS) for p in patterns]
    everything = TenantEntry(grants=(Grant(frozenset(ACTIONS), ("*",)),))
    return dataclasses.replace(
        policy,
        peers=PeerIdentities([*rules, *policy.peers.rules]),
        tenants={**policy.tenants, TRUSTED_PEERS: everything},
    )


def build_access_control(
    service: str,
    settings: ServerSettings,
    *,
    audit_sink: AuditSink | None = None,
    upload_ledger: UploadLedger | None = None,
    raw_model: Callable[[bytes], str] | None = None,
    trust_local_plaintext: bool = False,
    job_tokens: Callable[[str, str], Principal] | None = None,
    owner_of: Callable[[str], tuple[str, str] | None] | None = None,
) -> AccessControl | None:
    """The service's access control; without a policy or peers it only audits (None
    when there is nothing to audit either)."""
    auth, peers = settings.auth, settings.allowed_peers
    if auth is None and not peers:
        if audit_sink is None:
            return None
        return AccessControl(service, None, audit_sink=audit_sink, owner_of=owner_of)
    if auth is not None:
        gate = Gate.from_settings(
            auth, extend=lambda policy: with_trusted_peers(policy, peers), job_tokens=job_tokens
        )
    else:
        policy_value = with_trusted_peers(Policy(), peers)
        authenticator = Authenticator(peers=lambda: policy_value.peers, job_tokens=job_tokens)
        gate = Gate(authenticator, lambda: policy_value)
    parts = [f"policy {auth.policy_file}"] if auth else []
    parts += [f"peers {', '.join(peers)}"] if peers else []
    log.info("%s: access control on (%s)", service, "; ".join(parts))
    return AccessControl(
        service,
        gate,
        audit_sink=audit_sink,
        upload_ledger=upload_ledger,
        raw_model=raw_model,
        trust_local_plaintext=trust_local_plaintext,
        owner_of=owner_of,
    )
