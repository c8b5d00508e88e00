"""A job's VALIDATING phase: everything checked before any compute.

The base version and the dataset are fetched from the registry into the job
folder, the model kind decides the method, the hyperparameters get their
`auto` values, and the dataset is checked against the model itself: every
example tokenized with the base model's tokenizer and held to max_seq_len
(decoders), or its arrays matched to the model's inputs and outputs (tensor
models). A job that fails here never starts a worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from modelport.artifacts import datasets as ds
from modelport.errors import FailedPrecondition, InvalidInput
from modelport.training.jobs import Hyperparameters, JobRecord, Method, ModelKind, resolve_method
from modelport.training.registration import from_client_error
from modelport.training.task import detect_kind


@dataclass
class Prepared:
    base_version: str
    kind: ModelKind
    method: Method
    params: Hyperparameters
    dataset_sha256: str
    validation_fraction: float
    counts: dict[str, int]


def fetch(registry: str, job: JobRecord, job_dir: Path) -> tuple[str, str, float]:
    """Base version into job_dir/base, dataset into job_dir/dataset: (base, sha, fraction)."""
    from modelport.client.channel import ModelportClientError
    from modelport.client.datasets import DatasetClient
    from modelport.client.registry import RegistryClient

    try:
        with RegistryClient(registry) as client:
            version = client.get_version(job.model)
            base = f"{version.model}:{version.version}"
            if not (job_dir / "base" / "config.pbtxt").is_file():
                client.pull(base, job_dir / "base")
    except ModelportClientError as exc:
        raise from_client_error(exc, f"base model '{job.model}'") from None
    try:
        with DatasetClient(registry) as client:
            dataset = client.get(job.dataset)
            path = job_dir / "dataset"
            if not path.is_file():
                client.download(f"{dataset.name}:{dataset.sha256}", path)
    except ModelportClientError as exc:
        raise from_client_error(exc, f"dataset '{job.dataset}'") from None
    return base, dataset.sha256, dataset.validation_fraction


def prepare(registry: str, job: JobRecord, job_dir: Path) -> Prepared:
    base, sha, fraction = fetch(registry, job, job_dir)
    base_dir, data = job_dir / "base", job_dir / "dataset"
    found = detect_kind(base_dir)
    if found not in ("decoder", "tensor"):
        raise FailedPrecondition(
            f"base model '{base}' is {found}: only Hugging Face causal LMs and torch.export "
            "(.pt2) versions can be fine-tuned"
        )
    kind = ModelKind(found)
    method = resolve_method(job.method, kind)
    if job.then_derive:
        from modelport.training.derivation import check_for

        check_for(job.then_derive, kind, base)
    summary = ds.summarize(data, fraction)
    text = summary.format is not ds.DatasetFormat.TENSORS
    if text != (kind is ModelKind.DECODER):
        raise InvalidInput(
            f"dataset '{job.dataset}' holds {summary.format.value} examples, which do not fit "
            f"the {kind.value} model '{base}' (decoders take JSONL, tensor models .npz)"
        )
    params = Hyperparameters.from_json(job.hyperparameters).resolve(
        kind, method, summary.train_examples, max(1, job.workers)
    )
    counts = {
        "examples": summary.examples,
        "train_examples": summary.train_examples,
        "validation_examples": len(summary.validation),
    }
    if kind is ModelKind.DECODER:
        counts.update(_token_counts(base_dir, data, params))
    else:
        from modelport.training.tensor_task import TensorTask

        task = TensorTask(base_dir, data, fraction)
        task.loss_sum(task.model, "train", [0])  # inputs and targets fit the model's outputs
    if params.batch_size and params.batch_size > summary.train_examples:
        raise InvalidInput(
            f"hyperparameter batch_size={params.batch_size} is more than the "
            f"{summary.train_examples} training examples"
        )
    return Prepared(base, kind, method, params, sha, fraction, counts)


def _token_counts(base_dir: Path, data: Path, params: Hyperparameters) -> dict[str, int]:
    from modelport.training.decoder_task import IGNORE, encode_dataset, load_tokenizer
    from modelport.training.task import version_dir

    assert params.max_seq_len
    tokenizer = load_tokenizer(version_dir(base_dir))
    encoded = encode_dataset(tokenizer, ds.read_text_examples(data), params.max_seq_len)
    return {
        "tokens": sum(len(ids) for ids, _ in encoded),
        "completion_tokens": sum(sum(1 for x in labels if x != IGNORE) for _, labels in encoded),
        "max_example_tokens": max(len(ids) for ids, _ in encoded),
    }
