"""Who is calling, what they may do, and how much: transport-free cores.

- `identity`: `Principal` (tenant, subject, roles) and `Credentials` as they arrive
  (gRPC metadata or HTTP headers alike).
- `api_keys`: keys stored as salted scrypt hashes in a reloadable file.
- `jwt_tokens`: bearer JWTs checked against a JWKS file or URL.
- `peers`: the mTLS peer's certificate SAN mapped to an identity.
- `authenticator`: the three combined, with a bounded cache of verified credentials.
- `policy`: deny-by-default grants of actions on model patterns.
- `quotas`: token buckets, concurrency limits and daily byte allowances per tenant.
- `gate`: authenticate + authorize + admit in one call, for gRPC and HTTP handlers.
- `audit`: the shape of one audit event and where events go.

Nothing here imports grpc: servicers and HTTP handlers translate.
"""
