"""Paths and helpers for the chart tests (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "deploy" / "helm" / "modelport"
SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))
RELEASE = "mp"
NAMESPACE = "serving"

Manifest = dict[str, Any]
Render = Callable[..., list[Manifest]]


def helm_path() -> Path:
    configured = os.environ.get("HELM")
    return Path(configured) if configured else REPO_ROOT / ".venv" / "bin" / "helm"


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), *args], capture_output=True, text=True, timeout=60, check=False
    )


def template_args(values_files: tuple[Path, ...], sets: tuple[str, ...]) -> list[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for path in values_files:
        args += ["--values", str(path)]
    for assignment in sets:
        args += ["--set", assignment]
    return args


class UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that rejects duplicate keys: two documents glued together by a
    missing `---` parse as one object whose later keys silently win otherwise."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_manifests(text: str) -> list[Manifest]:
    return [doc for doc in yaml.load_all(text, Loader=UniqueKeyLoader) if doc]


def scenario(name: str) -> Path:
    path = CHART / "ci" / f"{name}-values.yaml"
    assert path.is_file(), path
    return path


def by_kind(objects: list[Manifest], kind: str) -> list[Manifest]:
    return [obj for obj in objects if obj["kind"] == kind]


def named(objects: list[Manifest], kind: str, name: str) -> Manifest:
    matches = [obj for obj in by_kind(objects, kind) if obj["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


PREFIX = f"{RELEASE}-modelport"  # the chart's full name for release RELEASE


def pod_spec(deployment: Manifest) -> Manifest:
    return deployment["spec"]["template"]["spec"]


def container(deployment: Manifest) -> Manifest:
    containers = pod_spec(deployment)["containers"]
    assert len(containers) == 1
    return containers[0]


def arg_value(args: list[str], flag: str) -> str:
    values = [arg.split("=", 1)[1] for arg in args if arg.startswith(flag + "=")]
    assert len(values) == 1, f"{flag} in {args}"
    return values[0]


def env_of(cont: Manifest) -> dict[str, Manifest]:
    return {item["name"]: item for item in cont.get("env", [])}
