"""Training entry point of the hyperparameter tuning jobs: one trial of the recipe train.py ships.

The same arguments and the same training as train.py (recipe.py), so what the tuner finds best is
what the final training runs. Trains on `train/`, evaluates on `valid/` after every epoch and prints
the metric line the tuner's regexes read (tuning_metrics.METRIC_DEFINITIONS). It never reads the
test split, keeps no checkpoints and writes no artifact but the best weights."""

from __future__ import annotations

import argparse
from typing import Any

import train


def get_args_parser() -> argparse.ArgumentParser:
    parser = train.get_args_parser()
    parser.description = "ResNet-18 dog-breed tuning trial (train.py's recipe)"
    return parser


def main(args: argparse.Namespace) -> dict[str, Any]:
    return train.main(args, tuning=True)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
