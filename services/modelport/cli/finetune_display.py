"""How `modelport finetune events --follow` shows a job: a live bar, losses, and a PNG curve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click


def describe(event: Any) -> str:
    from modelport.client.training import status_name
    from modelport.proto.modelport.training.v1 import training_pb2 as pb

    kind = str(pb.JobEvent.Kind.Name(event.kind)).lower()
    parts = [f"[{event.seq}] {kind}"]
    if event.kind == pb.JobEvent.STATUS:
        parts.append(status_name(event.status))
    if event.HasField("progress") and event.kind != pb.JobEvent.STATUS:
        parts.append(f"step {event.progress.step}/{event.progress.total_steps}")
    parts += [f"{k}={v:.4f}" for k, v in sorted(event.metrics.items())]
    if event.message:
        parts.append(event.message)
    if event.result_version:
        parts.append(f"→ {event.result_version}")
    return "  ".join(parts)


class Follower:
    """Prints status/eval/checkpoint lines above a rich progress bar fed by progress events."""

    def __init__(self, show_bar: bool = True, quiet: bool = False) -> None:
        self.show_bar = show_bar and not quiet
        self.quiet = quiet
        self.curve: dict[str, list[tuple[int, float]]] = {"train_loss": [], "validation_loss": []}
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> Follower:
        if self.show_bar:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("[bold]training"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} steps"),
                TextColumn("{task.fields[loss]}"),
                TimeRemainingColumn(),
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, event: Any) -> None:
        from modelport.proto.modelport.training.v1 import training_pb2 as pb

        step = event.progress.step
        for name in self.curve:
            if name in event.metrics and (
                event.kind != pb.JobEvent.PROGRESS or name == "train_loss"
            ):
                self.curve[name].append((step, event.metrics[name]))
        if event.kind == pb.JobEvent.PROGRESS and self._progress is not None:
            loss = f"loss {event.metrics.get('train_loss', 0.0):.4f}"
            if self._task is None:
                self._task = self._progress.add_task(
                    "train", total=event.progress.total_steps, loss=loss
                )
            self._progress.update(self._task, completed=step, loss=loss)
            return
        if event.kind == pb.JobEvent.PROGRESS or self.quiet:
            return
        line = describe(event)
        if self._progress is not None:
            self._progress.console.print(line)
        else:
            click.echo(line)


def plot(curve: dict[str, list[tuple[int, float]]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    for name, points in curve.items():
        if points:
            axes.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                label=name,
                marker="." if name != "train_loss" else None,
            )
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title(title)
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
