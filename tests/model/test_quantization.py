"""The int8 fast path: quantization.py's agreement arithmetic, the model_int8.pt train.py writes and
how closely it answers as fp32 on held-out images, and the MODEL_PRECISION switch of inference.py
(int8, fp16 on GPUs, fp32)."""

from __future__ import annotations

import copy
import dataclasses
import logging
import shutil
from pathlib import Path

import answers
import inference
import pytest
import quantization
import torch

from tests.training import CLASSES, IMAGE_SIZE

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


@pytest.mark.slow
def test_training_writes_an_int8_model_that_answers_as_fp32(
    trained: tuple[Path, dict[str, object]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    import dataset_tool
    from classifier import build_resnet18

    model_dir, result = trained
    # train.py measured it on the test split it never calibrated on
    measured = result["int8_agreement"]
    assert isinstance(measured, dict) and measured["images"] == CLASSES * 4
    # and on 200 new images of the same breeds, through the network as loaded for serving
    held_out = dataset_tool.synthesize(
        tmp_path_factory.mktemp("held-out"), classes=CLASSES, per_split=(1, 1, 40), size=(160, 120), corrupt=0, seed=7
    )
    fp32 = build_resnet18(CLASSES)
    fp32.load_state_dict(torch.load(model_dir / "model.pth", weights_only=True))
    int8 = quantization.load(model_dir / quantization.INT8_FILE)
    agreement = quantization.compare(fp32, int8, held_out_batches(held_out))
    assert agreement.images == 200
    assert agreement.top1_agreement >= MIN_AGREEMENT_SMALL_MODEL, agreement
    assert agreement.mean_abs_top1_probability_difference < 0.05, agreement
    # it is the int8 network: a quarter of the fp32 weights' size
    assert (model_dir / quantization.INT8_FILE).stat().st_size < (model_dir / "model.pth").stat().st_size / 3


@pytest.mark.slow
def test_int8_is_the_default_and_fp32_the_fallback(
    trained: tuple[Path, dict[str, object]], dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = trained[0]
    monkeypatch.delenv("MODEL_PRECISION", raising=False)
    default = inference.model_fn(str(model_dir))
    assert default.precision == ("fp32" if quantization.unsupported() else "int8")
    monkeypatch.setenv("MODEL_PRECISION", "fp32")
    fp32 = inference.model_fn(str(model_dir))
    assert fp32.precision == "fp32"
    assert all(p.dtype == torch.float32 for p in fp32.network.parameters())
    # both name the breed of a held-out photo
    photo = next((dataset / "test").glob("003.*/*.jpg")).read_bytes()
    for model in (default, fp32):
        answer = inference.predict_fn(inference.Request(photo, "image/jpeg"), model)
        assert isinstance(answer, answers.Prediction) and answer.label == "003"


@pytest.mark.slow
def test_a_cpu_without_vnni_serves_fp32_and_says_why(
    trained: tuple[Path, dict[str, object]], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MODEL_PRECISION", "int8")
    monkeypatch.setattr(quantization, "unsupported", lambda: "this CPU has no AVX-512 VNNI")
    with caplog.at_level(logging.WARNING, logger="inference"):
        model = inference.model_fn(str(trained[0]))
    assert model.precision == "fp32"
    assert "MODEL_PRECISION=int8 but serving fp32: this CPU has no AVX-512 VNNI" in caplog.text


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
    older = shutil.copytree(trained[0], tmp_path / "model", ignore=shutil.ignore_patterns(quantization.INT8_FILE))
    monkeypatch.setenv("MODEL_PRECISION", "int8")
    with caplog.at_level(logging.WARNING, logger="inference"):
        model = inference.model_fn(str(older))
    assert model.precision == "fp32"
    assert "serving fp32: the model has no model_int8.pt" in caplog.text
