"""Generative models: a causal LM served token by token with continuous batching.

Transport-free: nothing here imports grpc or an HTTP stack. The servicer (OIP
ModelStreamInfer) and the router's OpenAI layer call an engine through the
`GenerationEngine` protocol (`protocol.py`).

- `types.py`       sampling parameters, outputs, finish reasons, engine load
- `protocol.py`    the engine seam every implementation satisfies
- `engine.py`      the continuous-batching engine (a step loop on its own thread)
- `scheduler.py`   waiting queue, admission, chunked prefill, preemption
- `kv_cache.py`    paged KV blocks under a budget, plugged into transformers' models
- `sampler.py`     greedy / temperature / top-k / top-p / repetition penalty / logprobs
- `detokenizer.py` incremental detokenization and stop strings
- `hf_loader.py`   loads the HF directory (format: `modelport.artifacts.generative`)
- `sample_decoder.py` the tiny decoder the project trains on text it ships
"""
