"""Server-sent events as OpenAI streams them: `data: <json>` events, then `data: [DONE]`."""

from __future__ import annotations

import json
from typing import Any

DONE = b"data: [DONE]\n\n"
CONTENT_TYPE = "text/event-stream"


def event(body: dict[str, Any]) -> bytes:
    # One line per event: json.dumps never emits a raw newline, so no `data:` continuation.
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"
