"""The model repository on disk, in Triton's layout.

    <repo>/<model>/config.pbtxt
    <repo>/<model>/<version>/model.pt2   (torch.export)  or  model.pt (TorchScript)

A model folder holds numbered version folders; the config's version policy
picks which of them are served.
"""

from __future__ import annotations

from pathlib import Path

from modelport.errors import InvalidInput, NotFound
from modelport.proto.inference import model_config_pb2 as mc


def model_names(repository: Path) -> list[str]:
    if not repository.is_dir():
        return []
    return sorted(p.name for p in repository.iterdir() if p.is_dir() and not p.name.startswith("."))


def model_dir(repository: Path, name: str) -> Path:
    path = repository / name
    if "/" in name or name in ("", ".", "..") or not path.is_dir():
        raise NotFound(f"model '{name}' is not in the model repository")
    return path


def available_versions(path: Path) -> list[int]:
    return sorted(int(p.name) for p in path.iterdir() if p.is_dir() and p.name.isdigit())


def select_versions(name: str, available: list[int], policy: mc.ModelVersionPolicy) -> list[int]:
    """Apply a version policy: latest N (default 1), all, or specific."""
    if not available:
        raise InvalidInput(f"model '{name}': no numbered version folder")
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return available
    if choice == "specific":
        wanted = sorted(set(policy.specific.versions))
        missing = [v for v in wanted if v not in available]
        if missing:
            raise InvalidInput(f"model '{name}': version policy names missing versions {missing}")
        return wanted
    count = policy.latest.num_versions if choice == "latest" and policy.latest.num_versions else 1
    return available[-count:]
