"""The router's OpenAI API secured like its gRPC port: HTTPS with a real certificate,
API keys in `Authorization: Bearer`, the same deny-by-default policy and quotas
(generated tokens charged to the tenant's token rate), driven by the `openai` package."""

from __future__ import annotations

import asyncio
import ssl
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import yaml
from cryptography import x509
from modelport.auth.api_keys import new_key
from modelport.common.metrics import serve_metrics
from modelport.inference.app import InferenceApp, InferenceSettings
from modelport.router.app import build
from modelport.router.settings import RouterSettings
from prometheus_client.parser import text_string_to_metric_families

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
    router.rotation_check_seconds = 0.2
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
        yield {
            "client": client, "ssl": context, "url": f"localhost:{router.http_port}",
            "ca": ca, "cert": cert, "key": key, "port": router.http_port,
        }  # fmt: skip
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


def counters(port: int) -> dict[str, float]:
    """The router's per-tenant series on /metrics: {'tenant/outcome': count, 'tenant/quota': n}."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("service") != "router" or not sample.name.endswith("_total"):
                continue
            if sample.name == "modelport_auth_requests_total":
                found[f"{labels['tenant']}/{labels['outcome']}"] = sample.value
            elif sample.name == "modelport_quota_rejections_total":
                found[f"{labels['tenant']}/quota"] = sample.value
    return found


async def test_refusals_are_counted_per_tenant_like_grpc_refusals(
    secured: dict[str, Any],
) -> None:
    port = serve_metrics("127.0.0.1", 0)
    before = await asyncio.to_thread(counters, port)
    anonymous = secured["client"]("team-a").with_options(api_key="mpk_000000000000_nope")
    with pytest.raises(openai.AuthenticationError):  # 401
        await anonymous.models.list()
    with pytest.raises(openai.PermissionDeniedError):  # 403
        await secured["client"]("team-b").completions.create(model="tiny", prompt="x")
    team_c = secured["client"]("team-c")  # 1 token/s, burst 4: the second is refused
    await team_c.completions.create(
        model="tiny", prompt="The harbor", max_tokens=8, extra_body={"ignore_eos": True}
    )
    with pytest.raises(openai.RateLimitError):  # 429
        await team_c.completions.create(model="tiny", prompt="x", max_tokens=1)
    after = await asyncio.to_thread(counters, port)
    grown = {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}
    assert grown == {
        "anonymous/denied": 1,
        "team-b/denied": 1,
        "team-c/ok": 1,
        "team-c/denied": 1,
        "team-c/quota": 1,
    }, grown


async def test_without_the_ca_the_handshake_fails(secured: dict[str, Any]) -> None:
    # The system's CAs do not know ours: the client refuses the router's certificate.
    api = openai.AsyncOpenAI(base_url=f"https://{secured['url']}/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.APIConnectionError):
        await api.models.list()


async def served_serial(port: int, context: ssl.SSLContext) -> int:
    _, writer = await asyncio.open_connection("localhost", port, ssl=context)
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return x509.load_der_x509_certificate(der).serial_number


async def test_a_rotated_certificate_is_served_without_a_restart(secured: dict[str, Any]) -> None:
    before = await served_serial(secured["port"], secured["ssl"])
    fresh = localhost_server(secured["ca"])
    temp = secured["cert"].with_suffix(".new")
    temp.write_bytes(fresh.cert_pem)
    secured["key"].write_bytes(fresh.key_pem)
    temp.replace(secured["cert"])
    new = x509.load_pem_x509_certificate(fresh.cert_pem).serial_number
    assert new != before
    for _ in range(50):
        if await served_serial(secured["port"], secured["ssl"]) == new:
            break
        await asyncio.sleep(0.1)
    assert await served_serial(secured["port"], secured["ssl"]) == new
    listed = await secured["client"]("team-a").models.list()  # requests carry on
    assert [m.id for m in listed.data] == ["tiny"]


async def test_a_rotated_ca_bundle_replaces_the_old_one_without_a_restart(tmp_path: Path) -> None:
    """Mutual TLS on the OpenAI port: once the CA file names only a new CA, clients
    with certificates of the old one are refused and those of the new one served."""
    old_ca, new_ca = CertificateAuthority("old clients"), CertificateAuthority("new clients")
    cert, key = localhost_server(old_ca).write(tmp_path, "router")
    bundle = old_ca.write(tmp_path, "clients")
    router = build(
        RouterSettings(
            host="127.0.0.1", grpc_port=0, metrics_port=-1, http_port=0,
            endpoints=("tiny=127.0.0.1:1",),
            tls_cert_file=cert, tls_key_file=key, tls_ca_file=bundle,
        )
    )  # fmt: skip
    router.rotation_check_seconds = 0.2
    await router.start()

    def context_of(ca: CertificateAuthority, name: str) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(old_ca.write(tmp_path / name)))
        context.load_cert_chain(*ca.issue(name, client=True, server=False).write(tmp_path, name))
        return context

    async def served(context: ssl.SSLContext) -> bool:
        """One request on a new connection (a kept-alive one keeps its handshake)."""
        async with openai.AsyncOpenAI(
            base_url=f"https://localhost:{router.http_port}/v1", api_key="unused",
            http_client=openai.DefaultAsyncHttpxClient(verify=context), max_retries=0,
        ) as api:  # fmt: skip
            try:
                await api.models.list()
                return True
            except openai.APIConnectionError:
                return False

    try:
        old_client, new_client = context_of(old_ca, "old"), context_of(new_ca, "new")
        assert await served(old_client) and not await served(new_client)
        temp = bundle.with_suffix(".new")
        temp.write_bytes(new_ca.cert_pem)
        temp.replace(bundle)  # as a Secret update swaps the file
        for _ in range(50):
            if not await served(old_client):
                break
            await asyncio.sleep(0.1)
        assert not await served(old_client), "the old CA is still trusted"
        assert await served(new_client)
    finally:
        await router.stop(0)
