"""The training loop every task shares: data-parallel, checkpointed, resumable.

Each optimizer step takes the next `batch_size` examples of a seeded
per-epoch permutation; with N workers (torch.distributed, gloo on CPU, nccl
on GPU, the model wrapped in DistributedDataParallel) rank r takes every
N-th of them. Each rank's loss is its *sum* scaled by N over the global
batch's token (or example) count; DDP averages gradients across ranks, so
the update equals one process's on the whole batch, whatever the split.

Every `checkpoint_every` steps rank 0 writes the trained parameters,
optimizer and schedule (tensors only, loaded with `weights_only=True`) to
`checkpoints/step-N.pt` atomically; a restarted worker group resumes from
the newest one at exactly the step and data position it reached.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from modelport.training.jobs import Hyperparameters
from modelport.training.task import TrainingTask, cpu, set_training
from modelport.training.worker_events import EventSink

KEEP_CHECKPOINTS = 2


class Stopped(Exception):
    """The service asked the workers to stop (the job was cancelled)."""


@dataclass
class Topology:
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def distributed(self) -> bool:
        return self.world > 1


def latest_checkpoint(folder: Path) -> Path | None:
    found = sorted(folder.glob("step-*.pt"), key=lambda p: int(p.stem.split("-")[1]))
    return found[-1] if found else None


def _save_checkpoint(folder: Path, step: int, state: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".step-{step}.pt.partial"
    torch.save(state, partial)
    with partial.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(partial, folder / f"step-{step}.pt")
    for old in sorted(folder.glob("step-*.pt"), key=lambda p: int(p.stem.split("-")[1]))[
        :-KEEP_CHECKPOINTS
    ]:
        old.unlink(missing_ok=True)


def _schedule(params: Hyperparameters, total: int) -> Any:
    warmup = params.warmup_steps or 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def _all_sum(values: list[float], topo: Topology) -> list[float]:
    if not topo.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=topo.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def evaluate(task: TrainingTask, params: Hyperparameters, topo: Topology) -> float:
    """Mean validation loss over every validation token (or example), summed across ranks."""
    assert params.batch_size
    mine = list(range(task.size("validation")))[topo.rank :: topo.world]
    total, count = 0.0, 0
    set_training(task.model, False)
    with torch.no_grad():
        for start in range(0, len(mine), params.batch_size):
            chunk = mine[start : start + params.batch_size]
            total += float(task.loss_sum(task.model, "validation", chunk))
            count += task.count("validation", chunk)
    set_training(task.model, True)
    total, count_f = _all_sum([total, float(count)], topo)
    return total / max(count_f, 1.0)


def train(
    task: TrainingTask,
    params: Hyperparameters,
    *,
    seed: int,
    work_dir: Path,
    events: EventSink,
    topo: Topology,
) -> dict[str, float]:
    """Train to the last step (resuming from a checkpoint if one exists); returns final metrics."""
    assert params.batch_size and params.learning_rate is not None
    torch.manual_seed(seed)
    n_train = task.size("train")
    batch = params.batch_size
    steps_per_epoch = max(1, n_train // batch)
    total = params.max_steps or steps_per_epoch * (params.epochs or 1)
    trained = [p for p in task.model.parameters() if p.requires_grad]
    if topo.distributed:
        from torch.nn.parallel import DistributedDataParallel

        model: torch.nn.Module = DistributedDataParallel(
            task.model, device_ids=[topo.device.index] if topo.device.type == "cuda" else None
        )
    else:
        model = task.model
    optimizer = torch.optim.AdamW(
        trained, lr=params.learning_rate, weight_decay=params.weight_decay or 0.0
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(params, total))
    checkpoints = work_dir / "checkpoints"
    step, tokens = 0, 0
    resumed = latest_checkpoint(checkpoints)
    if resumed is not None:
        state = torch.load(resumed, map_location=topo.device, weights_only=True)
        task.load_trainable_state(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, tokens = int(state["step"]), int(state["tokens"])
        events.emit("resumed", step=step, total_steps=total, message=f"resumed from step {step}")
    else:
        baseline = evaluate(task, params, topo)
        events.emit(
            "eval", step=0, total_steps=total, epoch=0, metrics={"validation_loss": baseline}
        )
    started, start_step = time.monotonic(), step
    last_report = 0.0
    metrics: dict[str, float] = {}
    while step < total:
        epoch, offset = divmod(step, steps_per_epoch)
        order = torch.randperm(
            n_train, generator=torch.Generator().manual_seed(seed + epoch)
        ).tolist()
        batch_ids = order[offset * batch : (offset + 1) * batch]
        global_count = task.count("train", batch_ids)
        mine = batch_ids[topo.rank :: topo.world]
        loss_sum = task.loss_sum(model, "train", mine)
        (loss_sum * topo.world / max(global_count, 1)).backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        tokens += global_count
        (summed,) = _all_sum([float(loss_sum.detach())], topo)
        metrics["train_loss"] = summed / max(global_count, 1)
        metrics["learning_rate"] = float(scheduler.get_last_lr()[0])
        elapsed = time.monotonic() - started
        eta = elapsed / (step - start_step) * (total - step)
        now = time.monotonic()
        keep = True
        if step == total or now - last_report >= 0.2 or step % max(1, total // 50) == 0:
            last_report = now
            keep = events.emit(
                "progress",
                step=step,
                total_steps=total,
                epoch=epoch + 1,
                eta_seconds=eta,
                metrics=dict(metrics),
                trained_tokens=tokens,
            )
        if params.eval_every and (step % params.eval_every == 0 or step == total):
            metrics["validation_loss"] = evaluate(task, params, topo)
            keep = (
                events.emit(
                    "eval",
                    step=step,
                    total_steps=total,
                    epoch=epoch + 1,
                    eta_seconds=eta,
                    metrics={"validation_loss": metrics["validation_loss"]},
                )
                and keep
            )
        if params.checkpoint_every and step % params.checkpoint_every == 0 and step < total:
            if topo.rank == 0:
                state = {
                    "model": cpu(task.trainable_state()),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "step": step,
                    "tokens": tokens,
                }
                _save_checkpoint(checkpoints, step, state)
                keep = events.emit("checkpoint", step=step, metrics=dict(metrics)) and keep
            if topo.distributed:
                dist.barrier()
        if not keep:
            raise Stopped(f"stopped at step {step}: the job was cancelled")
    if "validation_loss" not in metrics:
        metrics["validation_loss"] = evaluate(task, params, topo)
    metrics["trained_tokens"] = float(tokens)
    metrics["steps"] = float(step)
    return {k: v for k, v in metrics.items() if math.isfinite(v)}
