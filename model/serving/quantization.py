"""The classifier's int8 networks for CPUs: made once by train.py, loaded by inference.py.

train.py quantizes the trained fp32 network with PyTorch's FX graph mode for the x86 backend into
the two int8 networks of networks.py, calibrating both in one pass over the same images
(validation, then training ones, as the eval transform sees them):
- `int8` (model_int8.pt), for CPUs with AVX-512 VNNI: per-channel int8 weights, full-range 8-bit
  activations observed with a histogram, BatchNorm and ReLU fused into the convolutions, and the
  final linear layer left in fp32 (it is 0.004% of the work and the logits are where rounding shows
  most). Measured against torch's default x86 recipe (7-bit activations, int8 head) on the same
  trained models, top-1 agreement with fp32 rose from 73% to 91% (133 breeds, answers near ties)
  and from 89% to 98-99% (5 breeds); see docs/model.md.
- `int8-reduce-range` (model_int8_reduce_range.pt), for every other CPU with AVX2: the same, with
  the weights in 7 bits (reduce_range on the per-channel weight observer), so that the 16-bit sums
  of pairs of products that AVX2's and AVX-512's kernels make without VNNI cannot saturate. Of the
  recipes weighed on the benchmark's 133-breed model on an AVX2-only CPU (docs/model.md,
  "The recipe without VNNI"), it agreed best with fp32: 7-bit activations instead (as torch's default x86 recipe
  has them) flipped four times as many answers; the stem left in fp32, more calibration images or a min/max
  observer gained nothing.
Each is traced and frozen as TorchScript. Serving loads one file with torch.jit.load: nothing is
built, quantized or compiled at start-up, and a file written by a newer torch loads under the
serving container's torch 2.6 (tests/model/test_container_torch.py).

torch deprecates torch.ao.quantization and TorchScript in favour of torchao and torch.export, which
the PyTorch 2.6 container cannot serve without compiling at start-up; their deprecation warnings
are silenced here, and only here.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from networks import INT8_NETWORKS, Int8Network
from torch import nn

if TYPE_CHECKING:
    from torch.ao.quantization import QConfigMapping

ENGINE = "x86"


@contextmanager
def _quiet_deprecations() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        for noise in ("deprecat", "reduce_range", "Converting a tensor"):
            warnings.filterwarnings("ignore", message=f".*{noise}")
        yield


def _qconfig_mapping(network: Int8Network) -> QConfigMapping:
    from torch.ao.quantization import QConfig, get_default_qconfig_mapping
    from torch.ao.quantization.observer import HistogramObserver, default_per_channel_weight_observer

    qconfig = QConfig(  # type: ignore[no-untyped-call]
        activation=HistogramObserver.with_args(reduce_range=False),
        weight=default_per_channel_weight_observer.with_args(reduce_range=network.reduce_range),
    )
    return get_default_qconfig_mapping(ENGINE).set_global(qconfig).set_module_name("fc", None)


def quantize(
    model: nn.Module,
    calibration: Iterable[torch.Tensor],
    image_size: int,
    networks: Sequence[Int8Network] = INT8_NETWORKS,
) -> dict[Int8Network, torch.jit.ScriptModule]:
    """Int8 TorchScript copies of `model` (left as it is), one per network, their activation ranges
    observed on the same `calibration` batches (N x 3 x image_size x image_size, preprocessed as for
    serving), each batch seen once by all of them."""
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = ENGINE
    example = torch.zeros(1, 3, image_size, image_size)
    fp32 = copy.deepcopy(model).cpu().eval()
    made: dict[Int8Network, torch.jit.ScriptModule] = {}
    with _quiet_deprecations():
        prepared = {
            network: prepare_fx(copy.deepcopy(fp32), _qconfig_mapping(network), (example,)) for network in networks
        }
        seen = 0
        with torch.inference_mode():
            for batch in calibration:
                for observed in prepared.values():
                    observed(batch.cpu())
                seen += len(batch)
        if not seen:
            raise ValueError("int8 calibration needs at least one image")
        for network, observed in prepared.items():
            quantized = convert_fx(observed)
            with torch.inference_mode():
                traced = torch.jit.trace(quantized, example)  # type: ignore[no-untyped-call]
                made[network] = torch.jit.freeze(traced.eval())
    return made


def save(module: torch.jit.ScriptModule, path: Path) -> None:
    with _quiet_deprecations():
        torch.jit.save(module, str(path))


def load(path: Path, engine: str = ENGINE) -> torch.jit.ScriptModule:
    """An int8 network, on the CPU (its weights are packed for `engine`'s kernels on this machine as
    it loads: networks.quantized_engine says which)."""
    torch.backends.quantized.engine = engine
    with _quiet_deprecations():
        module: torch.jit.ScriptModule = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
    return module


@dataclass(frozen=True)
class Agreement:
    """How closely the int8 network answers as the fp32 one, on the same preprocessed images."""

    images: int
    top1_agreement: float  # share of images whose top-1 class is the same
    mean_abs_top1_probability_difference: float  # at the fp32 top-1 class
    median_top1_margin: float  # fp32 top-1 minus top-2 probability: how confident the answers were
    low_margin_images: int  # fp32 margin under 0.1: the answers int8 rounding could flip
    largest_flipped_margin: float  # the widest fp32 margin among the images whose top-1 changed (0: none)

    def as_dict(self) -> dict[str, float | int]:
        return {
            "images": self.images,
            "top1_agreement": round(self.top1_agreement, 4),
            "mean_abs_top1_probability_difference": round(self.mean_abs_top1_probability_difference, 5),
            "median_top1_margin": round(self.median_top1_margin, 4),
            "low_margin_images": self.low_margin_images,
            "largest_flipped_margin": round(self.largest_flipped_margin, 5),
        }


def agreement(reference_logits: torch.Tensor, candidate_logits: torch.Tensor) -> Agreement:
    """Compare two networks' logits (N x classes) for the same N images."""
    if reference_logits.shape != candidate_logits.shape or not len(reference_logits):
        shapes = f"{tuple(reference_logits.shape)} and {tuple(candidate_logits.shape)}"
        raise ValueError(f"need the logits of the same images, not {shapes}")
    reference = torch.softmax(reference_logits.float(), dim=1)
    candidate = torch.softmax(candidate_logits.float(), dim=1)
    top2 = torch.topk(reference, k=min(2, reference.shape[1]), dim=1)
    top1 = top2.indices[:, 0]
    margins = top2.values[:, 0] - (top2.values[:, 1] if reference.shape[1] > 1 else 0)
    same = candidate.argmax(dim=1) == top1
    return Agreement(
        images=len(reference),
        top1_agreement=float(same.float().mean()),
        mean_abs_top1_probability_difference=float(
            (reference.gather(1, top1[:, None]) - candidate.gather(1, top1[:, None])).abs().mean()
        ),
        median_top1_margin=float(margins.quantile(0.5)),
        low_margin_images=int((margins < 0.1).sum()),
        largest_flipped_margin=float(margins[~same].max()) if not same.all() else 0.0,
    )


def compare(reference: nn.Module, fast: nn.Module, batches: Iterable[torch.Tensor]) -> Agreement:
    """Run both networks on the same batches (the reference on its own device, `fast` on the CPU)."""
    device = next(reference.parameters()).device
    reference_logits, fast_logits = [], []
    reference.eval()
    with torch.inference_mode():
        for batch in batches:
            reference_logits.append(reference(batch.to(device)).cpu())
            fast_logits.append(fast(batch.cpu()))
    if not reference_logits:
        raise ValueError("no images to compare the int8 network on")
    return agreement(torch.cat(reference_logits), torch.cat(fast_logits))
