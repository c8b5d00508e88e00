"""RepositoryModelLoad parameters: a `config` override and `file:` overrides, as Triton's.

- `config`: a ModelConfig as JSON (protobuf's JSON mapping, as Triton reads
  it). It replaces config.pbtxt for this load; what it leaves out that a model
  file cannot tell (a TorchScript model's platform, inputs and outputs) is kept
  from the repository's config.pbtxt, as Triton would complete it from the model.
- `file:<version>/<path>`: the bytes of a file of the model; with any of them
  the model loads from a fresh folder holding only those files and the
  `config` (which is then required). The folder is removed when the model is
  unloaded or replaced.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from google.protobuf import json_format, text_format

from modelport.artifacts.config import CONFIG_FILE
from modelport.errors import Internal, InvalidInput
from modelport.proto.inference import model_config_pb2 as mc

FILE_PREFIX = "file:"
CONFIG_PARAMETER = "config"
# Fields a TorchScript file cannot tell; kept from the repository when left out.
_COMPLETED_FROM_REPOSITORY = ("platform", "backend", "input", "output")


@dataclass
class Override:
    config: mc.ModelConfig | None
    folder: Path | None = None

    def remove(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder.parent, ignore_errors=True)


def parse_load_parameters(
    model: str, parameters: dict[str, object], repository_config: mc.ModelConfig | None
) -> Override | None:
    """The override a load's parameters ask for (None: load the repository as it is)."""
    unknown = sorted(
        k for k in parameters if k != CONFIG_PARAMETER and not k.startswith(FILE_PREFIX)
    )
    if unknown:
        raise InvalidInput(
            f"failed to load '{model}': unknown load parameter(s) {unknown} (Triton's are "
            "'config' and 'file:<version>/<name>')"
        )
    files = {k[len(FILE_PREFIX) :]: v for k, v in parameters.items() if k.startswith(FILE_PREFIX)}
    text = parameters.get(CONFIG_PARAMETER)
    if text is None:
        if files:
            raise InvalidInput(
                f"failed to load '{model}': file: overrides need a 'config' parameter"
            )
        return None
    config = parse_config_json(model, text)
    if repository_config is not None and not files:
        for field in _COMPLETED_FROM_REPOSITORY:
            if field in ("input", "output"):
                if not getattr(config, field):
                    getattr(config, field).extend(getattr(repository_config, field))
            elif not getattr(config, field):
                setattr(config, field, getattr(repository_config, field))
    if not files:
        return Override(config)
    return Override(config, _write_files(model, config, files))


def parse_config_json(model: str, text: object) -> mc.ModelConfig:
    if not isinstance(text, str):
        raise InvalidInput(f"failed to load '{model}': the 'config' parameter must be a string")
    config = mc.ModelConfig()
    try:
        json_format.Parse(text, config)
    except json_format.ParseError as exc:
        raise InvalidInput(f"failed to load '{model}': the 'config' parameter is not a "
                           f"ModelConfig in JSON: {exc}") from None  # fmt: skip
    return config


def _write_files(model: str, config: mc.ModelConfig, files: dict[str, object]) -> Path:
    root = Path(tempfile.mkdtemp(prefix="modelport-override-"))
    folder = root / model
    try:
        folder.mkdir()
        (folder / CONFIG_FILE).write_text(text_format.MessageToString(config))
        for relative, data in files.items():
            path = PurePosixPath(relative)
            if not relative or path.is_absolute() or ".." in path.parts:
                raise InvalidInput(
                    f"failed to load '{model}': file override '{relative}' must be a relative "
                    "path inside the model folder"
                )
            if not isinstance(data, bytes):
                raise InvalidInput(f"failed to load '{model}': file override '{relative}' "
                                   "must be bytes")  # fmt: skip
            target = folder.joinpath(*path.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    except InvalidInput:
        shutil.rmtree(root, ignore_errors=True)
        raise
    except OSError as exc:
        shutil.rmtree(root, ignore_errors=True)
        # Triton's code and words for a model folder it cannot write or read.
        raise Internal(
            f"failed to load '{model}', failed to poll from model repository: {exc.strerror}"
        ) from None
    return folder
