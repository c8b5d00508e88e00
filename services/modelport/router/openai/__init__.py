"""The OpenAI-compatible HTTP API for generative models, in front of the router.

- `schemas.py`  request bodies (validated), response and stream-chunk bodies
- `errors.py`   modelport errors → OpenAI's error JSON and HTTP status
- `chat.py`     chat templates rendered in a Jinja sandbox (no torch, no tokenizer)
- `sse.py`      server-sent events framing
- `service.py`  the transport-free handlers over a `GenerationBackend`
- `http.py`     the aiohttp application (routes, streaming, disconnects)
"""
