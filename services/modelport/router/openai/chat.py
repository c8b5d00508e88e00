"""Chat templates (the Jinja text a model ships in tokenizer_config.json) rendered safely.

A template comes with a model, so it is untrusted: it runs in Jinja's
immutable sandbox, with the same environment options and helpers
transformers gives templates (`raise_exception`, `tojson`, trimmed blocks),
so a template written for `apply_chat_template` renders the same text here.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from modelport.errors import FailedPrecondition, InvalidInput

# A neutral default for models that ship none (OpenAI's roles, one per line).
DEFAULT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


class _TemplateError(Exception):
    pass


def _raise(message: str) -> None:
    raise _TemplateError(message)


@functools.lru_cache(maxsize=32)
def _compile(template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    env.filters["tojson"] = lambda value, indent=None: json.dumps(
        value, indent=indent, ensure_ascii=False
    )
    try:
        return env.from_string(template)
    except jinja2.TemplateError as error:
        raise FailedPrecondition(f"the model's chat template does not compile ({error})") from None


def render(
    messages: Sequence[dict[str, Any]],
    template: str | None,
    *,
    add_generation_prompt: bool = True,
    bos_token: str = "",
    eos_token: str = "",
) -> str:
    """The prompt text for `messages`; InvalidInput when the template rejects them."""
    compiled = _compile(template or DEFAULT_TEMPLATE)
    try:
        return compiled.render(
            messages=list(messages),
            add_generation_prompt=add_generation_prompt,
            bos_token=bos_token,
            eos_token=eos_token,
        )
    except _TemplateError as error:
        raise InvalidInput(f"messages: {error}") from None
    except jinja2.TemplateError as error:
        raise FailedPrecondition(f"the model's chat template failed ({error})") from None
