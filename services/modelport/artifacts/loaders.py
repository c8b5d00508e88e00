"""Safe model loaders: graph formats only, never Python's pickle on untrusted bytes.

torch.export programs (`.pt2`) hold a graph and raw weights; TorchScript
archives (`.pt`) are read by torch.jit's own restricted unpickler. A pickled
`nn.Module` saved with `torch.save` is recognised and refused before torch
sees it. The inference service loads with these, and the registry checks
uploads with the same functions. torch is imported when a loader runs, so
importing this module stays cheap (the SDK and the router never load torch).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from modelport.errors import InvalidInput


def load_exported_program(path: Path, name: str) -> Any:
    """torch.export.load: a graph and raw weights, no pickled Python objects."""
    import torch

    if not zipfile.is_zipfile(path):
        raise InvalidInput(f"model '{name}': {path.name} is not a torch.export archive")
    try:
        return torch.export.load(str(path))
    except Exception as exc:
        raise InvalidInput(f"model '{name}': cannot load {path.name}: {exc}") from None


def load_exported_module(path: Path, name: str) -> Any:
    """The exported program as a callable module."""
    return load_exported_program(path, name).module()


def load_torchscript(path: Path, name: str) -> Any:
    """torch.jit.load reads TorchScript code and tensors with its own restricted
    unpickler; a plain `torch.save(model)` pickle fails here and is refused."""
    import torch

    if not zipfile.is_zipfile(path):
        raise InvalidInput(f"model '{name}': {path.name} is not a TorchScript archive")
    with zipfile.ZipFile(path) as archive:
        if not any(entry.endswith("/code/") or "/code/" in entry for entry in archive.namelist()):
            raise InvalidInput(
                f"model '{name}': {path.name} is a pickled module, not TorchScript; "
                "export it with torch.jit.script/trace or torch.export (pickles are refused)"
            )
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise InvalidInput(f"model '{name}': cannot load {path.name}: {exc}") from None
    module.eval()
    return module
