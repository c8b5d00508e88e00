"""The router's OpenAI API secured like its gRPC port: HTTPS with a real certificate,
API keys in `Authorization: Bearer`, the same deny-by-default policy and quotas
(generated tokens charged to the tenant's token rate), driven by the `openai` package."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import yaml
from modelport.auth.api_keys import new_key
from modelport.inference.app import InferenceApp, InferenceSettings
from modelport.router.app import build
from modelport.router.settings import RouterSettings

from tests.router.router_helpers import serving, wait_until
from tests.support.certificates import CertificateAuthority, localhost_server

POLICY = {
    "roles": {"caller": [{"actions": ["infer", "metadata"], "models": ["tiny"]}]},
    "tenants": {
        "team-a": {"roles": ["caller"]},
        "team-b": {"grants": [{"actions": ["infer"], "models": ["other-*"]}]},
        "team-c": {"roles": ["caller"], "quota": {"tokens_per_second": 1, "token_burst": 4}},
    },
}


@pytest.fixture
async def secured(tiny_repo: Path, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    ca = CertificateAuthority()
    cert, key = localhost_server(ca).write(tmp_path, "router")
    keys = {tenant: new_key(tenant) for tenant in POLICY["tenants"]}
    (tmp_path / "keys.yaml").write_text(
        yaml.safe_dump({"keys": [entry.to_yaml_item() for _, entry in keys.values()]})
    )
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(POLICY))
    replica = InferenceApp(
        InferenceSettings(model_repository=tiny_repo, host="127.0.0.1", grpc_port=0,
                          metrics_port=-1, grace_seconds=1.0)
    )  # fmt: skip
    await replica.start()
    router = build(
        RouterSettings(
            host="127.0.0.1", grpc_port=0, metrics_port=-1, http_port=0, index_interval=0.1,
            endpoints=(f"tiny=127.0.0.1:{replica.port}",),
            tls_cert_file=cert, tls_key_file=key,
            auth_policy_file=tmp_path / "policy.yaml", api_keys_file=tmp_path / "keys.yaml",
        )
    )  # fmt: skip
    await router.start()
    await wait_until(serving(router, "tiny", 1))
    context = ssl.create_default_context(cafile=str(ca.write(tmp_path)))

    def client(tenant: str | None) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=f"https://localhost:{router.http_port}/v1",
            api_key=keys[tenant][0] if tenant else "",
            http_client=openai.DefaultAsyncHttpxClient(verify=context),
            max_retries=0,
        )

    try:
        yield {"client": client, "ssl": context, "url": f"localhost:{router.http_port}"}
    finally:
        await router.stop(0)
        await replica.stop(0.5)


async def test_tenants_see_and_call_only_their_models(secured: dict[str, Any]) -> None:
    team_a, team_b = secured["client"]("team-a"), secured["client"]("team-b")
    assert [m.id for m in (await team_a.models.list()).data] == ["tiny"]
    done = await team_a.completions.create(model="tiny", prompt="The harbor", max_tokens=3)
    assert done.usage is not None and done.usage.completion_tokens >= 1
    assert [m.id for m in (await team_b.models.list()).data] == []
    with pytest.raises(openai.PermissionDeniedError) as denied:
        await team_b.completions.create(model="tiny", prompt="x", max_tokens=1)
    assert "infer" in str(denied.value) and "tiny" in str(denied.value)


async def test_no_key_or_a_wrong_one_is_401(secured: dict[str, Any]) -> None:
    api = secured["client"]("team-a").with_options(api_key="mpk_000000000000_nope")
    with pytest.raises(openai.AuthenticationError) as refused:
        await api.models.list()
    assert refused.value.response.headers["www-authenticate"].startswith("Bearer")
    async with aiohttp.ClientSession() as session:  # no Authorization header at all
        url = f"https://{secured['url']}/v1/completions"
        body = {"model": "tiny", "prompt": "x"}
        async with session.post(url, json=body, ssl=secured["ssl"]) as response:
            assert response.status == 401
            assert (await response.json())["error"]["type"] == "authentication_error"


async def test_generated_tokens_are_charged_to_the_token_rate(secured: dict[str, Any]) -> None:
    team_c = secured["client"]("team-c")  # 1 token/s, burst 4
    await team_c.completions.create(
        model="tiny", prompt="The harbor", max_tokens=8, extra_body={"ignore_eos": True}
    )
    with pytest.raises(openai.RateLimitError) as limited:
        await team_c.completions.create(model="tiny", prompt="x", max_tokens=1)
    assert int(limited.value.response.headers["retry-after"]) >= 1
    assert "generated tokens" in str(limited.value)


async def test_without_the_ca_the_handshake_fails(secured: dict[str, Any]) -> None:
    # The system's CAs do not know ours: the client refuses the router's certificate.
    api = openai.AsyncOpenAI(base_url=f"https://{secured['url']}/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.APIConnectionError):
        await api.models.list()
