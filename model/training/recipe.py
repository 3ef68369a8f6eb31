"""One recipe for tuning and final training: the arguments that decide what a training run learns.

hpo.py (a tuning trial) and train.py (the final training) parse the same arguments and train with
the same function (train.main), so the tuner searches the training that ships. The launcher
(model/tools/launch.py) sends a tuning job the recipe's fixed values as static hyperparameters and
SEARCHED as ranges; `train --from-tuning-job` sends the tuning job's static hyperparameters and its
best trial's searched values, unchanged. This module imports no torch: the launcher reads it too.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

# What the tuner searches (as the course's search did): name -> ("continuous", low, high) on a log
# scale, or ("categorical", values).
SEARCHED: dict[str, tuple[Any, ...]] = {
    "lr": ("continuous", 1e-4, 1e-2),
    "batch-size": ("categorical", [16, 32, 64]),
    "epochs": ("categorical", [5, 10, 20]),
    "optimizer": ("categorical", ["adam", "sgd"]),
}


def add_recipe_args(parser: argparse.ArgumentParser) -> None:
    """Hyperparameters arrive as `--name value` (both SageMaker launchers pass them so)."""
    parser.add_argument("--data-dir", default=os.environ.get("SM_CHANNEL_TRAINING", "data/dogImages"))
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    recipe = parser.add_argument_group(
        "recipe", "what the run learns: the same for a tuning trial and the final training"
    )
    recipe.add_argument("--lr", "--learning-rate", type=float, default=1e-3)
    recipe.add_argument("--batch-size", "--batch_size", type=int, default=32)
    recipe.add_argument("--epochs", type=int, default=10)
    recipe.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    recipe.add_argument("--weight-decay", "--weight_decay", type=float, default=1e-4)
    recipe.add_argument(
        "--fine-tune", "--fine_tune", choices=("head", "layer4", "all"), default="layer4", help="the layers trained"
    )
    recipe.add_argument(
        "--pretrained",
        default="imagenet",
        help="'imagenet' (torchvision weights API), 'none', or the path of a local ResNet-18 state dict",
    )
    recipe.add_argument("--label-smoothing", type=float, default=0.1, help="of the cross-entropy loss")
    recipe.add_argument(
        "--schedule", choices=("cosine", "constant"), default="cosine", help="the learning rate over the epochs"
    )
    recipe.add_argument(
        "--augment",
        choices=("imagenet", "none"),
        default="imagenet",
        help="training images: random resized crop, flip and colour jitter, or the evaluation crop",
    )
    recipe.add_argument("--image-size", "--image_size", type=int, default=224, help="crop size (256/224 resize ratio)")
    recipe.add_argument("--seed", type=int, default=0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    add_recipe_args(parser)
    return parser


def names() -> list[str]:
    """The recipe's arguments as hyperparameter names (`fine-tune`), in the parser's order."""
    (group,) = [g for g in _parser()._action_groups if g.title == "recipe"]
    return [action.option_strings[0].removeprefix("--") for action in group._group_actions]


def fixed_hyperparameters(overrides: dict[str, Any] | None = None) -> dict[str, str]:
    """The recipe's values that the tuner does not search, as a job's hyperparameters: the defaults,
    with `overrides`, which must name recipe arguments that are not searched."""
    fixed = [name for name in names() if name not in SEARCHED]
    wrong = set(overrides or {}) - set(fixed)
    if wrong:
        raise ValueError(f"not fixed recipe arguments: {', '.join(sorted(wrong))} (they are: {', '.join(fixed)})")
    defaults = vars(_parser().parse_args([]))
    values = {name: defaults[name.replace("-", "_")] for name in fixed}
    return {name: str(value) for name, value in {**values, **(overrides or {})}.items()}


def of(args: argparse.Namespace) -> dict[str, Any]:
    """What a run learns: the recipe's values in `args`. A checkpoint records it, and train.py
    resumes only a checkpoint of the same recipe."""
    return {name: getattr(args, name.replace("-", "_")) for name in names()}
