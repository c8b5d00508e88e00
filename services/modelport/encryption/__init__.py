"""Model blobs encrypted at rest: envelope encryption with `cryptography`'s AES-GCM.

- `keyring`: key-encryption keys (KEKs) from a file or Secret; data keys wrapped
  and re-wrapped under them.
- `sealed`: the chunked, authenticated file format of an encrypted blob, written
  and read as streams in bounded memory (random access for loaders).

(Moves into `modelport.artifacts` with the rest of the stored model format.)
"""
