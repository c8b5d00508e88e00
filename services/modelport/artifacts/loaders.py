"""Safe model loaders: graph formats only, never Python's pickle on untrusted bytes.

torch.export programs (`.pt2`) hold a graph and raw weights; TorchScript
archives (`.pt`) are read by torch.jit's own restricted unpickler. A pickled
`nn.Module` saved with `torch.save` is recognised and refused before torch
sees it. The inference service loads with these, and the registry checks
uploads with the same functions. torch is imported when a loader runs, so
importing this module stays cheap (the SDK and the router never load torch).
"""

from __future__ import annotations

import threading
import zipfile
from pathlib import Path
from typing import Any

from modelport.errors import InvalidInput

# torch.export.load sets a process-wide deserializer while it runs: two loads in
# parallel threads (a pool replica loading two models) fail with
# "_CURRENT_DESERIALIZER is already set". Loads take turns; inference does not.
_EXPORT_LOAD = threading.Lock()


def load_exported_program(path: Path, name: str) -> Any:
    """torch.export.load: a graph and raw weights, no pickled Python objects."""
    import torch

    if not zipfile.is_zipfile(path):
        raise InvalidInput(f"model '{name}': {path.name} is not a torch.export archive")
    try:
        with _EXPORT_LOAD:
            return torch.export.load(str(path))
    except Exception as exc:
        raise InvalidInput(f"model '{name}': cannot load {path.name}: {exc}") from None


def load_exported_module(path: Path, name: str) -> Any:
    """The exported program as a callable module."""
    return load_exported_program(path, name).module()


def is_aoti_package(path: Path) -> bool:
    """An AOTInductor package is a zip holding `<name>/data/aotinductor/`."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/data/aotinductor/" in entry for entry in archive.namelist())


def load_aoti_package(path: Path, name: str) -> Any:
    """An AOTInductor package as a callable (tensors in, a list of tensors out).

    The package holds a compiled shared library, which loading runs: callers
    load only packages they trust (an operator's own repository, or versions
    the registry's derive jobs compiled).
    """
    import torch._inductor

    if not is_aoti_package(path):
        raise InvalidInput(f"model '{name}': {path.name} is not an AOTInductor package")
    try:
        return torch._inductor.aoti_load_package(str(path))
    except Exception as exc:
        raise InvalidInput(f"model '{name}': cannot load {path.name}: {exc}") from None


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
