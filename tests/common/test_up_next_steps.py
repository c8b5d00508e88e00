"""`modelport up`'s last lines name commands that work against the stack it started:
`--random` tensors go to a tensor model, prompts to the generative sample."""

from __future__ import annotations

from modelport.cli.up import next_steps


def test_load_test_hint_names_a_tensor_model_and_generation_the_decoder() -> None:
    text = next_steps("127.0.0.1:8001", "127.0.0.1:8003", ("simple", "mlp", "tiny-llama"),
                      "http://127.0.0.1:8000")  # fmt: skip
    assert "loadtest --url 127.0.0.1:8001 --model mlp --random" in text
    assert "loadtest --generate --url http://127.0.0.1:8000 --model tiny-llama" in text
    assert text.splitlines()[-1].startswith("Ctrl-C")


def test_the_users_own_model_comes_first_and_no_generation_without_the_api() -> None:
    text = next_steps("h:1", "h:3", ("simple", "mlp", "tiny-llama", "own"))
    assert "--model own --random" in text and "--generate" not in text
