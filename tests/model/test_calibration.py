"""Calibrated confidence: the temperature train.py fits and inference.py applies, the recommended review
threshold and the validation shares under each threshold (model/serving/calibration.py)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import calibration
import inference
import pytest
import torch
from PIL import Image


def overconfident(n: int = 4000, classes: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of a network 3x too sure of itself: the labels are drawn from softmax(true / 1), the
    network says true x 3, so the temperature that calibrates it is about 3."""
    generator = torch.Generator().manual_seed(seed)
    true = torch.randn(n, classes, generator=generator) * 2
    labels = torch.multinomial(torch.softmax(true, dim=1), 1, generator=generator).squeeze(1)
    return true * 3, labels


def test_the_fitted_temperature_undoes_overconfidence_and_lowers_the_calibration_error() -> None:
    logits, labels = overconfident()
    temperature = calibration.fit_temperature(logits, labels)
    assert temperature == pytest.approx(3.0, rel=0.1)
    before, predicted = calibration.confidences(logits)
    after, same = calibration.confidences(logits, temperature)
    correct = [p == t for p, t in zip(predicted, labels.tolist(), strict=True)]
    assert same == predicted  # the ranking, and so the accuracy, is unchanged
    assert (
        calibration.expected_calibration_error(after, correct)
        < calibration.expected_calibration_error(before, correct) / 3
    )


def test_a_split_without_errors_cannot_make_every_answer_certain() -> None:
    logits = torch.eye(5).repeat(4, 1)  # every image right: unbounded, the fit goes to T = 0.06
    labels = torch.arange(5).repeat(4)
    assert calibration.fit_temperature(logits, labels) == calibration.TEMPERATURE_BOUNDS[0]


def test_the_recommended_threshold_is_the_lowest_that_keeps_the_target_accuracy() -> None:
    confidence = [0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4, 0.35, 0.31]
    correct = [True, True, True, True, True, True, True, True, False, False]
    # at 0.36 the accepted are the first 8, all right; at 0.35 nine, 8/9 = 0.89
    assert calibration.recommend_threshold(confidence, correct, target=0.95) == 0.36
    assert calibration.recommend_threshold(confidence, correct, target=0.8) == 0.31  # never under the least sure
    assert calibration.recommend_threshold([0.9, 0.8], [False, False]) == 1.0  # no threshold keeps it: review all


def test_coverage_is_the_share_at_or_above_and_their_accuracy() -> None:
    row = calibration.coverage([0.9, 0.8, 0.4, 0.2], [True, False, True, False], 0.5)
    assert (row.coverage, row.accuracy) == (0.5, 0.5)
    assert calibration.coverage([0.1], [True], 0.5).accuracy is None
    table = calibration.coverage_table([0.9, 0.8, 0.4, 0.2], [True, False, True, False]).splitlines()
    assert table[0].split() == ["threshold", "coverage", "accuracy"]
    assert [line.split()[0] for line in table[1:]] == ["0.30", "0.40", "0.50", "0.60", "0.70", "0.80", "0.90"]


def test_validation_shares_under_a_threshold_are_interpolated_between_the_grid_points() -> None:
    logits, labels = overconfident(n=500)
    fitted = calibration.calibrate(logits, labels)
    confidence, _ = calibration.confidences(logits, fitted.temperature)
    for threshold in (0.3, 0.5, 0.62):
        assert fitted.expected_under(threshold) == pytest.approx(
            sum(c < threshold for c in confidence) / len(confidence), abs=0.02
        )
    assert calibration.Calibration().expected_under(0.5) is None  # an artifact without validation figures


def test_calibration_round_trips_and_an_artifact_without_it_is_the_identity(tmp_path: Path) -> None:
    fitted = calibration.Calibration(0.8, 0.62, 0.95, tuple(i / 100 for i in range(101)))
    calibration.save(fitted, tmp_path)
    assert calibration.load(tmp_path) == fitted
    assert calibration.load(tmp_path / "nothing-here") == calibration.Calibration(1.0, None)
    (tmp_path / calibration.CALIBRATION_FILE).write_text(json.dumps({"temperature": 0}))
    with pytest.raises(ValueError, match="positive"):
        calibration.load(tmp_path)


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG")
    return buffer.getvalue()


def answer(model_dir: Path, image: bytes) -> inference.answers.Prediction:
    loaded = inference.model_fn(str(model_dir))
    prediction = inference.predict_fn(inference.input_fn(image, "image/jpeg"), loaded)
    assert isinstance(prediction, inference.answers.Prediction)
    return prediction


def test_train_writes_the_calibration_and_serving_applies_it(
    trained: tuple[Path, dict[str, object]], dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir, result = trained
    fitted = calibration.load(model_dir)
    assert (model_dir / "code" / "calibration.py").exists()  # the artifact's handler can import it
    assert fitted.recommended_threshold is not None and len(fitted.under_share) == len(calibration.GRID)
    figures = result["calibration"]
    assert isinstance(figures, dict) and figures["temperature"] == fitted.temperature
    # (whether the temperature lowers the error on 20 test images of a model right on every validation
    # image is chance: the overconfident network above shows that it does where validation can tell)
    assert 0 <= figures["ece_after"] <= 1 and 0 <= figures["ece_before"] <= 1 and figures["split"] == "test"

    first, second = (Image.open(next((dataset / "test" / f).glob("*.jpg"))) for f in sorted(
        p.name for p in (dataset / "test").iterdir())[:2])  # fmt: skip
    blend = jpeg(Image.blend(first, second.resize(first.size), 0.5))  # two breeds in one: unsure
    monkeypatch.delenv("CONFIDENCE_THRESHOLD", raising=False)
    served = answer(model_dir, blend)
    assert served.threshold == fitted.recommended_threshold
    assert served.expected_under_threshold == fitted.expected_under(fitted.recommended_threshold)

    # An artifact without calibration.json (from before it existed): temperature 1, no threshold.
    older = tmp_path / "older"
    shutil.copytree(model_dir, older)
    (older / calibration.CALIBRATION_FILE).unlink()
    plain = answer(older, blend)
    assert (plain.threshold, plain.expected_under_threshold) == (None, None)
    flatter = tmp_path / "flatter"
    shutil.copytree(older, flatter)
    calibration.save(calibration.Calibration(temperature=2.0), flatter)
    flat = answer(flatter, blend)
    # p1 / p2 = exp((z1 - z2) / T): at T = 2 the ratio is the square root of the plain one
    ratio, plain_ratio = (a.top5[0].probability / a.top5[1].probability for a in (flat, plain))
    assert ratio == pytest.approx(plain_ratio**0.5, rel=0.01)

    monkeypatch.setenv("CONFIDENCE_THRESHOLD", "0.75")  # the stack's ConfidenceThreshold wins
    assert answer(model_dir, blend).threshold == 0.75
    monkeypatch.setenv("CONFIDENCE_THRESHOLD", "1.5")
    with pytest.raises(ValueError, match="CONFIDENCE_THRESHOLD"):
        inference.model_fn(str(model_dir))


def test_an_older_artifact_is_calibrated_without_training_again(
    trained: tuple[Path, dict[str, object]], dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import train

    from tests.training import train_args

    older = tmp_path / "older"
    shutil.copytree(trained[0], older)
    (older / calibration.CALIBRATION_FILE).unlink()
    weights = (older / "model.pth").read_bytes()
    argv = train_args(dataset, tmp_path, "--calibrate-only", "--model-dir", str(older))
    result = train.main(train.get_args_parser().parse_args(argv))
    fitted, written = calibration.load(older), calibration.load(trained[0])  # what its training wrote
    # (the same, but for the last digits of a process with other threads: a grid step, one image in 20)
    assert fitted.temperature == pytest.approx(written.temperature, rel=1e-3)
    assert fitted.recommended_threshold == pytest.approx(written.recommended_threshold, abs=0.011)
    assert fitted.under_share == pytest.approx(written.under_share, abs=0.051)
    assert result["calibration"]["temperature"] == calibration.load(older).temperature
    out = capsys.readouterr().out
    assert "expected calibration error on the test split" in out and "recommended review threshold" in out
    assert (older / "model.pth").read_bytes() == weights and not (tmp_path / "checkpoints").exists()
