"""skaffold.yaml: the facts `skaffold dev/run` relies on, and every profile's values are
accepted by the chart (rendered with real Helm, as skaffold would call it)."""

from __future__ import annotations

import copy
import fnmatch
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helm.helmchart import CHART, REPO_ROOT, by_kind, load_manifests, run_helm

pytestmark = pytest.mark.fast  # tier 1: no servers (`make test-fast`)

SKAFFOLD = REPO_ROOT / "skaffold.yaml"
# The newest schema skaffold publishes (v4beta14, skaffold 2.19).
SCHEMA_VERSION = "skaffold/v4beta14"


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(SKAFFOLD.read_text())
    return loaded


def pointer_parts(path: str) -> list[str]:
    return [part.replace("~1", "/").replace("~0", "~") for part in path.split("/")[1:]]


def apply_patches(config: dict[str, Any], patches: list[dict[str, Any]]) -> dict[str, Any]:
    """JSON-patch `add`/`replace` on a copy, as skaffold applies a profile's patches."""
    patched = copy.deepcopy(config)
    for patch in patches:
        assert patch["op"] in ("add", "replace"), patch
        *parents, last = pointer_parts(patch["path"])
        node: Any = patched
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list) and patch["op"] == "add":
            node.insert(int(last), patch["value"])
        elif isinstance(node, list):
            node[int(last)] = patch["value"]
        else:
            assert patch["op"] == "add" or last in node, f"replace of missing {patch['path']}"
            node[last] = patch["value"]
    return patched


def profile(config: dict[str, Any], name: str) -> dict[str, Any]:
    matches = [p for p in config["profiles"] if p["name"] == name]
    assert len(matches) == 1, name
    return matches[0]


def helm_sets(release: dict[str, Any], registry: str, tag: str) -> list[str]:
    """The --set flags skaffold passes: setValues as-is, setValueTemplates expanded (each
    artifact's variables name it with `/`, `-`, `.` spelled `_`)."""
    variables: dict[str, str] = {}
    for image in ("modelport", "modelport-vllm"):
        name = re.sub(r"[/.-]", "_", image)
        variables |= {f"IMAGE_REPO_{name}": f"{registry}/{image}", f"IMAGE_TAG_{name}": tag}
    args: list[str] = []
    for key, value in release.get("setValues", {}).items():
        args += ["--set", f"{key}={str(value).lower() if isinstance(value, bool) else value}"]
    for key, template in release.get("setValueTemplates", {}).items():
        expanded = re.sub(r"\{\{\s*\.(\w+)\s*\}\}", lambda m: variables[m.group(1)], template)
        args += ["--set", f"{key}={expanded}"]
    return args


def render_release(helm: Path, release: dict[str, Any]) -> list[dict[str, Any]]:
    args = ["template", release["name"], str(REPO_ROOT / release["chartPath"])]
    args += ["--namespace", release["namespace"]]
    for values in release.get("valuesFiles", []):
        args += ["--values", str(REPO_ROOT / values)]
    args += helm_sets(release, "registry.local", "abc1234")
    done = run_helm(helm, *args)
    assert done.returncode == 0, done.stderr
    return load_manifests(done.stdout)


def test_schema_version_and_image_build(config: dict[str, Any]) -> None:
    assert config["apiVersion"] == SCHEMA_VERSION
    assert config["kind"] == "Config"
    (artifact,) = config["build"]["artifacts"]
    assert artifact["image"] == "modelport"
    assert artifact["docker"]["dockerfile"] == "Dockerfile"
    assert (REPO_ROOT / artifact["context"] / artifact["docker"]["dockerfile"]).is_file()
    assert artifact["docker"]["buildArgs"]["VARIANT"] == "cpu"


def test_chart_gets_the_built_image_through_set_value_templates(
    config: dict[str, Any], helm: Path
) -> None:
    (release,) = config["deploy"]["helm"]["releases"]
    assert (REPO_ROOT / release["chartPath"]) == CHART
    templates = release["setValueTemplates"]
    assert templates["image.repository"] == "{{.IMAGE_REPO_modelport}}"
    assert templates["image.tag"] == "{{.IMAGE_TAG_modelport}}"
    objects = render_release(helm, release)
    images = {
        c["image"]
        for d in by_kind(objects, "Deployment")
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert images == {"registry.local/modelport:abc1234"}


def test_router_is_port_forwarded(config: dict[str, Any], helm: Path) -> None:
    (release,) = config["deploy"]["helm"]["releases"]
    (forward,) = config["portForward"]
    assert forward["resourceType"] == "service"
    assert (forward["port"], forward["localPort"]) == (8001, 8001)
    assert forward["namespace"] == release["namespace"]
    services = {s["metadata"]["name"] for s in by_kind(render_release(helm, release), "Service")}
    assert forward["resourceName"] in services
    assert forward["resourceName"].endswith("-router")


def test_dev_profile_syncs_python_sources_into_the_dev_path(
    config: dict[str, Any], helm: Path
) -> None:
    dev = profile(config, "dev")
    patched = apply_patches(config, dev["patches"])
    sync = patched["build"]["artifacts"][0]["sync"]
    (rule,) = sync["manual"]
    assert rule["src"].endswith("*.py")
    sources = [p.relative_to(REPO_ROOT).as_posix() for p in REPO_ROOT.glob("services/**/*.py")]
    synced = [s for s in sources if fnmatch.fnmatch(s, rule["src"])]
    assert "services/modelport/cli/__init__.py" in synced
    # services/modelport/x.py lands at /opt/modelport-dev/modelport/x.py (first on PYTHONPATH).
    assert rule["strip"] == "services/" and rule["dest"] == "/opt/modelport-dev"
    assert sync["hooks"]["after"][0]["container"]["command"][-1] == "kill -TERM 1"
    (release,) = patched["deploy"]["helm"]["releases"]
    objects = render_release(helm, release)
    for deployment in by_kind(objects, "Deployment"):
        env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        assert {"name": "PYTHONPATH", "value": rule["dest"]} in env


def test_gpu_profile_builds_cuda_and_deploys_a_gpu_model(
    config: dict[str, Any], helm: Path
) -> None:
    patched = apply_patches(config, profile(config, "gpu")["patches"])
    assert patched["build"]["artifacts"][0]["docker"]["buildArgs"]["VARIANT"] == "cuda"
    (release,) = patched["deploy"]["helm"]["releases"]
    objects = render_release(helm, release)
    gpu_models = [
        d
        for d in by_kind(objects, "Deployment")
        if d["spec"]["template"]["spec"]["containers"][0]
        .get("resources", {})
        .get("limits", {})
        .get("nvidia.com/gpu")
    ]
    assert len(gpu_models) == 1
    # The CUDA build is the image skaffold built: no suffix added to its tag.
    image = gpu_models[0]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "registry.local/modelport:abc1234"


def test_vllm_profile_builds_the_vllm_target_and_runs_its_model_on_it(
    config: dict[str, Any], helm: Path
) -> None:
    patched = apply_patches(config, profile(config, "vllm")["patches"])
    default, vllm = patched["build"]["artifacts"]
    assert default["image"] == "modelport" and "target" not in default["docker"]
    assert vllm["image"] == "modelport-vllm" and vllm["docker"]["target"] == "runtime-vllm"
    assert "runtime-vllm" in dockerfile_stages()
    (release,) = patched["deploy"]["helm"]["releases"]
    images = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]["image"]
        for d in by_kind(render_release(helm, release), "Deployment")
    }
    assert images.pop("modelport-model-tiny-llama") == "registry.local/modelport-vllm:abc1234"
    assert set(images.values()) == {"registry.local/modelport:abc1234"}


def dockerfile_stages() -> dict[str, str]:
    """Each stage's name → its instructions (comments left out), FROM line first."""
    lines = (REPO_ROOT / "Dockerfile").read_text().splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    stages = {}
    for part in re.split(r"^(?=FROM\s)", text, flags=re.MULTILINE)[1:]:
        name = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", part)
        assert name is not None, part.splitlines()[0]
        stages[name.group(1)] = part
    return stages


def test_dockerfile_builds_both_variants_without_compilers_in_the_final_stage() -> None:
    text = (REPO_ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)\s+AS\s+(\S+)", text, flags=re.MULTILINE)
    names = [name for _, name in stages]
    # The last stage is what a build without --target makes: the lean runtime, no vLLM.
    assert stages[-1] == ("runtime-base", "runtime") and "build" in names
    assert {"base-cpu", "base-cuda"} <= set(names)
    assert "FROM base-${VARIANT} AS base" in text
    final = dockerfile_stages()["runtime-base"]
    assert re.search(r"^USER\s+10001", final, flags=re.MULTILINE)
    assert 'ENTRYPOINT ["modelport"]' in final
    for forbidden in ("build-essential", "gcc", "HEALTHCHECK", "apt-get install"):
        assert forbidden not in final, forbidden
    assert "COPY --from=build /opt/venv /opt/venv" in final
    # The router's Go fast path: compiled in its own stage from Debian's Go packages.
    assert "fastpath" in names and "golang-google-grpc-dev" in text.split("AS fastpath", 1)[1]
    assert "COPY --from=fastpath /out/modelport-fastpath /usr/local/bin/" in final
    # The chart runs every pod as this uid with runAsNonRoot.
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == 10001


def test_dockerignore_keeps_the_build_context_small() -> None:
    lines = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    assert lines[lines.index("*") + 1 :]  # everything ignored, then re-included
    for needed in ("!pyproject.toml", "!constraints.txt", "!services/"):
        assert needed in lines
    tracked = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "ls-files", "pyproject.toml", "README.md"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert tracked == ["README.md", "pyproject.toml"]  # what the Dockerfile COPYs exists


def test_the_vllm_target_installs_make_vllms_pins_in_its_own_venv() -> None:
    stages = dockerfile_stages()
    build = stages["build-vllm"]
    make = (REPO_ROOT / "Makefile").read_text()
    (pins,) = re.findall(r"^VLLM_REQ \?= (.+)$", make, flags=re.MULTILINE)
    assert f'ARG VLLM_REQ="{pins}"' in build
    (dropped,) = re.findall(r"pip uninstall -q -y (.+)$", make, flags=re.MULTILINE)
    assert f"/opt/vllm/bin/pip uninstall -y {dropped}" in build
    image = stages["runtime-vllm"]
    assert image.startswith("FROM runtime-base AS runtime-vllm")
    assert "COPY --from=build-vllm /opt/vllm /opt/vllm" in image
    assert re.search(r"MODELPORT_VLLM_PYTHON=/opt/vllm/bin/python\b", image)
    for forbidden in ("build-essential", "gcc", "apt-get install", "pip install"):
        assert forbidden not in image, forbidden
    # The default target carries no vLLM.
    assert "vllm" not in stages["runtime"].lower() and "vllm" not in stages["runtime-base"]
