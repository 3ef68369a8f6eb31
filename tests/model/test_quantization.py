"""The int8 fast path: quantization.py's agreement arithmetic, the two int8 networks train.py writes
and how closely they answer as fp32 on held-out images, and the MODEL_PRECISION switch of
inference.py (int8, fp16 on GPUs, fp32) on this CPU and, with their flags stood in for, on the others."""

from __future__ import annotations

import copy
import dataclasses
import logging
import shutil
from pathlib import Path

import classifier
import inference
import networks
import pytest
import quantization
import torch

import answers
from tests.training import CLASSES, IMAGE_SIZE, served_here

# torch's default x86 recipe (7-bit activations, int8 head) agreed on about 90% of such images;
# this project's recipe must not fall back to it.
MIN_AGREEMENT_SMALL_MODEL = 0.97


def test_agreement_counts_flips_differences_and_margins() -> None:
    reference = torch.tensor([[0.7, 0.2, 0.1], [0.5, 0.45, 0.05], [0.1, 0.3, 0.6], [0.34, 0.33, 0.33]]).log()
    candidate = torch.tensor([[0.6, 0.3, 0.1], [0.4, 0.55, 0.05], [0.1, 0.3, 0.6], [0.34, 0.33, 0.33]]).log()
    agreement = quantization.agreement(reference, candidate)
    assert agreement.images == 4
    assert agreement.top1_agreement == pytest.approx(0.75)  # the second image flipped
    # at the reference's top-1 class: |0.7-0.6|, |0.5-0.4|, 0, 0
    assert agreement.mean_abs_top1_probability_difference == pytest.approx(0.05, abs=1e-6)
    # margins 0.5, 0.05, 0.3, 0.01: median 0.175; two under 0.1
    assert agreement.median_top1_margin == pytest.approx(0.175, abs=1e-6)
    assert agreement.low_margin_images == 2
    assert agreement.largest_flipped_margin == pytest.approx(0.05, abs=1e-6)  # the one flip was that close
    assert quantization.agreement(reference, reference).largest_flipped_margin == 0


def test_agreement_needs_the_same_images() -> None:
    with pytest.raises(ValueError, match="same images"):
        quantization.agreement(torch.zeros(3, 5), torch.zeros(2, 5))


def held_out_batches(directory: Path) -> list[torch.Tensor]:
    import dogimages

    folder = dogimages.image_folder(directory, "test", train=False, image_size=IMAGE_SIZE)
    loader = dogimages.loader(folder, batch_size=32, train=False, workers=0, distributed=False)
    return [batch.images for batch in loader]


def new_held_out_batches(tmp_path_factory: pytest.TempPathFactory) -> list[torch.Tensor]:
    """200 new images of the test model's breeds, never seen in training or calibration."""
    import dataset_tool

    held_out = dataset_tool.synthesize(
        tmp_path_factory.mktemp("held-out"), classes=CLASSES, per_split=(1, 1, 40), size=(160, 120), corrupt=0, seed=7
    )
    return held_out_batches(held_out)


@pytest.mark.slow
def test_training_writes_both_int8_networks_and_measures_each(trained: tuple[Path, dict[str, object]]) -> None:
    model_dir, result = trained
    # train.py measured each on the test split it never calibrated on
    measured = result["int8_agreement"]
    assert isinstance(measured, dict) and set(measured) == {"int8", "int8-reduce-range"}
    assert all(figures["images"] == CLASSES * 4 for figures in measured.values())
    for network in networks.INT8_NETWORKS:
        # each is an int8 network: a quarter of the fp32 weights' size
        assert (model_dir / network.file).stat().st_size < (model_dir / "model.pth").stat().st_size / 3


def int8_weights(module: torch.jit.ScriptModule) -> list[torch.Tensor]:
    """The integer weights of every quantized convolution of a frozen int8 network."""
    weights = []
    for node in module.graph.nodes():
        output = node.outputsAt(0) if node.outputsSize() else None
        if node.kind() == "prim::Constant" and output is not None and "PackedParams" in str(output.type()):
            weight, _ = output.toIValue().unpack()
            weights.append(weight.int_repr())
    return weights


@pytest.mark.slow
def test_only_the_reduce_range_network_keeps_its_weights_in_seven_bits(trained: tuple[Path, dict[str, object]]) -> None:
    """What makes it safe without VNNI: pairs of 8-bit activations times 7-bit weights fit in 16 bits."""
    for network in networks.INT8_NETWORKS:
        weights = int8_weights(quantization.load(trained[0] / network.file))
        assert len(weights) == 20  # ResNet-18's convolutions (the head stays fp32)
        low, high = min(int(w.min()) for w in weights), max(int(w.max()) for w in weights)
        # reduce_range scales each channel's largest weight to 63.5, which rounds to 64: |w| <= 64, so
        # a pair of products is at most 2 x 255 x 64 = 32,640, inside int16
        if network.reduce_range:
            assert low >= -64 and high <= 64, (network.file, low, high)
        else:
            assert low < -64 or high > 64, (network.file, low, high)  # the full 8 bits are used


@pytest.mark.slow
@pytest.mark.parametrize("which", ["served here", "reduce-range"])
def test_an_int8_network_answers_as_fp32(
    trained: tuple[Path, dict[str, object]], tmp_path_factory: pytest.TempPathFactory, which: str
) -> None:
    """The network this CPU serves, and the reduce-range one, which is safe on every CPU with AVX2
    (the full-range one is checked by the first case on machines with AVX-512 VNNI)."""
    from classifier import build_resnet18

    model_dir = trained[0]
    choice = served_here()  # the trained artifact holds both int8 networks
    file = choice.file if which == "served here" else networks.INT8_REDUCE_RANGE.file
    assert file.startswith("model_int8"), f"this CPU serves {choice.precision}: {choice.why}"
    fp32 = build_resnet18(CLASSES)
    fp32.load_state_dict(torch.load(model_dir / "model.pth", weights_only=True))
    agreement = quantization.compare(fp32, quantization.load(model_dir / file), new_held_out_batches(tmp_path_factory))
    assert agreement.images == 200
    assert agreement.top1_agreement >= MIN_AGREEMENT_SMALL_MODEL, (file, agreement)
    assert agreement.mean_abs_top1_probability_difference < 0.05, (file, agreement)


@pytest.mark.slow
def test_int8_is_the_default_and_fp32_the_fallback(
    trained: tuple[Path, dict[str, object]], dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = trained[0]
    monkeypatch.delenv("MODEL_PRECISION", raising=False)
    default = inference.model_fn(str(model_dir))
    assert default.precision == served_here().precision  # int8 or int8-reduce-range by the CPU
    monkeypatch.setenv("MODEL_PRECISION", "fp32")
    fp32 = inference.model_fn(str(model_dir))
    assert fp32.precision == "fp32"
    assert all(p.dtype == torch.float32 for p in fp32.network.parameters())
    # both name the breed of a held-out photo, and say which network and weights answered
    photo = next((dataset / "test").glob("003.*/*.jpg")).read_bytes()
    version = classifier.model_version(model_dir)
    for model in (default, fp32):
        answer = inference.predict_fn(inference.Request(photo, "image/jpeg"), model)
        assert isinstance(answer, answers.Prediction) and answer.label == "003"
        assert (answer.model_precision, answer.model_version) == (model.precision, version)
    assert version.startswith("sha256:") and len(version) == len("sha256:") + 16


PRETEND = {
    "avx2": "fpu sse2 avx avx2",
    "avx512": "fpu sse2 avx avx2 avx512f avx512bw avx512vl",
    "avx512_vnni": "fpu sse2 avx avx2 avx512f avx512bw avx512vl avx512_vnni",
}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("cpu", "served"),
    [("avx2", "int8-reduce-range"), ("avx512", "int8-reduce-range"), ("avx512_vnni", "int8")],
)
def test_the_handler_loads_the_network_each_cpu_class_gets(
    trained: tuple[Path, dict[str, object]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    cpu: str,
    served: str,
) -> None:
    """model_fn follows networks.choose for CPUs of every class (their flags stood in for; the
    networks' answers are checked above only where they are safe)."""
    monkeypatch.setenv("MODEL_PRECISION", "int8")
    monkeypatch.setattr(networks, "read_cpu_flags", lambda: networks.CpuFlags(frozenset(PRETEND[cpu].split()), "test"))
    with caplog.at_level(logging.INFO, logger="inference"):
        model = inference.model_fn(str(trained[0]))
    assert model.precision == served
    file = {"int8": "model_int8.pt", "int8-reduce-range": "model_int8_reduce_range.pt"}[served]
    assert f"model loaded: precision={served} device=cpu" in caplog.text and f"network={file}" in caplog.text
    assert (
        f"MODEL_PRECISION=int8 serves {served}: {file}, safe with" in caplog.text
        and "but serving fp32" not in caplog.text
    )


@pytest.mark.slow
def test_a_cpu_whose_flags_are_unknown_serves_fp32_and_says_why(
    trained: tuple[Path, dict[str, object]], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MODEL_PRECISION", "int8")
    unknown = networks.CpuFlags(None, "/proc/cpuinfo has no flags line (not an x86 CPU?)")
    monkeypatch.setattr(networks, "read_cpu_flags", lambda: unknown)
    with caplog.at_level(logging.WARNING, logger="inference"):
        model = inference.model_fn(str(trained[0]))
    assert model.precision == "fp32"
    assert "MODEL_PRECISION=int8 but serving fp32: this CPU's instruction set is unknown" in caplog.text
    assert len([r for r in caplog.records if "but serving fp32" in r.getMessage()]) == 1  # said once


@pytest.mark.slow
def test_the_switch_rejects_unknown_precisions(
    trained: tuple[Path, dict[str, object]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODEL_PRECISION", "bf16")
    with pytest.raises(ValueError, match="MODEL_PRECISION must be one of int8, fp16, fp32, not 'bf16'"):
        inference.model_fn(str(trained[0]))


@pytest.mark.slow
def test_fp16_on_a_cpu_serves_fp32_and_says_why(
    trained: tuple[Path, dict[str, object]], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MODEL_PRECISION", "fp16")
    with caplog.at_level(logging.WARNING, logger="inference"):
        model = inference.model_fn(str(trained[0]))
    assert model.precision == "fp32" and model.input_dtype == torch.float32
    assert "MODEL_PRECISION=fp16 but serving fp32: fp16 is for GPUs and this worker has cpu" in caplog.text


@pytest.mark.slow
def test_an_fp16_network_answers_as_fp32(
    trained: tuple[Path, dict[str, object]], dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a GPU worker serves with MODEL_PRECISION=fp16 (the halved fused network, fed fp16
    inputs), run here on the CPU: the same breeds as fp32, probabilities within 0.01."""
    monkeypatch.setenv("MODEL_PRECISION", "fp32")
    fp32 = inference.model_fn(str(trained[0]))
    fp16 = dataclasses.replace(fp32, network=copy.deepcopy(fp32.network).half(), precision="fp16")
    assert fp16.input_dtype == torch.float16
    photos = sorted((dataset / "test").rglob("*.jpg"))[:12]
    for photo in photos:
        request = inference.Request(photo.read_bytes(), "image/jpeg")
        full, half = inference.predict_fn(request, fp32), inference.predict_fn(request, fp16)
        assert isinstance(full, answers.Prediction) and isinstance(half, answers.Prediction)
        assert half.label == full.label
        assert half.confidence == pytest.approx(full.confidence, abs=0.01)


@pytest.mark.slow
def test_an_artifact_without_int8_serves_fp32_and_says_why(
    trained: tuple[Path, dict[str, object]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    older = shutil.copytree(trained[0], tmp_path / "model", ignore=shutil.ignore_patterns("model_int8*.pt"))
    monkeypatch.setenv("MODEL_PRECISION", "int8")
    with caplog.at_level(logging.WARNING, logger="inference"):
        model = inference.model_fn(str(older))
    assert model.precision == "fp32"
    assert "serving fp32: the model has no int8 network" in caplog.text
