"""The mTLS peer: the client certificate's SANs, mapped to a tenant.

The TLS layer has already verified the certificate against the CA; what is
left is to say who a SAN is. The mapping sits in the policy file:

    peers:
      "spiffe://modelport.local/ns/modelport/sa/router": {tenant: router}
      "*.batch.svc.cluster.local": {tenant: batch, roles: [reader]}

Patterns are matched whole (fnmatch: `*` and `?`), the first in file order
wins. SANs come as plain values (DNS name, IP address, URI), the way gRPC's
auth context lists them; `sans_of_certificate` reads the same from a PEM or
DER certificate for servers that expose the peer certificate instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from cryptography import x509

from modelport.auth.identity import Principal
from modelport.errors import InvalidInput

SAN_KEY = "x509_subject_alternative_name"


@dataclass(frozen=True)
class PeerRule:
    pattern: str
    tenant: str
    roles: frozenset[str] = frozenset()


class PeerIdentities:
    def __init__(self, rules: Sequence[PeerRule] = ()) -> None:
        self.rules = tuple(rules)
        self.tenants = frozenset(rule.tenant for rule in self.rules)

    @classmethod
    def from_config(cls, section: Any) -> PeerIdentities:
        if section is None:
            return cls()
        if not isinstance(section, Mapping):
            raise InvalidInput("'peers' maps a certificate SAN (or pattern) to {tenant, roles}")
        rules = []
        for pattern, item in section.items():
            if not isinstance(item, Mapping) or not item.get("tenant"):
                raise InvalidInput(f"peers[{pattern!r}]: needs a 'tenant'")
            roles = item.get("roles") or []
            if not isinstance(roles, list):
                raise InvalidInput(f"peers[{pattern!r}]: 'roles' is a list")
            rules.append(PeerRule(str(pattern), str(item["tenant"]), frozenset(map(str, roles))))
        return cls(rules)

    def identify(self, sans: Iterable[str]) -> Principal | None:
        """The principal of the first rule any SAN matches; None if none does."""
        names = list(sans)
        for rule in self.rules:
            for san in names:
                if fnmatchcase(san, rule.pattern):
                    return Principal(rule.tenant, f"mtls:{san}", "mtls", rule.roles)
        return None


def sans_from_auth_context(auth_context: Mapping[str, Iterable[bytes]]) -> tuple[str, ...]:
    """The verified peer's SANs from a gRPC `context.auth_context()` (empty without mTLS)."""
    return tuple(v.decode(errors="replace") for v in auth_context.get(SAN_KEY, ()))


def sans_of_certificate(certificate: bytes) -> tuple[str, ...]:
    """DNS names, IP addresses and URIs in a certificate's SAN extension (PEM or DER)."""
    if certificate.lstrip().startswith(b"-----BEGIN"):
        cert = x509.load_pem_x509_certificate(certificate)
    else:
        cert = x509.load_der_x509_certificate(certificate)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return (
        *san.get_values_for_type(x509.DNSName),
        *(str(ip) for ip in san.get_values_for_type(x509.IPAddress)),
        *san.get_values_for_type(x509.UniformResourceIdentifier),
    )
