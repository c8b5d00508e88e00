"""The chart's `helm test` Job and the example Job call `modelport loadtest` with flags it has.

Each Job's shell script is expanded with the Job's own env values and parsed by
the real click command (nothing runs), so a renamed flag or a value it cannot
read ("10s") fails here rather than in a cluster.
"""

from __future__ import annotations

import os
import shlex
from typing import Any

import click
import pytest
import yaml
from modelport.cli.loadtest import loadtest

from tests.helm.helmchart import (
    REPO_ROOT,
    by_kind,
    env_of,
    helm_path,
    load_manifests,
    pod_spec,
    run_helm,
    scenario,
    template_args,
)

pytestmark = pytest.mark.fast  # tier 1: no servers (`make test-fast`)


def loadtest_argv(job: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """The `modelport loadtest` arguments of a Job's script, with its env values substituted."""
    main = pod_spec(job)["containers"][0]
    env = {name: str(entry.get("value", "")) for name, entry in env_of(main).items()}
    script = main["args"][0].replace("\\\n", " ")
    line = next(line for line in script.splitlines() if "modelport loadtest" in line)
    words = shlex.split(line)
    argv = words[words.index("loadtest") + 1 :]
    # "$ROUTER" (quotes already removed by shlex) takes the Job's value for ROUTER.
    expanded = [env.get(word[1:].strip("{}"), word) if word.startswith("$") else word
                for word in argv]  # fmt: skip
    return expanded, env


def parse(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    """click's parse of argv with the Job's MODELPORT_* variables as the environment."""
    saved = dict(os.environ)
    try:
        os.environ.update({k: v for k, v in env.items() if k.startswith("MODELPORT_")})
        context = loadtest.make_context("loadtest", list(argv))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return dict(context.params)


def test_example_job_command_parses() -> None:
    job = yaml.safe_load((REPO_ROOT / "deploy" / "examples" / "loadtest-job.yaml").read_text())
    argv, env = loadtest_argv(job)
    params = parse(argv, env)
    assert params["url"] == "modelport-router:8001" and params["random_inputs"]
    assert params["duration"] == 60.0 and params["concurrency"] == 32


@pytest.mark.parametrize("tls", [False, True])
def test_helm_test_job_command_parses(tls: bool) -> None:
    helm = helm_path()
    if not os.access(helm, os.X_OK):
        pytest.fail(f"helm not found at {helm}: run `make tools` (or set HELM=/path/to/helm)")
    sets = ("tls.enabled=true", "tls.secretName=certs") if tls else ()
    rendered = run_helm(helm, *template_args((scenario("two-models-gpu-keda"),), sets))
    assert rendered.returncode == 0, rendered.stderr
    (job,) = by_kind(load_manifests(rendered.stdout), "Job")
    argv, env = loadtest_argv(job)
    params = parse(argv, env)
    assert params["duration"] > 0 and params["concurrency"] > 0
    if tls:  # the mounted certificates reach the load test through MODELPORT_TLS_*_FILE
        assert params["tls_ca_file"] == "/etc/modelport/tls/ca.crt"
        assert params["tls_cert_file"] and params["tls_key_file"]


def test_unknown_flags_and_bad_durations_are_refused() -> None:
    with pytest.raises(click.UsageError):
        parse(["--model", "m", "--no-such-flag"], {})
    with pytest.raises(click.BadParameter):
        parse(["--model", "m", "--duration", "ten"], {})
