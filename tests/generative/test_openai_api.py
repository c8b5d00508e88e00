"""The OpenAI-compatible HTTP layer, served by aiohttp on 127.0.0.1, driven by the official `openai` client."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import openai
import pytest
import torch
from modelport.router.openai import chat


def client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


async def test_models_and_completions_stream_and_whole(served):
    url, engine = served
    api = client(url)
    assert [m.id for m in (await api.models.list()).data] == ["tiny"]
    whole = await api.completions.create(
        model="tiny",
        prompt="The harbor",
        max_tokens=12,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert whole.choices[0].finish_reason == "length"
    assert whole.usage.completion_tokens == 12 and whole.usage.prompt_tokens == len(
        engine.tokenizer.encode("The harbor")
    )
    chunks = [
        c
        async for c in await api.completions.create(
            model="tiny",
            prompt="The harbor",
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
    ]
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.total_tokens == whole.usage.total_tokens


async def test_chat_completions_apply_the_models_template(served):
    url, engine = served
    api = client(url)
    messages = [{"role": "user", "content": "Where is the cafe?"}]
    whole = await api.chat.completions.create(
        model="tiny",
        messages=messages,
        max_tokens=8,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    prompt = chat.render(messages, engine.tokenizer.chat_template)
    assert prompt == "user: Where is the cafe?\nassistant:"
    assert whole.usage.prompt_tokens == len(engine.tokenizer.encode(prompt))
    stream = await api.chat.completions.create(
        model="tiny",
        messages=messages,
        max_tokens=8,
        temperature=0,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks)
        == whole.choices[0].message.content
    )
    assert chunks[-1].choices[0].finish_reason == "length"


def greedy_logprobs(model, ids: list[int], steps: int, top: int) -> list[tuple[int, float, list]]:
    """(token, its logprob, the `top` best (id, logprob)) per greedy step, from the model itself."""
    ids, found = list(ids), []
    with torch.inference_mode():
        for _ in range(steps):
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].float(), -1)
            token = int(logp.argmax())
            best = torch.topk(logp, top)
            found.append(
                (
                    token,
                    float(logp[token]),
                    list(zip(best.indices.tolist(), best.values.tolist(), strict=True)),
                )
            )
            ids.append(token)
    return found


async def test_logprobs_match_the_models_log_softmax(served, reference_model):
    """logprobs / top_logprobs through replica → ModelStreamInfer → router → HTTP, four ways."""
    url, engine = served
    api, tok = client(url), engine.tokenizer
    greedy = {"max_tokens": 6, "temperature": 0, "extra_body": {"ignore_eos": True}}
    messages = [{"role": "user", "content": "Where is the cafe?"}]
    chat_ids = tok.encode(chat.render(messages, tok.chat_template), add_special_tokens=False)
    chat_expected = greedy_logprobs(reference_model.model, chat_ids, 6, 3)
    text_expected = greedy_logprobs(
        reference_model.model, tok.encode("The harbor", add_special_tokens=False), 6, 2
    )

    def check(got: list[tuple[str, float, list[tuple[str, float]]]], expected) -> None:
        assert len(got) == len(expected) == 6
        for (text, logprob, top), (token, want, best) in zip(got, expected, strict=True):
            assert text == tok.decode([token]) and logprob == pytest.approx(want, abs=1e-4)
            assert [t for t, _ in top] == [tok.decode([i]) for i, _ in best]
            assert [v for _, v in top] == pytest.approx([v for _, v in best], abs=1e-4)

    def chat_entries(content) -> list:
        return [
            (c.token, c.logprob, [(t.token, t.logprob) for t in c.top_logprobs]) for c in content
        ]

    whole = await api.chat.completions.create(
        model="tiny", messages=messages, logprobs=True, top_logprobs=3, **greedy
    )
    content = whole.choices[0].logprobs.content
    check(chat_entries(content), chat_expected)
    assert content[0].bytes == list(content[0].token.encode())
    assert "".join(c.token for c in content) == whole.choices[0].message.content
    stream = await api.chat.completions.create(
        model="tiny", messages=messages, logprobs=True, top_logprobs=3, stream=True, **greedy
    )
    streamed = [
        e
        async for c in stream
        if c.choices and c.choices[0].logprobs
        for e in c.choices[0].logprobs.content
    ]
    check(chat_entries(streamed), chat_expected)

    def text_entries(choice_logprobs) -> list:
        lp = choice_logprobs
        return [
            (t, v, sorted(top.items(), key=lambda kv: -kv[1]))
            for t, v, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True)
        ]

    completion = await api.completions.create(
        model="tiny", prompt="The harbor", logprobs=2, **greedy
    )
    lp = completion.choices[0].logprobs
    check(text_entries(lp), text_expected)
    assert lp.text_offset[0] == 0 and lp.text_offset[1] == len(lp.tokens[0])
    chunks = [
        c.choices[0]
        async for c in await api.completions.create(
            model="tiny", prompt="The harbor", logprobs=2, stream=True, **greedy
        )
        if c.choices and c.choices[0].logprobs
    ]
    streamed = [e for c in chunks for e in text_entries(c.logprobs)]
    check(streamed, text_expected)
    assert chunks[-1].logprobs.text_offset[-1] == lp.text_offset[-1]
    plain = await api.chat.completions.create(model="tiny", messages=messages, **greedy)
    assert plain.choices[0].logprobs is None
    with pytest.raises(openai.BadRequestError, match="top_logprobs"):
        await api.chat.completions.create(model="tiny", messages=messages, top_logprobs=2)
    with pytest.raises(openai.BadRequestError, match="logprobs"):
        await api.completions.create(model="tiny", prompt="x", logprobs=21)


async def test_errors_have_openai_shape_and_status(served):
    url, _ = served
    api = client(url)
    with pytest.raises(openai.NotFoundError) as missing:
        await api.completions.create(model="nope", prompt="x")
    assert (
        missing.value.body["code"] == "model_not_found" and "nope" in missing.value.body["message"]
    )
    with pytest.raises(openai.BadRequestError, match="temperature"):
        await api.completions.create(model="tiny", prompt="x", temperature=5)
    with pytest.raises(openai.BadRequestError, match="n"):
        await api.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "x"}], n=2
        )
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}/v1/completions", data=b"{not json") as reply,
    ):
        assert reply.status == 400
        assert (await reply.json())["error"]["type"] == "invalid_request_error"


async def test_full_queue_is_429_and_a_disconnect_cancels_the_sequence(served):
    url, engine = served
    body = {"model": "tiny", "prompt": "The", "max_tokens": 400, "stream": True, "ignore_eos": True}
    async with aiohttp.ClientSession() as http:
        running = [await http.post(f"{url}/v1/completions", json=body) for _ in range(2)]
        for reply in running:
            await reply.content.readline()  # streaming: both hold a slot (max_num_seqs 2)
        # Hold the engine between two steps (its lock is re-entrant, so this loop can still
        # submit) so the queue stays full however fast the tiny model runs.
        with engine._wake:
            waiting = asyncio.create_task(http.post(f"{url}/v1/completions", json=body))
            while engine.load().waiting < 1:
                await asyncio.sleep(0.005)
            with pytest.raises(openai.RateLimitError, match=r"max_waiting 1"):
                await client(url).completions.create(model="tiny", prompt="x", max_tokens=1)
        for reply in running:
            reply.close()  # drop the connections mid-stream
        (await waiting).close()
    deadline = time.monotonic() + 10
    while (engine.load().running or engine.load().waiting) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert (engine.load().running, engine.load().waiting, engine.load().kv_used_blocks) == (0, 0, 0)
    assert (
        engine.counters.finished.get("cancelled", 0) >= 2
        and engine.counters.finished.get("length", 0) <= 1
    )
