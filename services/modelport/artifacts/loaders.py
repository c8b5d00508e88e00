"""Safe model loaders: graph formats only, never Python's pickle on untrusted bytes.

torch.export programs (`.pt2`) hold a graph and raw weights; TorchScript
archives (`.pt`) are read by torch.jit's own restricted unpickler. A pickled
`nn.Module` saved with `torch.save` is recognised and refused before torch
sees it. The inference service loads with these, and the registry checks
uploads with the same functions. torch is imported when a loader runs, so
importing this module stays cheap (the SDK and the router never load torch).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import zipfile
from collections.abc import Iterator
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

# torch's AOTInductor package loader (torch._C._aoti.AOTIModelPackageLoader, C++)
# unpacks the package's shared library into a fresh c10::make_tempdir() folder,
# which is under $TMPDIR (else /tmp): no parameter names the folder. To unpack into
# a chosen folder the variable is set for the load only. The environment is the
# process's, so every AOTInductor load holds this lock (they take turns): none
# unpacks into another's folder. Python's tempfile has fixed its folder before
# (see _tmpdir_set_to); a process started meanwhile by another thread would
# inherit the variable (its own tempfile falls back to /tmp once the folder goes).
_AOTI_TMPDIR = threading.Lock()


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


def load_aoti_package(path: Path, name: str, unpack_into: Path | None = None) -> Any:
    """An AOTInductor package as a callable (tensors in, a list of tensors out).

    The package holds a compiled shared library, which loading runs: callers
    load only packages they trust (an operator's own repository, or versions
    the registry's derive jobs compiled). torch unpacks it into a temporary
    folder first: under `unpack_into` when given (a private folder on a memory
    filesystem, for a package decrypted from an encrypted cache), else under
    $TMPDIR as torch chooses.
    """
    import torch._inductor

    if not is_aoti_package(path):
        raise InvalidInput(f"model '{name}': {path.name} is not an AOTInductor package")
    try:
        with _AOTI_TMPDIR, _tmpdir_set_to(unpack_into):
            return torch._inductor.aoti_load_package(str(path))
    except Exception as exc:
        raise InvalidInput(f"model '{name}': cannot load {path.name}: {exc}") from None


@contextlib.contextmanager
def _tmpdir_set_to(folder: Path | None) -> Iterator[None]:
    """TMPDIR is `folder` (when given) while the block runs; under _AOTI_TMPDIR."""
    if folder is None:
        yield
        return
    tempfile.gettempdir()  # Python's choice made (and kept) before, never this folder
    previous = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(folder)
    try:
        yield
    finally:
        if previous is None:
            del os.environ["TMPDIR"]
        else:
            os.environ["TMPDIR"] = previous


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
