"""Checking an uploaded model archive and rewriting it into its stored form (`archive`).

Accepted: a tar (optionally gzip) of a Triton model directory — `config.pbtxt`
plus one `<version>/model.pt2|model.pt` — or of a flat directory with
`config.pbtxt` and the model file; either may sit inside one top folder. A
`.pt2` needs no `config.pbtxt`: its config is completed from the program, as
the inference service completes it. The version is then loaded and warmed up as
a replica would (`serving_check`): what is stored will serve.
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
from modelport.artifacts.serving_check import check_serves
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

    def differences(self, current: Signature) -> str:
        """How this signature's tensors (names, datatypes, dims) differ from `current`'s,
        in words; "" when callers of one can call the other."""

        def described(items: tuple[SignatureTensor, ...]) -> str:
            return ", ".join(f"{t.name} {t.datatype} {list(t.dims)}" for t in items) or "none"

        changed = [
            f"{role} {described(theirs)} (now {described(ours)})"
            for role, ours, theirs in (
                ("inputs", current.inputs, self.inputs),
                ("outputs", current.outputs, self.outputs),
            )
            if ours != theirs
        ]
        return "; ".join(changed)

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


# A compressed upload may unpack to at most this many times its own size (model
# weights barely compress; a gzip of zeros reaches ~1000x), but always to this
# floor, so small configs and test models of zeros still go through.
MAX_COMPRESSION_RATIO = 100
RATIO_FLOOR_BYTES = 64 << 20


def unpack_limit(archive: Path, max_bytes: int, max_ratio: int) -> tuple[int, str]:
    """(bytes the archive may unpack to, the flag that sets the bound)."""
    by_ratio = max(archive.stat().st_size * max_ratio, RATIO_FLOOR_BYTES) if max_ratio else 0
    if by_ratio and by_ratio < max_bytes:
        return by_ratio, f"{max_ratio}x its compressed size (--max-compression-ratio)"
    return max_bytes, f"{max_bytes} bytes (--max-upload-mb)"


def _extract(
    archive: Path, dest: Path, max_bytes: int, max_ratio: int = MAX_COMPRESSION_RATIO
) -> list[PurePosixPath]:
    """Regular files of the archive into `dest`; returns their relative paths.

    The unpacked total is checked against each member's header before its bytes
    are written, so a bomb is refused before it costs disk.
    """
    files: list[PurePosixPath] = []
    total = 0
    limit, bound = unpack_limit(archive, max_bytes, max_ratio)
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
                if total > limit:
                    raise InvalidInput(f"archive unpacks to more than the limit of {bound}")
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
    """The folder inside the archive that holds config.pbtxt (root or one top folder),
    or for a config-less `.pt2`, the model file (flat or in a version folder)."""
    for wanted in (CONFIG, "model.pt2"):
        if _holds(files, PurePosixPath(), wanted):
            return PurePosixPath()
        tops = {f.parts[0] for f in files if len(f.parts) > 1}
        if len(tops) == 1:
            top = PurePosixPath(tops.pop())
            if _holds(files, top, wanted):
                return top
    raise InvalidInput(
        f"archive has no {CONFIG} (nor a config-less model.pt2) at its root or in its one "
        "top folder"
    )


def _holds(files: list[PurePosixPath], top: PurePosixPath, name: str) -> bool:
    """`top/name`, or for the model file also `top/<version>/name`."""
    if top / name in files:
        return True
    return name != CONFIG and any(
        f.parent.parent == top and f.parent.name.isdigit() and f.name == name for f in files
    )


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

    Returns the torch.export program for a .pt2, the TorchScript module for a .pt.
    """
    try:
        if path.suffix == ".pt2":
            return loaders.load_exported_program(path, what)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return loaders.load_torchscript(path, what)
    except InvalidInput as exc:
        reason = str(exc).removeprefix(f"model '{what}': ")  # we name it ourselves
        first_line = (reason.strip().splitlines() or ["unknown error"])[0]
        raise InvalidInput(f"{what}: model file does not load: {first_line[:300]}") from None


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
    max_ratio: int = MAX_COMPRESSION_RATIO,
) -> PreparedArchive:
    """Check `archive` and write its stored form to `out`. Raises InvalidInput."""
    files = _extract(archive, work_dir, max_bytes, max_ratio)
    top = _strip_top_folder(files)
    root = work_dir.joinpath(*top.parts)
    files = [f.relative_to(top) for f in files if f.is_relative_to(top)]
    config_path = root / CONFIG
    config = (
        parse_config(config_path.read_text(errors="replace"), model_name)
        if config_path.is_file()
        else model_config_pb2.ModelConfig(name=model_name)
    )
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
            loaded = None
        else:
            loaded = check_model_loads(names[model_file], what)
        exported = model_file.endswith(".pt2") and loaded is not None
        if (not config.input or not config.output) and exported:
            # As the inference service does: a torch.export program states its own signature.
            complete_from_program(config, loaded)
        if not config.input or not config.output:
            raise InvalidInput(f"model '{model_name}': {CONFIG} declares no inputs or no outputs")
        if loaded is not None:
            check_serves(model_name, config, root, root / version_dir, loaded)
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
