"""The metric line training prints and the regexes the tuner reads from it: defined together.
No torch here, so the launcher imports it on a machine without PyTorch."""

from __future__ import annotations

METRIC_DEFINITIONS = [
    {"Name": f"{split}:{kind}", "Regex": rf"{split}_{kind}=([0-9.eE+-]+)"}
    for split in ("train", "validation", "test")
    for kind in ("loss", "accuracy")
]


def metric_line(split: str, epoch: int, *, loss: float, accuracy: float, samples: int, skipped: int) -> str:
    return (
        f"epoch={epoch} {split}_loss={loss:.6f} {split}_accuracy={accuracy:.6f} "
        f"{split}_samples={samples} {split}_skipped_images={skipped}"
    )
