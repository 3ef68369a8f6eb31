"""Training and evaluation loops of train.py, which hpo.py runs too (torchvision references' shape)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from dogimages import Batch
from torch import nn
from tuning_metrics import metric_line


@dataclass(frozen=True)
class Metrics:
    loss: float  # mean per sample
    accuracy: float  # fraction of samples
    samples: int
    skipped: int = 0


def log_metrics(split: str, epoch: int, metrics: Metrics) -> None:
    line = metric_line(
        split, epoch, loss=metrics.loss, accuracy=metrics.accuracy, samples=metrics.samples, skipped=metrics.skipped
    )
    print(line, file=sys.stdout, flush=True)


# -- distributed ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_runtime() -> Runtime:
    """Single process, or one process per GPU as torchrun / SageMaker torch_distributed start them."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if world_size > 1:
        if cuda:
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        return Runtime(device, dist.get_rank(), world_size, local_rank)
    return Runtime(device)


def _sum_across_processes(values: list[float], runtime: Runtime) -> list[float]:
    if not runtime.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=runtime.device)
    dist.all_reduce(tensor)
    return [float(v) for v in tensor.tolist()]


# -- loops ------------------------------------------------------------------------------------


@dataclass
class _Tally:
    """Per-sample sums over an epoch, for Metrics (never batch averages of averages)."""

    loss_sum: float = 0.0
    correct: int = 0
    count: int = 0
    skipped: int = 0

    def batches(self, loader: Iterable[Batch], runtime: Runtime) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, labels) on the device; unreadable images were dropped and are counted here."""
        for batch in loader:
            self.skipped += batch.skipped
            if batch.labels.numel():
                yield (
                    batch.images.to(runtime.device, non_blocking=True),
                    batch.labels.to(runtime.device, non_blocking=True),
                )

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.loss_sum += loss.item() * labels.size(0)  # .item(): never keep the graph alive
        self.correct += int((logits.argmax(dim=1) == labels).sum().item())
        self.count += labels.size(0)

    def metrics(self, runtime: Runtime) -> Metrics:
        loss_sum, correct, count, skipped = _sum_across_processes(
            [self.loss_sum, float(self.correct), float(self.count), float(self.skipped)], runtime
        )
        if count == 0:
            return Metrics(float("nan"), 0.0, 0, int(skipped))
        return Metrics(loss_sum / count, correct / count, int(count), int(skipped))


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[Batch],
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    runtime: Runtime,
    *,
    amp: bool,
    profiler: Any = None,
) -> Metrics:
    model.train()
    tally = _Tally()
    for images, labels in tally.batches(loader, runtime):
        with torch.autocast(device_type=runtime.device.type, dtype=torch.float16, enabled=amp):
            logits = model(images)
            loss = criterion(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        tally.add(loss, logits, labels)
        if profiler is not None:
            profiler.step()
    return tally.metrics(runtime)


@torch.inference_mode()
def predict(model: nn.Module, loader: Iterable[Batch], runtime: Runtime) -> tuple[torch.Tensor, torch.Tensor]:
    """The fp32 logits of every readable image of a split, and its labels (on the CPU)."""
    model.eval()
    tally = _Tally()
    logits: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    for images, targets in tally.batches(loader, runtime):
        logits.append(model(images).float().cpu())
        labels.append(targets.cpu())
    if not logits:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    return torch.cat(logits), torch.cat(labels)


@torch.inference_mode()
def evaluate(model: nn.Module, loader: Iterable[Batch], criterion: nn.Module, runtime: Runtime) -> Metrics:
    model.eval()
    tally = _Tally()
    for images, labels in tally.batches(loader, runtime):
        logits = model(images)
        tally.add(criterion(logits, labels), logits, labels)
    return tally.metrics(runtime)


def build_optimizer(
    name: str, parameters: Iterable[nn.Parameter], lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    trainable = [p for p in parameters if p.requires_grad]
    if name == "adam":
        return torch.optim.AdamW(trainable, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(trainable, lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)
    raise ValueError(f"unknown optimizer {name!r}: use adam or sgd")


# -- arguments --------------------------------------------------------------------------------


def env_default(name: str, fallback: str) -> str:
    """SageMaker's container variables (SM_CHANNEL_TRAINING, SM_MODEL_DIR, ...) with a local fallback."""
    return os.environ.get(name, fallback)


def pretrained_arg(value: str) -> str | None:
    return None if value.lower() in ("", "none") else value
