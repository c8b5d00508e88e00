"""The registry with access control on: who may read and write which models,
listings cut to what the caller may see, the daily upload allowance with its
retry-after trailer, and every write in the audit log (refusals included)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from modelport.artifacts.archive import pack_directory
from modelport.artifacts.hashing import sha256_of
from modelport.auth.api_keys import KeyEntry, new_key
from modelport.client.channel import ModelportClientError
from modelport.client.registry import RegistryClient
from modelport.proto.modelport.registry.v1 import registry_pb2 as pb
from modelport.proto.modelport.registry.v1 import registry_pb2_grpc

from tests.registry.registry_servers import ThreadedRegistry, registry_settings

POLICY = """
tenants:
  team-a:
    grants: [{actions: [read, push, alias, policy, delete], models: ["a-*"]}]
    quota: {upload_bytes_per_day: 30Ki}
  team-b:
    grants: [{actions: [read], models: ["*"]}]
  ops:
    grants: [{actions: [admin], models: ["*"]}]
  team-c: {}
"""


TENANTS = ("team-a", "team-b", "ops", "team-c")


@pytest.fixture(scope="module")
def made_keys() -> dict[str, tuple[str, KeyEntry]]:
    return {tenant: new_key(tenant) for tenant in TENANTS}  # scrypt: made once


@pytest.fixture
def keys(made_keys: dict[str, tuple[str, KeyEntry]]) -> dict[str, str]:
    return {tenant: key for tenant, (key, _) in made_keys.items()}


@pytest.fixture
def secured(
    tmp_path: Path, made_keys: dict[str, tuple[str, KeyEntry]]
) -> Iterator[ThreadedRegistry]:
    (tmp_path / "policy.yaml").write_text(POLICY)
    entries = [entry.to_yaml_item() for _, entry in made_keys.values()]
    (tmp_path / "keys.yaml").write_text(yaml.safe_dump({"keys": entries}))
    settings = dataclasses.replace(
        registry_settings(tmp_path),
        auth_policy_file=tmp_path / "policy.yaml",
        api_keys_file=tmp_path / "keys.yaml",
    )
    server = ThreadedRegistry(settings)
    try:
        yield server
    finally:
        server.stop()


def client(registry: ThreadedRegistry, key: str | None) -> RegistryClient:
    return RegistryClient(registry.address, api_key=key, timeout=30)


def code_of(call: Callable[[], object]) -> tuple[grpc.StatusCode | None, str]:
    with pytest.raises(ModelportClientError) as error:
        call()
    return error.value.code, error.value.message


def test_reads_and_writes_follow_the_policy(
    secured: ThreadedRegistry, keys: dict[str, str], make_model: Callable[..., Path]
) -> None:
    model = make_model("scale", 2.0)
    with client(secured, None) as anonymous:
        assert code_of(anonymous.list_models)[0] == grpc.StatusCode.UNAUTHENTICATED
        assert code_of(lambda: anonymous.push(model, name="a-scale"))[0] == (
            grpc.StatusCode.UNAUTHENTICATED
        )
    with client(secured, keys["team-a"]) as team_a:
        assert team_a.push(model, name="a-scale", aliases=["production"]).version == 1
        code, message = code_of(lambda: team_a.push(model, name="b-scale"))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert message == "tenant 'team-a' may not 'push' model 'b-scale'"
    with client(secured, keys["team-b"]) as team_b:
        code, message = code_of(lambda: team_b.set_alias("a-scale", 1, "canary"))
        assert (code, message) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "tenant 'team-b' may not 'alias' model 'a-scale'",
        )
        # The same answer for a model that does not exist: nothing is revealed.
        code, message = code_of(lambda: team_b.set_alias("a-ghost", 1, "canary"))
        assert code == grpc.StatusCode.PERMISSION_DENIED and "'a-ghost'" in message
        assert [m.name for m in team_b.list_models()] == ["a-scale"]
        assert team_b.resolve("a-scale").version == 1
    with client(secured, keys["team-c"]) as team_c:
        assert team_c.list_models() == []
        assert code_of(lambda: team_c.resolve("a-scale"))[0] == grpc.StatusCode.PERMISSION_DENIED


def test_the_upload_allowance_answers_with_a_retry_after_trailer(
    secured: ThreadedRegistry, keys: dict[str, str], make_model: Callable[..., Path], tmp_path: Path
) -> None:
    archive = tmp_path / "scale.tar"
    pack_directory(make_model("scale", 2.0), archive)
    size = archive.stat().st_size
    assert 15 * 1024 < size < 30 * 1024, size  # one fits in the 30 KiB allowance, two do not
    with client(secured, keys["team-a"]) as team_a:
        team_a.push_archive(archive, name="a-one")

    def messages() -> Iterator[pb.UploadVersionRequest]:
        yield pb.UploadVersionRequest(
            header=pb.UploadHeader(model="a-two", sha256=sha256_of(archive), create_model=True)
        )
        data = archive.read_bytes()
        for start in range(0, len(data), 64 * 1024):
            yield pb.UploadVersionRequest(chunk=data[start : start + 64 * 1024])

    with grpc.insecure_channel(secured.address) as channel:
        stub = registry_pb2_grpc.ModelRegistryStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            stub.UploadVersion(
                messages(), timeout=30, metadata=[("authorization", f"Bearer {keys['team-a']}")]
            )
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "upload allowance" in error.value.details()
    trailers = dict(error.value.trailing_metadata())
    assert int(trailers["retry-after"]) >= 1 and int(trailers["grpc-retry-pushback-ms"]) > 0
    with client(secured, keys["team-b"]) as team_b:
        assert [m.name for m in team_b.list_models()] == ["a-one"]  # nothing half stored


def test_every_write_is_in_the_audit_log(
    secured: ThreadedRegistry, keys: dict[str, str], make_model: Callable[..., Path]
) -> None:
    with client(secured, keys["team-a"]) as team_a:
        team_a.push(make_model("scale", 2.0), name="a-audited")
        team_a.set_alias("a-audited", 1, "canary")
        with pytest.raises(ModelportClientError):
            team_a.delete_model("b-other")
        with pytest.raises(ModelportClientError):
            team_a.set_alias("a-audited", 9, "canary")  # allowed, but fails: no version 9
        # team-a is not an admin: listing the trail shows it nothing, naming a model is refused.
        assert team_a.audit_events() == []
        assert code_of(lambda: team_a.audit_events(model="a-audited"))[0] == (
            grpc.StatusCode.PERMISSION_DENIED
        )
    with client(secured, keys["ops"]) as ops:
        events = ops.audit_events()
        history = ops.audit_events(model="a-audited")
    described = [(e.operation, e.tenant, e.model, e.outcome, e.code) for e in reversed(events)]
    assert described[:4] == [
        ("UploadVersion", "team-a", "a-audited", "ok", "OK"),
        ("SetAlias", "team-a", "a-audited", "ok", "OK"),
        ("DeleteModel", "team-a", "b-other", "denied", "PERMISSION_DENIED"),
        ("SetAlias", "team-a", "a-audited", "failed", "NOT_FOUND"),
    ]
    assert all(e.method == "api-key" and e.peer.startswith("ipv4:127.0.0.1") for e in events)
    assert {e.model for e in history} == {"a-audited"} and len(history) == 3


def test_the_cli_reads_the_trail_with_a_key_from_the_environment(
    secured: ThreadedRegistry, keys: dict[str, str], make_model: Callable[..., Path]
) -> None:
    from click.testing import CliRunner
    from modelport.cli import main

    runner = CliRunner()
    env = {"MODELPORT_REGISTRY": secured.address, "COLUMNS": "200"}
    pushed = runner.invoke(
        main,
        ["models", "push", str(make_model("scale", 2.0)), "--name", "a-cli", "--alias", "canary"],
        env={**env, "MODELPORT_API_KEY": keys["team-a"]},
    )
    assert pushed.exit_code == 0, pushed.output
    refused = runner.invoke(main, ["models", "list"], env=env)
    assert refused.exit_code != 0 and "UNAUTHENTICATED" in refused.output
    trail = runner.invoke(main, ["audit", "--json", "--api-key", keys["ops"]], env=env)
    assert trail.exit_code == 0, trail.output
    events = json.loads(trail.output)
    assert [(e["operation"], e["tenant"], e["model"]) for e in events][:1] == [
        ("UploadVersion", "team-a", "a-cli")
    ]
    history = runner.invoke(
        main, ["models", "history", "a-cli"], env={**env, "MODELPORT_API_KEY": keys["ops"]}
    )
    assert (
        history.exit_code == 0 and "UploadVersion" in history.output and "team-a" in history.output
    )
    # A tenant that may read the model but not its trail still sees the alias history.
    partial = runner.invoke(
        main, ["models", "history", "a-cli"], env={**env, "MODELPORT_API_KEY": keys["team-b"]}
    )
    assert (
        partial.exit_code == 0
        and "canary" in partial.output
        and "PERMISSION_DENIED" in partial.output
    )
