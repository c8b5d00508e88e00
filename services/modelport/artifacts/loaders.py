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
from typing import IO, Any

from modelport.errors import InvalidInput

# A model file on disk, or a seekable file object (a decrypting reader of an
# encrypted archive: the model then never exists as plaintext on disk).
Source = Path | IO[bytes]

# torch.export.load sets a process-wide deserializer while it runs: two loads in
# parallel threads (a pool replica loading two models) fail with
# "_CURRENT_DESERIALIZER is already set". Loads take turns; inference does not.
_EXPORT_LOAD = threading.Lock()


def _label(source: Source) -> str:
    return source.name if isinstance(source, Path) else str(getattr(source, "name", "model"))


def _rewind(source: Source) -> Source:
    if not isinstance(source, Path):
        source.seek(0)
    return source


def load_exported_program(source: Source, name: str) -> Any:
    """torch.export.load: a graph and raw weights, no pickled Python objects."""
    import torch

    label = _label(source)
    if not zipfile.is_zipfile(source):
        raise InvalidInput(f"model '{name}': {label} is not a torch.export archive")
    try:
        with _EXPORT_LOAD:
            return torch.export.load(str(source) if isinstance(source, Path) else _rewind(source))
    except Exception as exc:
        raise InvalidInput(f"model '{name}': cannot load {label}: {exc}") from None


def load_exported_module(source: Source, name: str) -> Any:
    """The exported program as a callable module."""
    return load_exported_program(source, name).module()


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


def load_torchscript(source: Source, name: str) -> Any:
    """torch.jit.load reads TorchScript code and tensors with its own restricted
    unpickler; a plain `torch.save(model)` pickle fails here and is refused."""
    import torch

    label = _label(source)
    if not zipfile.is_zipfile(source):
        raise InvalidInput(f"model '{name}': {label} is not a TorchScript archive")
    with zipfile.ZipFile(_rewind(source)) as archive:
        if not any(entry.endswith("/code/") or "/code/" in entry for entry in archive.namelist()):
            raise InvalidInput(
                f"model '{name}': {label} is a pickled module, not TorchScript; "
                "export it with torch.jit.script/trace or torch.export (pickles are refused)"
            )
    try:
        target = str(source) if isinstance(source, Path) else _rewind(source)
        module = torch.jit.load(target, map_location="cpu")
    except Exception as exc:
        raise InvalidInput(f"model '{name}': cannot load {label}: {exc}") from None
    module.eval()
    return module
