"""The model format every part of modelport shares, owned by no service.

- `datatypes`: the one table of tensor element types (wire name, config enum,
  numpy dtype, raw size, typed contents field, torch dtype name). No torch.
- `config`: config.pbtxt parsing, completion from an exported program, and the
  validated `ModelSpec`.
- `repository`: Triton's repository layout on disk and version policies.
- `loaders`: the safe model loaders (graph formats only, never unpickling);
  torch is imported only when one is called.
- `archive`: the stored archive format, its checks, pack and unpack.
- `refs`: model names, alias names and `name@alias` / `name:version` references.
- `generative`: a causal LM (Hugging Face directory) as a version, and the
  generative backend's limits in config.pbtxt.
- `hashing`: content hashing (sha256) of archives and blobs.
- `keyring`: key-encryption keys from a file/Secret; per-blob data keys wrapped,
  unwrapped and re-wrapped under them (AES-GCM, `cryptography`).
- `sealed_blobs`: the chunked, authenticated format of a blob encrypted at rest,
  streamed in bounded memory, with seekable random access for loaders.
- `sealed_files`: a sealed blob on disk beside its wrapped key (registry blobs,
  the inference cache); `sealed_archives`: a stored archive served from one.

Nothing here imports grpc or a service package; importing this package (or any
module but `loaders`' functions) does not import torch.
"""
