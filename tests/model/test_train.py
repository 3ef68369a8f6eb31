"""model/training/train.py and model/training/hpo.py on a generated dataset, on CPU."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import classifier
import hpo
import launch
import networks
import pytest
import recipe
import torch
import train
import tuning_metrics

from tests.conftest import IMPORT_PATH, REPO
from tests.training import CLASSES, served_here, train_args

pytestmark = pytest.mark.slow  # trains real models

CHANCE = 1 / CLASSES


def test_training_learns_and_leaves_a_deployable_model(trained: tuple[Path, dict[str, object]]) -> None:
    model_dir, result = trained
    assert result["best_validation_accuracy"] >= 0.8 > CHANCE  # type: ignore[operator]
    assert result["test_accuracy"] >= 0.8  # type: ignore[operator]
    assert result["skipped_images"] == 1  # the truncated JPEG was skipped and counted, not fatal
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "calibration.json",
        "class_index.json",
        "code",
        "model.pth",
        "model_config.json",
        "model_int8.pt",
        "model_int8_reduce_range.pt",
    ]
    # code/ is model/serving/ as it is, with the answer contract: the handler and what it imports
    shipped = sorted([*(p.name for p in (REPO / "model" / "serving").glob("*.py")), "answers.py"])
    assert sorted(p.name for p in (model_dir / "code").iterdir()) == shipped
    breeds = classifier.load_class_index(model_dir)
    assert [b.label for b in breeds] == ["001", "002", "003", "004", "005"]
    assert breeds[0].name == "Affenpinscher"
    state = torch.load(model_dir / "model.pth", weights_only=True)
    assert state["fc.weight"].shape == (CLASSES, 512)


def test_hpo_prints_the_tuner_metrics_and_never_reads_the_test_split(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a dataset whose test split is unreadable
    no_test = tmp_path / "dogImages"
    no_test.mkdir()
    for split in ("train", "valid"):
        (no_test / split).symlink_to(dataset / split)
    args = hpo.get_args_parser().parse_args(train_args(no_test, tmp_path, "--epochs", "5", "--optimizer", "adam"))
    result = hpo.main(args)
    out = capsys.readouterr().out
    # THEN every metric the tuner watches is printed once per epoch, in a form its regex reads
    for definition in tuning_metrics.METRIC_DEFINITIONS:
        if definition["Name"].startswith("test"):
            assert not re.search(definition["Regex"], out)
            continue
        values = [float(v) for v in re.findall(definition["Regex"], out)]
        assert len(values) == 5, definition
    accuracies = [float(v) for v in re.findall(r"validation_accuracy=([0-9.]+)", out)]
    assert accuracies[-1] == pytest.approx(result["validation_accuracy"])
    assert result["validation_accuracy"] > CHANCE
    assert re.findall(r"validation_samples=(\d+)", out)[-1] == "20"  # per-sample averages over every image
    # a trial keeps no checkpoint (a trial is never resumed) and writes no artifact but its best weights
    assert not (tmp_path / "checkpoints").exists()
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["model.pth"]


def test_a_tuning_trial_and_the_final_training_run_one_recipe() -> None:
    """hpo.py parses train.py's arguments, so a trial and the final training given the same
    hyperparameters train the same way; the recipe is every argument that decides what is learnt."""
    argv = ["--lr", "0.002", "--epochs", "7", "--fine-tune", "head", "--label-smoothing", "0.05"]
    trial = hpo.get_args_parser().parse_args(argv)
    final = train.get_args_parser().parse_args(argv)
    assert recipe.of(trial) == recipe.of(final)
    assert recipe.of(final) | {"lr": 0.001} != recipe.of(final)
    assert set(recipe.SEARCHED) <= set(recipe.names())
    names = set(recipe.names())
    assert {"fine-tune", "label-smoothing", "schedule", "augment", "pretrained", "weight-decay"} <= names


class Interrupted(Exception):
    """A managed spot interruption, in the middle of an epoch."""


def interrupt_epoch(monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
    real = train.loops.train_one_epoch
    calls = {"n": 0}

    def train_one_epoch(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == epoch:
            raise Interrupted(f"interrupted in epoch {epoch}")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(train.loops, "train_one_epoch", train_one_epoch)


def test_an_interrupted_run_resumes_from_its_own_checkpoint(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = train_args(dataset, tmp_path, "--epochs", "3", "--no-int8")
    # GIVEN a run interrupted in its third epoch (a managed spot interruption)
    with monkeypatch.context() as patch:
        interrupt_epoch(patch, 3)
        with pytest.raises(Interrupted):
            train.main(train.get_args_parser().parse_args(argv))
    first = capsys.readouterr().out
    checkpoint = torch.load(tmp_path / "checkpoints" / "checkpoint.pth", weights_only=True)
    assert checkpoint["epoch"] == 2 and checkpoint["recipe"]["epochs"] == 3
    # WHEN SageMaker restarts it with the same arguments and checkpoint directory
    train.main(train.get_args_parser().parse_args(argv))
    second = capsys.readouterr().out
    # THEN it continues at epoch 3 instead of starting over
    assert re.findall(r"^epoch=(\d+) train_loss", first, re.M) == ["1", "2"]
    assert "resumed from" in second and "after epoch 2" in second
    assert re.findall(r"^epoch=(\d+) train_loss", second, re.M) == ["3"]


def test_a_checkpoint_of_another_run_is_refused_and_resumed_only_when_asked(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a run of 2 epochs stopped in its second, its checkpoint left in the directory
    with monkeypatch.context() as patch:
        interrupt_epoch(patch, 2)
        with pytest.raises(Interrupted):
            train.main(train.get_args_parser().parse_args(train_args(dataset, tmp_path, "--epochs", "2", "--no-int8")))
    capsys.readouterr()
    # WHEN a new run with another learning rate and more epochs finds that checkpoint
    other = train_args(dataset, tmp_path, "--epochs", "3", "--no-int8", "--lr", "0.001")
    with pytest.raises(SystemExit, match="belongs to another run") as refused:
        train.main(train.get_args_parser().parse_args(other))
    # THEN it refuses, saying what differs and how to go on, and trains nothing
    message = str(refused.value)
    assert "lr 0.003 there, 0.001 here" in message and "epochs 2 there, 3 here" in message
    assert "--resume" in message and "train_loss" not in capsys.readouterr().out
    # AND --resume continues that run explicitly, with its own recipe, from the epoch after its checkpoint
    checkpoint = tmp_path / "checkpoints" / "checkpoint.pth"
    train.main(train.get_args_parser().parse_args([*other, "--resume", str(checkpoint)]))
    resumed = capsys.readouterr().out
    assert "with its own recipe: lr 0.003 (not 0.001), epochs 2 (not 3)" in resumed
    assert "after epoch 1" in resumed and re.findall(r"^epoch=(\d+) train_loss", resumed, re.M) == ["2"]
    assert torch.load(checkpoint, weights_only=True)["recipe"]["lr"] == 0.003


def test_test_only_evaluates_saved_weights_on_the_test_split(
    trained: tuple[Path, dict[str, object]], dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir, result = trained
    argv = train_args(dataset, tmp_path, "--test-only", "--model-dir", str(model_dir))
    evaluated = train.main(train.get_args_parser().parse_args(argv))
    assert evaluated["test_accuracy"] == pytest.approx(result["test_accuracy"])  # the weights training tested
    assert re.search(r"test_accuracy=", capsys.readouterr().out)
    assert not (tmp_path / "checkpoints").exists()  # nothing trained, nothing written
    with pytest.raises(SystemExit, match="no saved weights"):
        train.main(train.get_args_parser().parse_args(train_args(dataset, tmp_path, "--test-only")))


def test_extra_images_join_the_training_split_only(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """cli.export's layout (train/<NNN.Breed_name>/) adds to training, never to validation or test."""
    import dogimages

    extra = tmp_path / "reviewed"
    photos = sorted((dataset / "test" / "002.Afghan_hound").glob("*.jpg"))[:2]
    (extra / "train" / "003.Airedale_terrier").mkdir(parents=True)
    for n, photo in enumerate(photos):  # relabelled by a person: Afghan hound photos as Airedales
        shutil.copy(photo, extra / "train" / "003.Airedale_terrier" / f"reviewed-{n}.jpg")
    train_set = dogimages.image_folder(dataset, "train", train=False, image_size=64)
    before = len(train_set)
    assert dogimages.add_extra(train_set, extra) == {"003.Airedale_terrier": 2}
    added = train_set.samples[before:]
    assert [Path(path).name for path, _ in added] == ["reviewed-0.jpg", "reviewed-1.jpg"]
    assert {target for _, target in added} == {train_set.class_to_idx["003.Airedale_terrier"]}
    assert len(train_set) == before + 2 and train_set.targets[before:] == [target for _, target in added]

    result = train.main(train.get_args_parser().parse_args(
        train_args(dataset, tmp_path / "out", "--epochs", "1", "--no-int8", "--extra-train", str(extra))))  # fmt: skip
    out = capsys.readouterr().out
    assert result["extra_train_images"] == 2 and "extra training images from" in out
    # 16 readable photos a breed, and the 2 reviewed ones; validation and test as they were
    assert "train_samples=82 " in out and "validation_samples=20 " in out and "test_samples=20 " in out

    (extra / "train" / "999.Unicorn").mkdir()
    with pytest.raises(SystemExit, match=r"999\.Unicorn"):
        dogimages.add_extra(dogimages.image_folder(dataset, "train", train=False, image_size=64), extra)


def test_profiling_writes_a_tensorboard_trace(dataset: Path, tmp_path: Path) -> None:
    train.main(train.get_args_parser().parse_args(train_args(dataset, tmp_path, "--epochs", "1", "--profile")))
    traces = list((tmp_path / "tensorboard").glob("*.pt.trace.json"))
    assert len(traces) == 1
    assert "traceEvents" in json.loads(traces[0].read_text())


def test_data_parallel_training_with_two_processes(dataset: Path, tmp_path: Path) -> None:
    """The path SageMaker's torch_distributed launcher takes: torchrun, one process per device (gloo on CPU)."""
    # The source directory a training job gets (launch.training_source), with nothing else on the path.
    source = launch.training_source(tmp_path / "source")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29531"]
    command += [str(source / "train.py"), *train_args(dataset, tmp_path, "--epochs", "2")]
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    # the main process alone logs, checkpoints and writes the model; samples are counted across both
    assert len(re.findall(r"^epoch=\d+ train_loss", result.stdout, re.M)) == 2
    samples = re.findall(r"validation_samples=(\d+)", result.stdout)
    assert samples and int(samples[-1]) >= 20
    assert (tmp_path / "model" / "model.pth").exists()


def test_fusing_batchnorm_keeps_the_outputs() -> None:
    torch.manual_seed(0)
    model = classifier.build_resnet18(7).eval()
    for module in model.modules():  # non-trivial running statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        expected = model(x)
        fused = classifier.fuse_for_inference(model)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
        assert torch.allclose(fused(x), expected, atol=1e-4)


def test_fine_tune_choice_freezes_the_rest() -> None:
    head = classifier.build_resnet18(7, fine_tune="head")
    assert {n for n, p in head.named_parameters() if p.requires_grad} == {"fc.weight", "fc.bias"}
    layer4 = classifier.build_resnet18(7, fine_tune="layer4")
    trainable = {n.split(".")[0] for n, p in layer4.named_parameters() if p.requires_grad}
    assert trainable == {"fc", "layer4"}


def test_local_pretrained_weights_load_offline(tmp_path: Path) -> None:
    reference = classifier.build_resnet18(1000)
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    model = classifier.build_resnet18(7, pretrained=str(tmp_path / "resnet18.pth"))
    assert torch.equal(model.conv1.weight, reference.conv1.weight)
    assert model.fc.out_features == 7


def test_torchvision_weights_load_into_our_resnet18_unchanged() -> None:
    """The ImageNet weights of the torchvision weights API fit our ResNet-18 key for key, and
    give the same outputs as torchvision's own model."""
    from torchvision import models

    torch.manual_seed(0)
    reference = models.resnet18(weights=None).eval()
    ours = classifier.ResNet18(1000)
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 96, 96)
    with torch.inference_mode():
        assert torch.allclose(ours.eval()(x), reference(x), atol=1e-5)


def test_serving_imports_no_torchvision(trained: tuple[Path, dict[str, object]]) -> None:
    """Importing torchvision costs about a second of every serverless cold start."""
    code = "import sys, inference; assert 'torchvision' not in sys.modules, 'torchvision imported'"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=trained[0] / "code",  # the artifact's code/, as the container sees it
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_benchmark_command_trains_serves_and_reports_every_handler(tmp_path: Path) -> None:
    """A smoke run of `make benchmark` (the figures themselves come from the full command)."""
    command = [sys.executable, str(REPO / "model" / "tools" / "benchmark.py"), "--images", "3", "--rounds", "1"]
    command += ["--cold-starts", "1", "--sizes", "160x120", "--batch-sizes", "1,2", "--json", str(tmp_path / "b.json")]
    command += ["--classes", "3", "--image-size", "64", "--epochs", "1", "--held-out-per-breed", "2"]
    command += ["--cache", str(tmp_path / "cache")]
    env = {**os.environ, "PYTHONPATH": IMPORT_PATH}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "int8/baseline" in result.stdout and "top-1 agreement" in result.stdout
    report = json.loads((tmp_path / "b.json").read_text())
    # it names the CPU's flags and the network MODEL_PRECISION=int8 served on it
    cpu = networks.read_cpu_flags()
    served = served_here()
    assert report["cpu"]["flags"] == cpu.summary and f"flags: {cpu.summary}" in result.stdout
    assert (
        report["fast_path"] == served.precision and f"MODEL_PRECISION=int8 serves {served.precision}" in result.stdout
    )
    row = report["sizes"]["160x120"]
    for kind in ("fp32", "int8"):
        assert row[f"{kind}_vs_baseline"] == pytest.approx(
            row[f"{kind}_images_per_s"] / row["baseline_images_per_s"],
            rel=0.1,  # of rates rounded to 0.1
        )
        assert report["cold_start_s"][kind] > 0 and report["peak_rss_mib"][kind] > 100
    # the floor (a process that only imports torch) is reported; how it compares is the benchmark's
    # figure, not an assertion: under a loaded machine its ratio to the baseline varies past 1
    assert report["cold_start_vs_baseline"]["import-torch"] > 0
    assert set(row["stages_ms"]) == {"baseline", "fp32", "int8"}
    # every int8 network safe on this CPU, measured on the test split of the model it trained
    safe = {n.precision for n in networks.INT8_NETWORKS if cpu.safe(n) is None}
    assert set(report["agreement"]) == safe and served.precision in safe
    assert all(figures["images"] == 3 * 2 for figures in report["agreement"].values())


def encoded(*images_bytes: bytes) -> Any:
    import device_data

    return device_data.EncodedBatch(
        [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in images_bytes],
        torch.arange(len(images_bytes)),
    )


def test_the_device_path_decodes_a_batch_as_pillow_does_and_skips_what_it_cannot_read() -> None:
    """device_data.py on the CPU, as the tests run it (on CUDA the same code decodes with nvJPEG)."""
    import io

    import device_data
    from PIL import Image

    from tests.pipeline import images

    sideways = images.photo(640, 480, orientation=6)  # stored turned a quarter, EXIF says so
    batch = encoded(images.jpeg(320, 240, (200, 40, 40)), images.truncated_jpeg(), images.png(300, 200), sideways)
    evaluate = device_data.DeviceTransform(torch.device("cpu"), 64, train=False)
    decoded = evaluate.decode(batch.data)
    # the truncated JPEG is lost alone; the PNG decodes; the sideways photo comes out upright
    assert decoded[1] is None and decoded[2] is not None
    assert decoded[3] is not None and tuple(decoded[3].shape[1:]) == (480, 640)
    out = evaluate(batch)
    assert out.images.shape == (3, 3, 64, 64) and out.skipped == 1 and out.labels.tolist() == [0, 2, 3]
    # evaluation pixels as Pillow's evaluation transform makes them, to within resampling
    pillow = classifier.eval_transform(64)
    expected = torch.stack(
        [pillow(classifier.upright(Image.open(io.BytesIO(d)))) for d in (images.png(300, 200), sideways)]
    )
    assert (out.images[1:] - expected).abs().mean() < 0.1  # normalised units: about 6 of 255 grey levels
    # training: random crops, flips and jitter, the same shape and normalisation
    torch.manual_seed(0)
    train_out = device_data.DeviceTransform(torch.device("cpu"), 64, train=True)(batch)
    assert train_out.images.shape == (3, 3, 64, 64) and train_out.images.dtype == torch.float32
    assert not torch.equal(train_out.images, out.images)


def test_the_device_path_keeps_pillows_decompression_bomb_guard(tmp_path: Path) -> None:
    """A file whose header declares a bomb never reaches a decoder: the workers drop it by its header."""
    import device_data
    import dogimages

    from tests.pipeline import images

    folder = tmp_path / "train" / "001.Affenpinscher"
    folder.mkdir(parents=True)
    (folder / "bomb.png").write_bytes(images.png_bomb())  # 30,000 x 30,000 declared in a few bytes
    (folder / "dog.jpg").write_bytes(images.jpeg(160, 120))
    encoded = device_data.EncodedImages(dogimages.image_folder(tmp_path, "train", train=True, image_size=64))
    items = [encoded[n] for n in range(len(encoded))]
    assert [item is None for item in items] == [True, False]  # sorted: bomb.png, dog.jpg
    out = device_data.DeviceTransform(torch.device("cpu"), 64, train=True)(device_data.collate_encoded(items))
    assert (out.skipped, out.images.shape[0]) == (1, 1)


def test_training_on_the_device_path_learns_as_the_pillow_path_does(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same recipe on both data paths, on the CPU: validation curves within noise of each other."""
    curves = {}
    for path in ("pillow", "device"):
        argv = train_args(dataset, tmp_path / path, "--epochs", "5", "--no-int8", "--data-path", path)
        result = train.main(train.get_args_parser().parse_args(argv))
        out = capsys.readouterr().out
        assert f"data path: {path}" in out
        curves[path] = [float(v) for v in re.findall(r"validation_accuracy=([0-9.]+)", out)]
        assert result["test_accuracy"] >= 0.7, (path, curves[path])  # tested as serving decodes, whichever trained
    # within noise: on 20 validation images (0.05 a photo) both reach what the Pillow path's own test
    # asks, by the best epoch (the weights training keeps); single epochs move with the CPU's kernels
    assert len(curves["device"]) == len(curves["pillow"]) == 5
    assert max(curves["device"]) >= 0.8 and max(curves["pillow"]) >= 0.8
