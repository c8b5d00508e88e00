"""`modelport models …` round trip against a real registry."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner
from modelport.cli import main
from modelport.client.registry import ensure_pushed

from tests.registry.registry_servers import ThreadedRegistry


def run(registry: ThreadedRegistry, *args: str, ok: bool = True) -> str:
    result = CliRunner().invoke(
        main, ["models", *args], env={"MODELPORT_REGISTRY": registry.address}
    )
    assert (result.exit_code == 0) == ok, result.output
    return result.output


def run_json(registry: ThreadedRegistry, *args: str) -> object:
    result = CliRunner().invoke(
        main, ["models", *args, "--json"], env={"MODELPORT_REGISTRY": registry.address}
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # warnings go to stderr


def test_push_alias_rollback_pull_delete(
    registry: ThreadedRegistry, make_model: Callable[..., Path], tmp_path: Path
) -> None:
    first = run_json(
        registry, "push", str(make_model("m", 2.0)), "--name", "m", "--alias", "production",
        "--label", "team=search", "--metric", "accuracy=0.91",
    )  # fmt: skip
    assert first["version"] == "1" and first["labels"]["team"] == "search"
    assert first["metrics"] == {"accuracy": 0.91}
    out = run(
        registry, "push", str(make_model("m", 3.0)), "--name", "m", "--parent", "m@production"
    )
    assert "pushed m:2" in out

    assert "m@production → 2 (was 1)" in run(registry, "alias", "m", "2", "production")
    listed = run_json(registry, "list")
    assert listed[0]["name"] == "m" and listed[0]["aliases"] == {"production": "2"}
    assert "production" in run(registry, "list")  # the table

    rolled = run_json(registry, "rollback", "m", "production")
    assert (rolled["version"], rolled["previous_version"]) == ("1", "2")
    shown = run_json(registry, "show", "m")
    assert [v["parent"] for v in shown["versions"] if v["version"] == "2"] == ["m:1"]

    run(registry, "pull", "m@production", str(tmp_path / "pulled"))
    assert (tmp_path / "pulled" / "1" / "model.pt2").is_file()
    assert (tmp_path / "pulled" / "config.pbtxt").is_file()

    out = run(registry, "delete", "m:1", ok=False)
    assert "FAILED_PRECONDITION" in out and "aliased as production" in out
    assert "deleted m:2" in run(registry, "delete", "m:2")
    moves = run_json(registry, "history", "m", "production")
    assert [int(m["version"]) for m in moves] == [1, 2, 1]
    assert "NOT_FOUND" in run(registry, "show", "nope", ok=False)


def test_alias_moves_to_another_signature_only_with_force(
    registry: ThreadedRegistry, make_model: Callable[..., Path]
) -> None:
    run(registry, "push", str(make_model("sig", 2.0)), "--name", "sig", "--alias", "production")
    renamed = make_model("sig", 3.0)  # its output named SCALED instead of OUTPUT0
    config = renamed / "config.pbtxt"
    config.write_text(config.read_text().replace("OUTPUT0", "SCALED"))
    out = run(registry, "push", str(renamed), "--name", "sig", "--alias", "production", ok=False)
    assert "FAILED_PRECONDITION" in out and "--force" in out
    assert "outputs SCALED FP32 [4] (now OUTPUT0 FP32 [4])" in out
    assert "pushed sig:2 (production)" in run(
        registry, "push", str(renamed), "--name", "sig", "--alias", "production", "--force"
    )  # the refused push stored nothing, not even its version
    out = run(registry, "alias", "sig", "1", "production", ok=False)
    assert "version 1 does not take what version 2 (at alias 'production') takes" in out
    assert "sig@production → 1 (was 2)" in run(
        registry, "alias", "sig", "1", "production", "--force"
    )
    run(registry, "push", str(renamed), "--name", "sig", "--alias", "canary")  # a new alias: free
    assert "sig@canary → 1" in run(registry, "alias", "sig", "1", "canary", "--force")


def test_policy_commands(registry: ThreadedRegistry, make_model: Callable[..., Path]) -> None:
    run(registry, "push", str(make_model("m", 2.0)), "--name", "m", "--alias", "production")
    policy = run_json(
        registry, "policy", "m", "--split", "production=90,canary=10", "--shadow", "shadow"
    )
    assert policy["split"] == [
        {"alias": "production", "weight": 90},
        {"alias": "canary", "weight": 10},
    ]
    assert policy["shadow_alias"] == "shadow"
    assert "ensemble m@production, m:1" in run(
        registry, "policy", "m", "--ensemble", "m@production,m:1"
    )
    assert "scatter" in run(registry, "policy", "m", "--scatter")
    assert "none" in run(registry, "policy", "m", "--clear")
    assert "none" in run(registry, "policy", "m")
    assert "exclude" in run(registry, "policy", "m", "--scatter", "--ensemble", "a", ok=False)


def test_pool_commands(registry: ThreadedRegistry, make_model: Callable[..., Path]) -> None:
    run(registry, "push", str(make_model("m", 2.0)), "--name", "m", "--alias", "production")
    assert "not pooled" in run(registry, "pool", "m")
    pooled = run_json(registry, "pool", "m", "--priority", "7", "--memory-mb", "2")
    assert (pooled["pooled"], pooled["priority"], int(pooled["memory_bytes"])) == (True, 7, 2 << 20)
    # Changing one setting keeps the other.
    assert "priority 3, memory 2.0 MiB" in run(registry, "pool", "m", "--priority", "3")
    assert [p["model"] for p in run_json(registry, "pool")] == ["m"]
    assert "not pooled" in run(registry, "pool", "m", "--off")
    assert run_json(registry, "pool") == []
    assert "--off takes no other" in run(
        registry, "pool", "m", "--off", "--priority", "1", ok=False
    )
    assert "NOT_FOUND" in run(registry, "pool", "nope", "--priority", "1", ok=False)


def test_ensure_pushed_pushes_once(
    registry: ThreadedRegistry, make_model: Callable[..., Path]
) -> None:
    model_dir = make_model("m", 2.0)
    first = ensure_pushed(registry.address, model_dir, "m")
    again = ensure_pushed(registry.address, model_dir, "m")
    assert (first.version, again.version) == (1, 1)
    changed = ensure_pushed(registry.address, make_model("m", 5.0), "m")
    assert changed.version == 2 and "production" in changed.aliases
    back = ensure_pushed(registry.address, model_dir, "m")
    assert back.version == 1, "an earlier push of the same files is reused"
