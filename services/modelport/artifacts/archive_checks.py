"""Checking an uploaded model archive and rewriting it into its stored form (`archive`).

Accepted: a tar (optionally gzip) of a Triton model directory — `config.pbtxt`
plus one `<version>/model.pt2|model.pt` — or of a flat directory with
`config.pbtxt` and the model file; either may sit inside one top folder.
Members are read one by one into a fresh folder (never `extractall`): any
path that leaves the folder, any link or device, a missing or unparsable
config and a model file that torch cannot load (graph / TorchScript loaders
only, never unpickling) reject the whole archive.
"""

from __future__ import annotations

import shutil
import tarfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from google.protobuf import text_format

from modelport.artifacts import datatypes, generative, loaders
from modelport.artifacts.archive import CONFIG, MODEL_FILES, VERSION_DIR, add_bytes, member_path
from modelport.artifacts.config import PLATFORM_AOTI, complete_from_program, parse_config_text
from modelport.artifacts.hashing import sha256_of
from modelport.errors import InvalidInput
from modelport.proto.inference import model_config_pb2


@dataclass(frozen=True)
class SignatureTensor:
    """One tensor of a stored version's signature (the registry's metadata)."""

    name: str
    datatype: str
    dims: tuple[int, ...]


@dataclass(frozen=True)
class Signature:
    inputs: tuple[SignatureTensor, ...] = ()
    outputs: tuple[SignatureTensor, ...] = ()
    max_batch_size: int = 0
    platform: str = ""

    def to_json(self) -> dict[str, Any]:
        def specs(items: tuple[SignatureTensor, ...]) -> list[dict[str, Any]]:
            return [{"name": t.name, "datatype": t.datatype, "dims": list(t.dims)} for t in items]

        return {
            "inputs": specs(self.inputs),
            "outputs": specs(self.outputs),
            "max_batch_size": self.max_batch_size,
            "platform": self.platform,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Signature:
        def specs(items: list[dict[str, Any]]) -> tuple[SignatureTensor, ...]:
            return tuple(SignatureTensor(t["name"], t["datatype"], tuple(t["dims"])) for t in items)

        return cls(
            inputs=specs(data.get("inputs", [])),
            outputs=specs(data.get("outputs", [])),
            max_batch_size=int(data.get("max_batch_size", 0)),
            platform=str(data.get("platform", "")),
        )


@dataclass(frozen=True)
class PreparedArchive:
    """A checked archive rewritten to its stored form at `path` (a temp file)."""

    path: Path
    sha256: str
    size_bytes: int
    signature: Signature
    model_file: str
    files: tuple[str, ...] = field(default=())


def _extract(archive: Path, dest: Path, max_bytes: int) -> list[PurePosixPath]:
    """Regular files of the archive into `dest`; returns their relative paths."""
    files: list[PurePosixPath] = []
    total = 0
    try:
        tar = tarfile.open(archive, "r:*")  # noqa: SIM115 - closed by the `with` below
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InvalidInput(f"upload is not a tar or tar.gz archive ({exc})") from None
    with tar:
        try:
            for member in tar:
                rel = member_path(member)
                if member.issym() or member.islnk():
                    raise InvalidInput(
                        f"archive member '{member.name}': links are not allowed "
                        f"(points to '{member.linkname}')"
                    )
                if rel is None or member.isdir():
                    continue
                if not member.isfile():
                    raise InvalidInput(f"archive member '{member.name}': not a regular file")
                total += member.size
                if total > max_bytes:
                    raise InvalidInput(
                        f"archive unpacks to more than the limit of {max_bytes} bytes"
                    )
                target = dest.joinpath(*rel.parts)
                if not target.resolve().is_relative_to(dest.resolve()):
                    raise InvalidInput(f"archive member '{member.name}': path escapes the folder")
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None  # a regular file always has contents
                with source, target.open("xb") as out:
                    shutil.copyfileobj(source, out)
                files.append(rel)
        except FileExistsError as exc:
            raise InvalidInput(f"archive holds the same path twice ({exc.filename})") from None
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise InvalidInput(f"archive is truncated or corrupt ({exc})") from None
    return files


def _strip_top_folder(files: list[PurePosixPath]) -> PurePosixPath:
    """The folder inside the archive that holds config.pbtxt (root or one top folder)."""
    if PurePosixPath(CONFIG) in files:
        return PurePosixPath()
    tops = {f.parts[0] for f in files if len(f.parts) > 1}
    if len(tops) == 1:
        top = PurePosixPath(tops.pop())
        if top / CONFIG in files:
            return top
    raise InvalidInput(f"archive has no {CONFIG} at its root or in its one top folder")


def parse_config(text: str, model_name: str) -> Any:
    """config.pbtxt text → ModelConfig (its name forced to the registry's model name)."""
    config = parse_config_text(text, source=f"model '{model_name}': invalid {CONFIG}")
    config.name = model_name
    return config


def signature_of(config: Any) -> Signature:
    def datatype(enum_value: model_config_pb2.DataType.ValueType) -> str:
        config_name = model_config_pb2.DataType.Name(enum_value)
        known = datatypes.BY_CONFIG.get(config_name)
        return known.name if known is not None else config_name.removeprefix("TYPE_")

    def specs(items: Any) -> tuple[SignatureTensor, ...]:
        return tuple(SignatureTensor(t.name, datatype(t.data_type), tuple(t.dims)) for t in items)

    return Signature(
        inputs=specs(config.input),
        outputs=specs(config.output),
        max_batch_size=config.max_batch_size,
        platform=config.platform or config.backend,
    )


def check_model_loads(path: Path, what: str) -> Any:
    """Load with the loaders the inference service uses (graph formats only, pickles
    refused before torch sees them); reject what fails.

    Returns the torch.export program for a .pt2 (None for TorchScript).
    """
    try:
        if path.suffix == ".pt2":
            return loaders.load_exported_program(path, what)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            loaders.load_torchscript(path, what)
    except InvalidInput as exc:
        reason = str(exc).removeprefix(f"model '{what}': ")  # we name it ourselves
        first_line = (reason.strip().splitlines() or ["unknown error"])[0]
        raise InvalidInput(f"{what}: model file does not load: {first_line[:300]}") from None
    return None


def _layout(model_name: str, root: Path, files: list[PurePosixPath]) -> tuple[str, list[Path]]:
    """(version folder name or "" for flat, files of the version) after checks."""
    version_dirs = sorted({f.parts[0] for f in files if len(f.parts) > 1 and f.parts[0].isdigit()})
    if len(version_dirs) > 1:
        raise InvalidInput(
            f"model '{model_name}': archive holds versions {', '.join(version_dirs)}; "
            "push one version at a time"
        )
    if version_dirs:
        folder = root / version_dirs[0]
        return version_dirs[0], sorted(p for p in folder.rglob("*") if p.is_file())
    flat = [root / name for name in MODEL_FILES if (root / name).is_file()]
    return "", flat


def check_native_package(path: Path, what: str, allow_native: bool) -> None:
    """AOTInductor packages are native code: loading one runs it. Only uploads the
    registry itself vouches for (its derive jobs' workers) may store one, and
    they are checked for their shape, not loaded."""
    if not allow_native:
        raise InvalidInput(
            f"{what}: platform '{PLATFORM_AOTI}' packages hold compiled native code; the "
            "registry stores them only from its own derive jobs "
            "(`modelport models derive REF --compile aoti`)"
        )
    if not loaders.is_aoti_package(path):
        raise InvalidInput(f"{what}: not an AOTInductor package")


def prepare(
    archive: Path,
    model_name: str,
    work_dir: Path,
    out: Path,
    max_bytes: int,
    *,
    allow_native: bool = False,
) -> PreparedArchive:
    """Check `archive` and write its stored form to `out`. Raises InvalidInput."""
    files = _extract(archive, work_dir, max_bytes)
    top = _strip_top_folder(files)
    root = work_dir.joinpath(*top.parts)
    files = [f.relative_to(top) for f in files if f.is_relative_to(top)]
    config = parse_config((root / CONFIG).read_text(errors="replace"), model_name)
    version_dir, version_files = _layout(model_name, root, files)
    where = f"model '{model_name}'" + (f" folder '{version_dir}'" if version_dir else "")
    candidates = [config.default_model_filename] if config.default_model_filename else []
    candidates += list(MODEL_FILES)
    names = {p.relative_to(root / version_dir).as_posix(): p for p in version_files}
    if generative.is_generative(config):
        # A Hugging Face directory: checked without loading weights (safetensors only).
        generative.limits_from_config(config)
        if not version_dir:
            raise InvalidInput(f"{where}: a generative model's files go in a version folder")
        model_file = generative.verify_hf_version(root / version_dir, where)
    else:
        model_file = next((c for c in candidates if c in names), "")
        if not model_file:
            raise InvalidInput(f"{where}: no model file (expected one of {', '.join(candidates)})")
        what = f"{where} file '{model_file}'"
        if config.platform == PLATFORM_AOTI:
            check_native_package(names[model_file], what, allow_native)
            program = None
        else:
            program = check_model_loads(names[model_file], what)
        if (not config.input or not config.output) and program is not None:
            # As the inference service does: a torch.export program states its own signature.
            complete_from_program(config, program)
    if not config.input or not config.output:
        raise InvalidInput(f"model '{model_name}': {CONFIG} declares no inputs or no outputs")

    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        add_bytes(tar, CONFIG, text_format.MessageToString(config).encode())
        for rel_name in sorted(names):
            add_bytes(tar, f"{VERSION_DIR}/{rel_name}", names[rel_name].read_bytes())
    return PreparedArchive(
        path=out,
        sha256=sha256_of(out),
        size_bytes=out.stat().st_size,
        signature=signature_of(config),
        model_file=model_file,
        files=tuple(sorted(names)),
    )
