"""`modelport finetune create|list|show|events|cancel`: fine-tuning jobs."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from modelport.cli.options import option
from modelport.cli.output import print_json, table, to_dict

PARAMS = {
    "epochs": int,
    "batch_size": int,
    "learning_rate": float,
    "warmup_steps": int,
    "weight_decay": float,
    "max_seq_len": int,
    "lora_rank": int,
    "lora_alpha": float,
    "eval_every": int,
    "checkpoint_every": int,
    "max_steps": int,
}


def common(func: Callable[..., Any]) -> Callable[..., Any]:
    @option("--training", default="localhost:8004", help="Training service gRPC address.")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from modelport.client.channel import ModelportClientError

        try:
            return func(*args, **kwargs)
        except ModelportClientError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


@click.group()
def finetune() -> None:
    """Fine-tune a registered model on a registered dataset; the result is a new version."""


def _summary(job: Any) -> str:
    from modelport.client.training import status_name

    text = f"{job.id}  {status_name(job.status)}  {job.model}  on {job.dataset}"
    if job.progress.total_steps:
        text += f"  step {job.progress.step}/{job.progress.total_steps}"
    if job.result_version:
        text += f"  → {job.result_version}"
    if job.derived_version:
        text += f"  → {job.derived_version} ({job.then_derive})"
    if job.error.code:
        text += f"\n  error {job.error.code}: {job.error.message}"
    return text


def _follow(client: Any, job_id: str, plot_path: Path | None, as_json: bool) -> Any:
    from modelport.cli.finetune_display import Follower, plot

    with Follower(show_bar=not as_json, quiet=as_json) as follower:
        for event in client.events(job_id, follow=True):
            follower.update(event)
            if as_json:
                print_json(to_dict(event))
    job = client.get(job_id)
    if plot_path is not None:
        plot(follower.curve, plot_path, f"{job.id} ({job.model})")
        click.echo(f"loss curve written to {plot_path}", err=True)
    return job


@finetune.command("create")
@click.option("--model", required=True, help="Base model: NAME@ALIAS, NAME:VERSION or NAME.")
@click.option("--dataset", required=True, help="Dataset: NAME or NAME:SHA256-PREFIX.")
@click.option("--method", type=click.Choice(["auto", "full", "lora"]), default="auto")
@click.option(
    "--alias", "aliases", multiple=True, help="Point this alias at the result (repeatable)."
)
@click.option("--suffix", default="", help="Recorded on the resulting version.")
@click.option("--seed", type=int, default=0, help="0: chosen by the service.")
@click.option("--workers", type=int, default=1, help="Data-parallel processes (torch.distributed).")
@click.option(
    "--gpus-per-worker", type=int, default=0, help="Kubernetes executor: GPUs per worker."
)
@click.option(
    "--then-derive",
    default="",
    help="After registration, derive this from the result in the registry: int8-weight-only, "
    "int4-weight-only, int8-dynamic, fp8, fp16 or bf16.",
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help=f"Hyperparameter ({', '.join(PARAMS)}).",
)
@click.option("--follow", is_flag=True, help="Show progress until the job ends.")
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --follow: loss curve PNG.",
)
@common
def create(
    model: str,
    dataset: str,
    method: str,
    aliases: tuple[str, ...],
    suffix: str,
    seed: int,
    workers: int,
    gpus_per_worker: int,
    then_derive: str,
    settings: tuple[str, ...],
    follow: bool,
    plot_path: Path | None,
    training: str,
    as_json: bool,
) -> None:
    """Start a job; unset hyperparameters are chosen automatically."""
    from modelport.client.training import TrainingClient
    from modelport.proto.modelport.training.v1.training_pb2 import SUCCEEDED

    params: dict[str, Any] = {}
    for item in settings:
        key, _, value = item.partition("=")
        if key not in PARAMS or not value:
            raise click.BadParameter(
                f"'{item}': use KEY=VALUE with KEY one of {list(PARAMS)}", param_hint="--set"
            )
        try:
            params[key] = PARAMS[key](value)
        except ValueError:
            raise click.BadParameter(
                f"'{item}': {key} takes a {PARAMS[key].__name__}", param_hint="--set"
            ) from None
    with TrainingClient(training) as client:
        job = client.create(
            model,
            dataset,
            method=method,
            hyperparameters=params,
            suffix=suffix,
            seed=seed,
            aliases=aliases,
            workers=workers,
            then_derive=then_derive,
            gpus_per_worker=gpus_per_worker,
        )
        click.echo(f"created {job.id}", err=True)
        if follow:
            job = _follow(client, job.id, plot_path, as_json)
            click.echo(_summary(job))
            if job.error.code or job.status != SUCCEEDED:
                raise SystemExit(1)
        elif as_json:
            print_json(to_dict(job))
        else:
            click.echo(_summary(job))


@finetune.command("list")
@click.option("--limit", type=int, default=20)
@common
def list_jobs(limit: int, training: str, as_json: bool) -> None:
    """Jobs, newest first."""
    from modelport.client.training import TrainingClient, status_name

    with TrainingClient(training) as client:
        jobs = client.list(limit)
    if as_json:
        print_json([to_dict(j) for j in jobs])
        return
    rows = [
        [
            j.id,
            status_name(j.status),
            j.model,
            j.dataset,
            f"{j.progress.step}/{j.progress.total_steps}",
            f"{j.metrics.get('validation_loss', float('nan')):.4f}",
            j.result_version,
        ]
        for j in jobs
    ]
    table(
        "fine-tuning jobs", ["id", "status", "model", "dataset", "step", "val loss", "result"], rows
    )


@finetune.command("show")
@click.argument("job_id")
@common
def show(job_id: str, training: str, as_json: bool) -> None:
    """One job: status, resolved hyperparameters, metrics, checkpoints, result."""
    from modelport.client.training import TrainingClient

    with TrainingClient(training) as client:
        job = client.get(job_id)
    if as_json:
        print_json(to_dict(job))
        return
    click.echo(_summary(job))
    data = to_dict(job)
    for key in (
        "base_version",
        "method",
        "hyperparameters",
        "metrics",
        "dataset_counts",
        "checkpoints",
        "restarts",
        "requested_by",
        "derive_job",
    ):
        if key in data:
            click.echo(f"  {key}: {data[key]}")


@finetune.command("events")
@click.argument("job_id")
@click.option("--follow", is_flag=True, help="Keep showing events until the job ends.")
@click.option(
    "--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), help="Loss curve PNG."
)
@common
def events(job_id: str, follow: bool, plot_path: Path | None, training: str, as_json: bool) -> None:
    """The job's events: status changes, progress, evaluations, checkpoints."""
    from modelport.cli.finetune_display import Follower, describe, plot
    from modelport.client.training import TrainingClient

    with TrainingClient(training) as client:
        if follow:
            job = _follow(client, job_id, plot_path, as_json)
            click.echo(_summary(job))
            return
        follower = Follower(show_bar=False, quiet=True)
        for event in client.events(job_id):
            follower.update(event)
            print_json(to_dict(event)) if as_json else click.echo(describe(event))
        if plot_path is not None:
            plot(follower.curve, plot_path, job_id)
            click.echo(f"loss curve written to {plot_path}", err=True)


@finetune.command("cancel")
@click.argument("job_id")
@common
def cancel(job_id: str, training: str, as_json: bool) -> None:
    """Stop the job's workers; nothing is registered."""
    from modelport.client.training import TrainingClient

    with TrainingClient(training) as client:
        job = client.cancel(job_id)
    print_json(to_dict(job)) if as_json else click.echo(_summary(job))
