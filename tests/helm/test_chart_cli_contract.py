"""The contract between the chart and the programs it runs (tier 1: nothing is started).

For every ci/*-values.yaml rendering, every container that runs `modelport`
(the image's entrypoint, or a `modelport …` line of a shell script) has its
args and env parsed by the real click command, exactly as the process would:
unknown flags and unreadable values fail here. Every MODELPORT_* variable the
chart sets must be read by an option of the command it reaches: a variable
nothing reads is a setting that silently does nothing.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator
from typing import Any

import click
import pytest
from modelport.cli import main
from modelport.cli.options import SettingsCommand

from tests.helm.helmchart import SCENARIOS, Manifest, Render, env_of

pytestmark = pytest.mark.fast  # tier 1: no servers (`make test-fast`)

WORKLOADS = ("Deployment", "Job", "StatefulSet", "DaemonSet")


def pod_containers(objects: list[Manifest]) -> Iterator[tuple[str, Manifest]]:
    for obj in objects:
        if obj["kind"] in WORKLOADS:
            spec = obj["spec"]["template"]["spec"]
            for item in [*spec.get("initContainers", []), *spec["containers"]]:
                yield f"{obj['kind']}/{obj['metadata']['name']}/{item['name']}", item


def env_values(item: Manifest) -> dict[str, str]:
    """The container's variables; a value from a Secret or field becomes a placeholder."""
    values = {}
    for name, entry in env_of(item).items():
        values[name] = str(entry["value"]) if "value" in entry else f"<{name} from valueFrom>"
    return values


def modelport_argv(item: Manifest, env: dict[str, str]) -> list[str] | None:
    """The arguments `modelport` gets in this container, or None if it runs something else."""
    command = item.get("command")
    if not command:  # the image's entrypoint is `modelport`
        return [str(arg) for arg in item.get("args", [])]
    if command[:2] != ["/bin/sh", "-c"]:
        return None
    script = item["args"][0].replace("\\\n", " ")
    lines = [line for line in script.splitlines() if line.strip().startswith("modelport ")]
    if not lines:
        return None
    (line,) = lines
    words = shlex.split(line)[1:]
    # "$ROUTER" (quotes removed by shlex) takes the container's value, as the shell would.
    return [env.get(w[1:].strip("{}"), w) if w.startswith("$") else w for w in words]


def leaf_command(argv: list[str]) -> tuple[list[str], click.Command, list[str]]:
    """Walk `modelport serve router …` down to the command that takes the options."""
    path: list[str] = []
    command: click.Command = main
    args = list(argv)
    while isinstance(command, click.Group):
        assert args, f"`modelport {' '.join(path)}` needs a subcommand"
        sub = command.get_command(click.Context(command), args[0])
        assert sub is not None, f"no command `modelport {' '.join([*path, args[0]])}`"
        path.append(args.pop(0))
        command = sub
    return path, command, args


def read_variables(command: click.Command) -> set[str]:
    names: set[str] = set()
    for param in command.params:
        envvar = getattr(param, "envvar", None)
        if isinstance(envvar, str):
            names.add(envvar)
        elif envvar:
            names.update(envvar)
    return names


def parse(
    command: click.Command, name: str, args: list[str], env: dict[str, str]
) -> dict[str, Any]:
    """click's parse of args with exactly the container's MODELPORT_* environment."""
    saved = dict(os.environ)
    try:
        for key in [k for k in os.environ if k.startswith("MODELPORT_")]:
            del os.environ[key]
        os.environ.update({k: v for k, v in env.items() if k.startswith("MODELPORT_")})
        context = command.make_context(name, list(args))
        if isinstance(command, SettingsCommand):  # the settings the service would run with
            command.settings(context.params)
        return dict(context.params)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def contracts(
    render: Render,
) -> Iterator[tuple[str, str, list[str], click.Command, list[str], dict[str, str]]]:
    for values in SCENARIOS:
        for where, item in pod_containers(render(values)):
            env = env_values(item)
            argv = modelport_argv(item, env)
            if argv is None:
                assert not [k for k in env if k.startswith("MODELPORT_")], (
                    f"{values.name}: {where} sets MODELPORT_* but does not run modelport"
                )
                continue
            path, command, args = leaf_command(argv)
            yield values.name, where, path, command, args, env


def test_every_container_command_parses_with_its_env(render: Render) -> None:
    seen = set()
    for scenario_name, where, path, command, args, env in contracts(render):
        try:
            parse(command, " ".join(path), args, env)
        except click.ClickException as exc:
            pytest.fail(
                f"{scenario_name}: {where}: `modelport {' '.join(path)}`: {exc.format_message()}"
            )
        seen.add(" ".join(path))
    # The chart runs each service and the load test: all of them were checked.
    assert {"serve inference", "serve router", "serve registry", "loadtest"} <= seen


def test_every_modelport_variable_the_chart_sets_is_read_by_an_option(render: Render) -> None:
    unread = []
    for scenario_name, where, path, command, _, env in contracts(render):
        known = read_variables(command)
        unread += [f"{scenario_name}: {where}: {name} (`modelport {' '.join(path)}` has no option for it)"
                   for name in env if name.startswith("MODELPORT_") and name not in known]  # fmt: skip
    assert unread == []


def test_the_tls_variables_reach_every_server(render: Render) -> None:
    from tests.helm.helmchart import scenario

    for _, where, path, command, args, env in [
        c for c in contracts(render) if c[0] == scenario("postgresql-tls").name
    ]:
        params = parse(command, " ".join(path), args, env)
        assert str(params["tls_cert_file"]) == "/etc/modelport/tls/tls.crt", where
        assert str(params["tls_key_file"]) == "/etc/modelport/tls/tls.key", where
        assert str(params["tls_ca_file"]) == "/etc/modelport/tls/ca.crt", where


def test_a_variable_no_option_reads_is_caught() -> None:
    """The check above can fail: a made-up variable is not read by `serve router`."""
    _, command, _ = leaf_command(["serve", "router"])
    assert "MODELPORT_TLS_CA_FILE" in read_variables(command)
    assert "MODELPORT_NO_SUCH_SETTING" not in read_variables(command)
