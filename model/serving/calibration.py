"""What a prediction's confidence means: the temperature that calibrates the network's probabilities,
the threshold under which an answer needs a person's review, and how often validation images fall
under each threshold. train.py fits it on the validation split and writes calibration.json beside the
weights; inference.py applies it. An artifact without the file serves as before: temperature 1, no
recommended threshold.

Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017): the logits
are divided by one number T fitted to minimise the negative log-likelihood of the validation labels.
It never changes which breed ranks first (accuracy is unchanged), it has one parameter, so a few
hundred validation images fit it without overfitting, and it corrects the direction of error label
smoothing leaves (answers less confident than they are right). Histogram binning or isotonic
regression need many more images per bin than dogImages' validation split has per breed.

Standard library and torch only: this module runs in the model container (code/ of the artifact).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

CALIBRATION_FILE = "calibration.json"
TARGET_ACCURACY = 0.95  # the accepted answers' accuracy the recommended threshold keeps, on validation
GRID = tuple(i / 100 for i in range(101))  # the thresholds `under_share` is given at
TABLE_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # train.py's coverage table
ECE_BINS = 15
# A validation split with no error (or very few) pushes the fitted T toward 0, which would make every
# answer certain, a sofa's too: T stays within these bounds, at most 4x sharper or flatter than the network.
TEMPERATURE_BOUNDS = (0.25, 4.0)


@dataclass(frozen=True)
class Calibration:
    """calibration.json. `under_share[i]` is the share of validation images whose calibrated confidence
    is under GRID[i]: what validation predicts of the review queue at that threshold."""

    temperature: float = 1.0
    recommended_threshold: float | None = None
    target_accuracy: float = TARGET_ACCURACY
    under_share: tuple[float, ...] = field(default=())

    def expected_under(self, threshold: float) -> float | None:
        """The share of validation images under `threshold` (None without validation figures)."""
        if len(self.under_share) != len(GRID):
            return None
        below = max(0, min(len(GRID) - 1, math.floor(threshold * 100 + 1e-9)))
        above = min(len(GRID) - 1, below + 1)
        weight = threshold * 100 - below  # linear between the grid's points
        return round(self.under_share[below] + (self.under_share[above] - self.under_share[below]) * weight, 6)


def load(directory: Path) -> Calibration:
    """The artifact's calibration; the identity (temperature 1, no threshold) where it has none."""
    path = directory / CALIBRATION_FILE
    if not path.exists():
        return Calibration()
    doc = json.loads(path.read_text())
    temperature = float(doc["temperature"])
    if not temperature > 0:
        raise ValueError(f"{path}: the temperature must be positive, not {temperature}")
    threshold = doc.get("recommended_threshold")
    return Calibration(
        temperature=temperature,
        recommended_threshold=None if threshold is None else float(threshold),
        target_accuracy=float(doc.get("target_accuracy", TARGET_ACCURACY)),
        under_share=tuple(float(v) for v in doc.get("under_share", ())),
    )


def save(calibration: Calibration, directory: Path) -> None:
    doc = asdict(calibration)
    doc["under_share"] = list(calibration.under_share)
    (directory / CALIBRATION_FILE).write_text(json.dumps(doc, indent=1))


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, *, steps: int = 200) -> float:
    """The T > 0 that minimises the cross-entropy of softmax(logits / T) on these labels (fp32 logits
    of the validation split), within TEMPERATURE_BOUNDS. Fitted as log T, so T stays positive."""
    logits, labels = logits.detach().float().cpu().clone(), labels.detach().cpu().clone()  # not inference tensors
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    optimizer.step(closure)  # type: ignore[no-untyped-call]
    low, high = TEMPERATURE_BOUNDS
    fitted = float(log_t.exp().item())
    return round(min(high, max(low, fitted)) if math.isfinite(fitted) else 1.0, 6)


def confidences(logits: torch.Tensor, temperature: float = 1.0) -> tuple[list[float], list[int]]:
    """Each image's top-1 probability under the temperature, and its top-1 class."""
    probabilities = torch.softmax(logits.float() / temperature, dim=1)
    top = probabilities.max(dim=1)
    return top.values.tolist(), top.indices.tolist()


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool], bins: int = ECE_BINS) -> float:
    """ECE: the gap between confidence and accuracy in equal-width confidence bins, weighted by the
    share of images in each (Guo et al. 2017, eq. 3)."""
    if not confidence:
        return float("nan")
    total = 0.0
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        members = [i for i, c in enumerate(confidence) if low < c <= high or (b == 0 and c == 0)]
        if members:
            accuracy = sum(correct[i] for i in members) / len(members)
            mean = sum(confidence[i] for i in members) / len(members)
            total += len(members) / len(confidence) * abs(accuracy - mean)
    return total


@dataclass(frozen=True)
class CoverageRow:
    threshold: float
    coverage: float  # the share of images at or above the threshold (answered without review)
    accuracy: float | None  # their accuracy (None where none is above)


def coverage(confidence: Sequence[float], correct: Sequence[bool], threshold: float) -> CoverageRow:
    accepted = [ok for c, ok in zip(confidence, correct, strict=True) if c >= threshold]
    share = len(accepted) / len(confidence) if confidence else 0.0
    return CoverageRow(threshold, share, sum(accepted) / len(accepted) if accepted else None)


def coverage_table(confidence: Sequence[float], correct: Sequence[bool]) -> str:
    lines = ["threshold  coverage  accuracy"]
    for threshold in TABLE_THRESHOLDS:
        row = coverage(confidence, correct, threshold)
        accuracy = "-" if row.accuracy is None else f"{row.accuracy:.3f}"
        lines.append(f"{threshold:9.2f}  {row.coverage:8.3f}  {accuracy:>8}")
    return "\n".join(lines)


def recommend_threshold(confidence: Sequence[float], correct: Sequence[bool], target: float = TARGET_ACCURACY) -> float:
    """The lowest threshold of GRID whose accepted answers are at least `target` accurate, but never
    under the least confident validation image: below it validation has seen nothing, so it vouches for
    nothing there (a small split the model gets all right would otherwise accept every answer, a cat's
    too). Where no threshold keeps the target (a weak model), 1.0: every answer goes to review."""
    floor = math.floor(min(confidence, default=0.0) * 100) / 100
    for threshold in (t for t in GRID if t >= floor):
        row = coverage(confidence, correct, threshold)
        if row.accuracy is not None and row.accuracy >= target:
            return threshold
    return 1.0


def calibrate(logits: torch.Tensor, labels: torch.Tensor, target: float = TARGET_ACCURACY) -> Calibration:
    """Fit the temperature on validation logits and labels, then the threshold and the review shares."""
    temperature = fit_temperature(logits, labels)
    confidence, predicted = confidences(logits, temperature)
    correct = [p == label for p, label in zip(predicted, labels.tolist(), strict=True)]
    under = tuple(round(sum(c < t for c in confidence) / len(confidence), 6) for t in GRID)
    return Calibration(temperature, recommend_threshold(confidence, correct, target), target, under)
