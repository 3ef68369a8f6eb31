"""Final training of the ResNet-18 dog-breed classifier with the tuned hyperparameters.

Leaves a deployable model in --model-dir (SM_MODEL_DIR, tarred by SageMaker into model.tar.gz):
model.pth (best validation accuracy), calibration.json (the temperature fitted on the validation
split and the review threshold it recommends; see calibration.py), model_int8.pt and
model_int8_reduce_range.pt (its int8 networks for CPUs with and without AVX-512 VNNI, calibrated
on validation images; see quantization.py and networks.py), class_index.json, model_config.json
and code/ with model/serving/ (inference.py and what it imports). Runs as one process or under
torchrun (SageMaker's torch_distributed). hpo.py runs the same training as a tuning trial (recipe.py:
one recipe for both).

Checkpoints: every epoch writes --checkpoint-dir/checkpoint.pth with the run's recipe. A checkpoint
there is resumed only when its recipe is this run's (a managed spot job restarted by SageMaker,
which restores the directory); one of another run is refused, never continued by accident.
--resume PATH continues a checkpoint's run explicitly, with the recipe it records; --test-only
evaluates saved weights on the test split, as torchvision's references do, and --calibrate-only
fits calibration.json for saved weights (an artifact from before calibration).

--extra-train adds a set in the dogImages layout to the training split only (never to validation or
test): the images people reviewed, as cli.export writes them."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import itertools
import json
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import calibration
import dogimages
import loops
import networks
import quantization
import recipe
import torch
import torch.distributed as dist
from classifier import CLASS_INDEX_FILE, CONFIG_FILE, build_resnet18, save_class_index
from networks import WEIGHTS_FILE
from torch import nn
from torch.nn.parallel import DistributedDataParallel

# What the inference container needs under code/: the handler and the modules it imports (all of
# model/serving/, and the answer contract from functions/). Each is copied from where Python finds
# it: the repository's folders here, one flat folder in a training job's source bundle.
SERVING_MODULES = ("inference", "classifier", "answers", "networks", "quantization", "calibration")
CHECKPOINT = "checkpoint.pth"


def _module_file(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"the serving module {name} is not on the import path")
    return Path(spec.origin)


def _sagemaker_or_local(sagemaker_path: str, local: str) -> str:
    return sagemaker_path if Path(sagemaker_path).is_dir() else local


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="ResNet-18 dog-breed training", add_help=True)
    recipe.add_recipe_args(parser)
    parser.add_argument("--model-dir", default=loops.env_default("SM_MODEL_DIR", "artifacts/model"))
    parser.add_argument("--output-dir", default=loops.env_default("SM_OUTPUT_DATA_DIR", "artifacts/output"))
    parser.add_argument("--checkpoint-dir", default=_sagemaker_or_local("/opt/ml/checkpoints", "artifacts/checkpoints"))
    parser.add_argument(
        "--tensorboard-dir", default=_sagemaker_or_local("/opt/ml/output/tensorboard", "artifacts/tensorboard")
    )
    parser.add_argument("--resume", metavar="PATH", help="continue this checkpoint's run, with the recipe it records")
    parser.add_argument(
        "--test-only",
        action="store_true",
        help="evaluate saved weights on the test split and stop: --resume's checkpoint, else --model-dir's model.pth",
    )
    parser.add_argument(
        "--data-path",
        choices=("auto", "pillow", "device"),
        default="auto",
        help="decode and augment in the loader's workers with Pillow, or in batches on the training device "
        "(device_data.py); auto: the device on CUDA",
    )
    parser.add_argument(
        "--extra-train",
        default=loops.env_default("SM_CHANNEL_EXTRA", ""),
        metavar="DIR",
        help="add these images (the dogImages layout, e.g. cli.export's reviewed images) to the training split",
    )
    parser.add_argument(
        "--target-accuracy",
        type=float,
        default=calibration.TARGET_ACCURACY,
        help="the accuracy of accepted answers the recommended review threshold keeps, on validation",
    )
    parser.add_argument(
        "--calibrate-only",
        action="store_true",
        help="fit calibration.json for --model-dir's model.pth (an artifact from before calibration) and stop",
    )
    parser.add_argument("--profile", action="store_true", help="trace a few steps of epoch 1 with torch.profiler")
    parser.add_argument("--no-amp", dest="amp", action="store_false", help="disable mixed precision on GPU")
    parser.add_argument(
        "--int8",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also write the int8 networks (model_int8*.pt) and measure their agreement with fp32 on the test split",
    )
    parser.add_argument(
        "--calibration-images", type=int, default=512, help="images that calibrate int8 (validation, then training)"
    )
    return parser


class CheckpointRefused(SystemExit):
    """A checkpoint in --checkpoint-dir that belongs to another run."""


@dataclass(frozen=True)
class Resumed:
    path: Path
    state: dict[str, Any]  # the checkpoint as saved (on the CPU); load_state_dict moves it to the device


def _checkpoint_to_resume(args: argparse.Namespace, checkpoint_path: Path) -> Resumed | None:
    """The checkpoint this run continues, read once: --resume's, whose recipe then replaces the one
    in `args` (its optimizer, schedule and epochs carry it; what changed is printed), or the
    checkpoint directory's when its recipe is this run's. Raises CheckpointRefused for a checkpoint
    of another run."""
    if args.resume:
        path = Path(args.resume)
        if not path.is_file():
            raise SystemExit(f"--resume {path}: no such checkpoint")
        state = torch.load(path, map_location="cpu", weights_only=True)
        recorded = state.get("recipe")
        if recorded is None:
            raise SystemExit(f"--resume {path}: the checkpoint records no recipe (written before checkpoints did)")
        changed = [f"{k} {recorded[k]!r} (not {v!r})" for k, v in recipe.of(args).items() if recorded.get(k) != v]
        for name, value in recorded.items():
            setattr(args, name.replace("-", "_"), value)
        if changed:
            print(f"resuming {path} with its own recipe: {', '.join(changed)}", flush=True)
        return Resumed(path, state)
    if not checkpoint_path.exists():
        return None
    state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    recorded, ours = state.get("recipe"), recipe.of(args)
    if recorded == ours:
        return Resumed(checkpoint_path, state)
    if recorded is None:
        differences = "it records no recipe (written before checkpoints did)"
    else:
        changed = [f"{k} {recorded.get(k)!r} there, {v!r} here" for k, v in ours.items() if recorded.get(k) != v]
        differences = "its recipe differs: " + "; ".join(changed)
    raise CheckpointRefused(
        f"{checkpoint_path} belongs to another run and is not resumed: {differences}. "
        f"Continue that run with --resume {checkpoint_path} (with its own recipe), or start this one afresh "
        "with another --checkpoint-dir (or delete the file)."
    )


def main(args: argparse.Namespace, *, tuning: bool = False) -> dict[str, Any]:
    """Train with the recipe in `args`. A tuning trial (hpo.py) keeps no checkpoints, never reads the
    test split and writes no artifact beyond the best weights: its metric lines are what it is for."""
    checkpoint_path = Path(args.checkpoint_dir) / CHECKPOINT
    evaluating = args.test_only or args.calibrate_only  # saved weights: nothing is trained
    resumed = None if tuning or evaluating else _checkpoint_to_resume(args, checkpoint_path)
    runtime = loops.init_runtime()
    torch.manual_seed(args.seed + runtime.rank)
    root = Path(args.data_dir)
    model_dir, checkpoint_dir = Path(args.model_dir), Path(args.checkpoint_dir)

    train_set = dogimages.image_folder(root, "train", train=args.augment == "imagenet", image_size=args.image_size)
    extra = dogimages.add_extra(train_set, Path(args.extra_train)) if args.extra_train and not evaluating else {}
    if extra and runtime.is_main:
        per_breed = ", ".join(f"{breed}: {count}" for breed, count in sorted(extra.items()))
        print(f"extra training images from {args.extra_train}: {sum(extra.values())} ({per_breed})", flush=True)
    valid_set = dogimages.image_folder(root, "valid", train=False, image_size=args.image_size)
    loaders = _loaders(args, train_set, valid_set, runtime)
    model: nn.Module = build_resnet18(
        len(train_set.classes), pretrained=loops.pretrained_arg(args.pretrained), fine_tune=args.fine_tune
    ).to(runtime.device)
    bare = model
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    if args.test_only:
        return _test_only(args, bare, criterion, runtime)
    if args.calibrate_only:
        return _calibrate_only(args, bare, runtime)
    if runtime.is_main:
        for directory in (model_dir, Path(args.output_dir), *(() if tuning else (checkpoint_dir,))):
            directory.mkdir(parents=True, exist_ok=True)
    if runtime.distributed:
        model = DistributedDataParallel(
            model, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None
        )

    optimizer = loops.build_optimizer(args.optimizer, model.parameters(), args.lr, args.weight_decay)
    scheduler: torch.optim.lr_scheduler.LRScheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, args.epochs))
        if args.schedule == "cosine"
        else torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    )
    amp = args.amp and runtime.device.type == "cuda"
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=amp)

    start_epoch, best_accuracy = 1, -1.0
    if resumed is not None:
        state = resumed.state
        bare.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, best_accuracy = state["epoch"] + 1, state["best_accuracy"]
        print(f"resumed from {resumed.path} after epoch {state['epoch']}", flush=True)

    validation = loops.Metrics(float("nan"), 0.0, 0)
    skipped = 0
    for epoch in range(start_epoch, args.epochs + 1):
        if runtime.distributed:
            loaders["train"].sampler.set_epoch(epoch)
        started = time.perf_counter()
        with _profiler(args, epoch == start_epoch and runtime.is_main) as profiler:
            train_metrics = loops.train_one_epoch(
                model, loaders["train"], criterion, optimizer, scaler, runtime, amp=amp, profiler=profiler
            )
        scheduler.step()
        validation = loops.evaluate(model, loaders["valid"], criterion, runtime)
        skipped = max(skipped, train_metrics.skipped + validation.skipped)
        if runtime.is_main:
            loops.log_metrics("train", epoch, train_metrics)
            loops.log_metrics("validation", epoch, validation)
            print(f"epoch={epoch} seconds={time.perf_counter() - started:.1f}", flush=True)
            if validation.accuracy > best_accuracy:
                best_accuracy = validation.accuracy
                torch.save(bare.state_dict(), model_dir / WEIGHTS_FILE)
            if not tuning:
                state = {
                    "model": bare.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "epoch": epoch,
                    "best_accuracy": best_accuracy,
                    "recipe": recipe.of(args),
                }
                torch.save(state, checkpoint_path)
        if runtime.distributed:
            dist.barrier()

    result: dict[str, Any] = {"best_validation_accuracy": best_accuracy, "skipped_images": skipped}
    if extra:
        result["extra_train_images"] = sum(extra.values())
    if tuning:
        result["validation_accuracy"] = validation.accuracy
    elif runtime.is_main:
        result.update(_finish(args, bare, train_set, criterion, runtime))
    if runtime.distributed:
        dist.barrier()
        dist.destroy_process_group()
    return result


def _loaders(
    args: argparse.Namespace,
    train_set: dogimages.SafeImageFolder,
    valid_set: dogimages.SafeImageFolder,
    runtime: loops.Runtime,
) -> dict[str, Any]:
    """The training and validation batches: decoded and augmented by the loader's workers with
    Pillow, or in batches on the training device (the default on CUDA, where the CPU's decoding
    would decide the speed)."""
    on_device = args.data_path == "device" or (args.data_path == "auto" and runtime.device.type == "cuda")
    common = {"batch_size": args.batch_size, "workers": args.workers, "distributed": runtime.distributed}
    if runtime.is_main:
        where = f"decoded and augmented on {runtime.device}" if on_device else "decoded and augmented with Pillow"
        print(f"data path: {'device' if on_device else 'pillow'} ({where})", flush=True)
    if not on_device:
        return {
            "train": dogimages.loader(train_set, train=True, **common),
            "valid": dogimages.loader(valid_set, train=False, **common),
        }
    from device_data import DeviceBatches

    size, augment = args.image_size, args.augment == "imagenet"
    return {
        "train": DeviceBatches.of(
            train_set, train=True, device=runtime.device, image_size=size, augment=augment, **common
        ),
        "valid": DeviceBatches.of(valid_set, train=False, device=runtime.device, image_size=size, **common),
    }


def _valid_loader(args: argparse.Namespace) -> Iterable[dogimages.Batch]:
    """The validation split as serving sees it (the eval transform), in one process."""
    valid_set = dogimages.image_folder(Path(args.data_dir), "valid", train=False, image_size=args.image_size)
    return dogimages.loader(valid_set, batch_size=args.batch_size, train=False, workers=args.workers, distributed=False)


def _test_loader(args: argparse.Namespace) -> Iterable[dogimages.Batch] | None:
    if not (Path(args.data_dir) / "test").is_dir():
        return None
    test_set = dogimages.image_folder(Path(args.data_dir), "test", train=False, image_size=args.image_size)
    return dogimages.loader(test_set, batch_size=args.batch_size, train=False, workers=args.workers, distributed=False)


def _test_only(
    args: argparse.Namespace, model: nn.Module, criterion: nn.Module, runtime: loops.Runtime
) -> dict[str, Any]:
    """The test split's metrics for saved weights: --resume's checkpoint, else --model-dir's model.pth."""
    source = Path(args.resume) if args.resume else Path(args.model_dir) / WEIGHTS_FILE
    if not source.is_file():
        raise SystemExit(f"--test-only: no saved weights at {source} (give --resume PATH or --model-dir)")
    state = torch.load(source, map_location=runtime.device, weights_only=True)
    model.load_state_dict(state["model"] if "model" in state and "optimizer" in state else state)
    test_loader = _test_loader(args)
    if test_loader is None:
        raise SystemExit(f"--test-only: {Path(args.data_dir) / 'test'} does not exist")
    test = loops.evaluate(model, test_loader, criterion, loops.Runtime(runtime.device))
    loops.log_metrics("test", 0, test)
    print(f"test split of {args.data_dir} with {source}: {test.samples} images, accuracy {test.accuracy:.4f}")
    return {"test_accuracy": test.accuracy, "test_loss": test.loss, "weights": str(source)}


def _calibrate_only(args: argparse.Namespace, model: nn.Module, runtime: loops.Runtime) -> dict[str, Any]:
    """calibration.json for --model-dir's weights, as the end of a training writes it: an artifact from
    before calibration gains it without training again (repack model.tar.gz with it)."""
    model_dir = Path(args.model_dir)
    if not (model_dir / WEIGHTS_FILE).is_file():
        raise SystemExit(f"--calibrate-only: no {WEIGHTS_FILE} in {model_dir}")
    model.load_state_dict(torch.load(model_dir / WEIGHTS_FILE, map_location=runtime.device, weights_only=True))
    return _calibrate(args, model, _valid_loader(args), _test_loader(args), runtime)


def _finish(
    args: argparse.Namespace,
    model: nn.Module,
    train_set: dogimages.SafeImageFolder,
    criterion: nn.Module,
    runtime: loops.Runtime,
) -> dict[str, Any]:
    """Test accuracy of the best weights, their int8 fast path, then the deployable model directory.
    Both see the images as serving does (Pillow, on the CPU), whichever data path trained."""
    model_dir = Path(args.model_dir)
    model.load_state_dict(torch.load(model_dir / WEIGHTS_FILE, map_location=runtime.device, weights_only=True))
    result: dict[str, Any] = {}
    test_loader = _test_loader(args)
    if test_loader is not None:
        single = loops.Runtime(runtime.device)  # only the main process evaluates the test split
        test = loops.evaluate(model, test_loader, criterion, single)
        loops.log_metrics("test", args.epochs, test)
        result["test_accuracy"] = test.accuracy
    for network in networks.INT8_NETWORKS:  # never beside other weights than their own
        (model_dir / network.file).unlink(missing_ok=True)
    valid_loader = _valid_loader(args)
    result.update(_calibrate(args, model, valid_loader, test_loader, runtime))
    if args.int8:
        result.update(_write_int8(args, model, valid_loader, test_loader))
    save_class_index(dogimages.breeds(train_set), model_dir)
    (model_dir / CONFIG_FILE).write_text(json.dumps({"arch": "resnet18", "image_size": args.image_size}))
    code_dir = model_dir / "code"
    code_dir.mkdir(exist_ok=True)
    for name in SERVING_MODULES:
        shutil.copy2(_module_file(name), code_dir / f"{name}.py")
    (Path(args.output_dir) / "metrics.json").write_text(json.dumps(result, indent=1))
    shipped = (WEIGHTS_FILE, *(network.file for network in networks.INT8_NETWORKS), calibration.CALIBRATION_FILE)
    written = [name for name in (*shipped, CLASS_INDEX_FILE, CONFIG_FILE) if (model_dir / name).exists()]
    print(f"model written to {model_dir}: {', '.join(written)}, code/", flush=True)
    return result


def _calibrate(
    args: argparse.Namespace,
    model: nn.Module,
    valid_loader: Iterable[dogimages.Batch],
    test_loader: Iterable[dogimages.Batch] | None,
    runtime: loops.Runtime,
) -> dict[str, Any]:
    """Fit the temperature and the review threshold on the validation split (calibration.json), then
    print what they do on the test split (the validation split where there is none): the expected
    calibration error before and after, and the coverage table."""
    single = loops.Runtime(runtime.device)
    logits, labels = loops.predict(model, valid_loader, single)
    if not len(labels):
        print("calibration: the validation split has no readable image; serving uses temperature 1", flush=True)
        return {}
    fitted = calibration.calibrate(logits, labels, args.target_accuracy)
    calibration.save(fitted, Path(args.model_dir))
    split = "test"
    if test_loader is not None:
        logits, labels = loops.predict(model, test_loader, single)
    if test_loader is None or not len(labels):
        split = "validation"
        logits, labels = loops.predict(model, valid_loader, single)
    truth = labels.tolist()
    before, predicted = calibration.confidences(logits)
    after, _ = calibration.confidences(logits, fitted.temperature)
    correct = [p == t for p, t in zip(predicted, truth, strict=True)]
    ece_before = calibration.expected_calibration_error(before, correct)
    ece_after = calibration.expected_calibration_error(after, correct)
    print(
        f"calibration: temperature {fitted.temperature:.3f} (fitted on validation); expected calibration error "
        f"on the {split} split ({len(truth)} images) {ece_before:.4f} before, {ece_after:.4f} after",
        flush=True,
    )
    print(f"coverage on the {split} split (calibrated confidence at or above the threshold):", flush=True)
    print(calibration.coverage_table(after, correct), flush=True)
    threshold = fitted.recommended_threshold
    print(
        f"recommended review threshold: {threshold:.2f} (the lowest keeping accepted answers "
        f"{fitted.target_accuracy:.0%} accurate on validation; {fitted.expected_under(threshold or 0):.1%} "
        "of validation images under it)",
        flush=True,
    )
    return {
        "calibration": {
            "temperature": fitted.temperature,
            "recommended_threshold": threshold,
            "split": split,
            "ece_before": round(ece_before, 6),
            "ece_after": round(ece_after, 6),
        }
    }


def _write_int8(
    args: argparse.Namespace,
    model: nn.Module,
    valid_loader: Iterable[dogimages.Batch],
    test_loader: Iterable[dogimages.Batch] | None,
) -> dict[str, Any]:
    """The int8 networks, calibrated on validation images, then training ones as the eval transform
    sees them (never the test split), and each one's top-1 agreement with the fp32 weights on the
    test split."""
    if quantization.ENGINE not in torch.backends.quantized.supported_engines:
        print(f"int8: this torch has no {quantization.ENGINE} int8 kernels; serving will run fp32", flush=True)
        return {}
    train_as_served = dogimages.image_folder(Path(args.data_dir), "train", train=False, image_size=args.image_size)
    train_loader = dogimages.loader(
        train_as_served, batch_size=args.batch_size, train=False, workers=args.workers, distributed=False
    )
    calibration = itertools.islice(
        (batch.images for batch in itertools.chain(valid_loader, train_loader) if len(batch.images)),
        max(1, args.calibration_images // args.batch_size),
    )
    made = quantization.quantize(model, calibration, args.image_size)
    for network, module in made.items():
        quantization.save(module, Path(args.model_dir) / network.file)
    if test_loader is None:
        return {}
    cpu = networks.read_cpu_flags()
    measured: dict[str, Any] = {}
    for network, module in made.items():
        agreement = quantization.compare(model, module, (batch.images for batch in test_loader if len(batch.images)))
        measured[network.precision] = agreement.as_dict()
        figures = " ".join(f"{key}={value}" for key, value in agreement.as_dict().items())
        print(f"int8 network {network.file} ({network.precision}) against fp32 on the test split: {figures}")
        if reason := cpu.safe(network):
            print(f"  serving would not use it on this CPU: {reason}", flush=True)
    return {"int8_agreement": measured}


@contextlib.contextmanager
def _profiler(args: argparse.Namespace, active: bool) -> Any:
    """torch.profiler traces for TensorBoard (SageMaker Debugger's profiler is closed to new users)."""
    if not (args.profile and active):
        yield None
        return
    from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(
        activities=activities,
        schedule=schedule(wait=1, warmup=1, active=3, repeat=1),
        on_trace_ready=tensorboard_trace_handler(args.tensorboard_dir),
        record_shapes=True,
        profile_memory=True,
    ) as profiler:
        yield profiler


if __name__ == "__main__":
    main(get_args_parser().parse_args())
