"""Training entry point of the hyperparameter tuning jobs.

Trains on `train/`, evaluates on `valid/` after every epoch and prints the metric line the
tuner's regexes read (tuning_metrics.METRIC_DEFINITIONS). It never reads the test split."""

from __future__ import annotations

import argparse
from pathlib import Path

import dogimages
import loops
import torch
from classifier import build_resnet18
from torch import nn


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="ResNet-18 dog-breed tuning trial", add_help=True)
    loops.add_training_args(parser)
    return parser


def main(args: argparse.Namespace) -> loops.Metrics:
    torch.manual_seed(args.seed)
    runtime = loops.init_runtime()
    root = Path(args.data_dir)
    train_set = dogimages.image_folder(root, "train", train=True, image_size=args.image_size)
    valid_set = dogimages.image_folder(root, "valid", train=False, image_size=args.image_size)
    train_loader = dogimages.loader(
        train_set, batch_size=args.batch_size, train=True, workers=args.workers, distributed=False
    )
    valid_loader = dogimages.loader(
        valid_set, batch_size=args.batch_size, train=False, workers=args.workers, distributed=False
    )

    model = build_resnet18(
        len(train_set.classes), pretrained=loops.pretrained_arg(args.pretrained), fine_tune=args.fine_tune
    ).to(runtime.device)
    criterion = nn.CrossEntropyLoss()
    optimizer = loops.build_optimizer(args.optimizer, model.parameters(), args.lr, args.weight_decay)
    amp = runtime.device.type == "cuda"
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=amp)

    validation = loops.Metrics(float("nan"), 0.0, 0)
    for epoch in range(1, args.epochs + 1):
        train_metrics = loops.train_one_epoch(model, train_loader, criterion, optimizer, scaler, runtime, amp=amp)
        loops.log_metrics("train", epoch, train_metrics)
        validation = loops.evaluate(model, valid_loader, criterion, runtime)
        loops.log_metrics("validation", epoch, validation)
    return validation


if __name__ == "__main__":
    main(get_args_parser().parse_args())
