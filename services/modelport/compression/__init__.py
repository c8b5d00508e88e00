"""Derived versions: quantized, pruned, cast and compiled children of a stored model.

- `spec`: what a derive job is asked to do, checked before anything runs, and
  which methods need a GPU (the Kubernetes executor schedules those on one).
- `transforms`: the methods on a module (torchao `quantize_` configs, torch's
  magnitude pruning, dtype casts, torch.export, AOTInductor packages).
- `derive`: a Triton model folder in → the child's folder out.
- `decoder`: weight-only int8/int4 of a Hugging Face causal LM folder.
- `evaldata`, `measure`: the caller's data, and accuracy, size, memory,
  latency and throughput of a model folder measured on it.
- `worker`: one job end to end against the registry (what the registry's
  local pool and the Kubernetes Job run).

No grpc here but through the SDK (`modelport.client`); torch is imported by
the functions that need it.
"""
