"""`make demo`: the whole system on one machine, with no AWS account and no Docker.

1. generate a small labelled image set and train a model on it with model/training/train.py (seconds);
2. start the local stack (devstack.aws.stack) with that model.tar.gz and the template's defaults but two
   (InferenceMode auto: a backlog of AutoBatchThreshold images or more, a Lambda batch and the uploads
   behind it, goes to batch transform; the demo lowers AutoBatchThreshold to 50 and GatherWindowSeconds
   to 5 s, see PARAMETERS);
3. a trickle: upload a mixed set as a user would (a few bad files, names with spaces and unicode, and
   mixes of every breed at once, which the model is unsure of); the event source mapping hands them to
   the ingest function in a small batch: serverless endpoint;
4. a flood: upload many images at once; they arrive in one large batch, packed into a shard for
   the job builder, which gathers shards over GatherWindowSeconds (shortened to 5 s here, as a
   user overrides a parameter) into one batch transform job of multi-record requests, run by the
   local transform runner, and recorded by the collect function;
5. wait with a progress bar until every upload has an outcome, print them and the review queue (the
   answers under the confidence threshold the model's artifact recommends), stop everything.
Exit 0 only if every upload has an outcome. A part of the stack that cannot run on this machine stops the
demo at once with the reason (exit 1); Ctrl-C, SIGTERM or SIGHUP stop every process it started and
remove its temporary folder.
"""

from __future__ import annotations

import io
import logging
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from PIL import Image

from cli.query import model_cell, review_table, table
from devstack.aws.container import ContainerFailed
from devstack.aws.host import stop_on_signals
from devstack.aws.stack import Stack, StackFailed, StackOptions
from devstack.workloads.quickmodel import train_small_model
from devstack.workloads.up import venv_command
from infra.predictions import plain
from pipeline.adapters.review import ReviewStore

FLOOD = 60
TIMEOUT_S = 240
# The demo's flood is small: the template's threshold (100, full Lambda batches) would keep it on
# the endpoint, and its 120 s gathering window would make the demo wait.
PARAMETERS = {"AutoBatchThreshold": "50", "GatherWindowSeconds": "5"}


def unsure_photos(model_dir: Path, data: Path, count: int = 2, tries: int = 200) -> dict[str, bytes]:
    """Photos the model cannot be sure of: each a mix of every breed's first test photo, weighted so
    that the model is least sure of it (random mixes, then random steps from the best, each kept
    when the model is less sure of it). A model trained on a few generated images is sure of almost
    anything else, even noise or two breeds half and half. Lossless (PNG): the model container sees
    the pixels this process saw."""
    import inference  # torch, from the model's own code
    import numpy as np

    model = inference.model_fn(str(model_dir))
    folders = sorted((data / "test").iterdir())
    first = Image.open(sorted(folders[0].glob("*.jpg"))[0]).convert("RGB")
    photos = [
        np.asarray(Image.open(sorted(f.glob("*.jpg"))[0]).convert("RGB").resize(first.size), dtype=np.float32)
        for f in folders
    ]

    def mix(weights: Any) -> bytes:
        pixels = sum(w * photo for w, photo in zip(weights, photos, strict=True))
        return _png(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)))

    def confidence(weights: Any) -> float:
        answer = inference.predict_fn(inference.input_fn(mix(weights), "image/png"), model)
        return float(answer.confidence)  # type: ignore[union-attr]

    made: dict[str, bytes] = {}
    for n in range(count):
        rng = np.random.default_rng(n)
        candidates = [rng.dirichlet(np.full(len(photos), 0.7)) for _ in range(tries)]
        best = min(candidates, key=confidence)
        lowest = confidence(best)
        for _ in range(tries):
            step = best * np.exp(0.3 * rng.standard_normal(len(photos)))
            step /= step.sum()
            if (sure := confidence(step)) < lowest:
                best, lowest = step, sure
        made[f"incoming/many breeds in one {n + 1}.png"] = mix(best)
    return made


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def trickle(data: Path, unsure: dict[str, bytes]) -> dict[str, bytes]:
    """Photos of each breed under various names, photos the model is unsure of, and a few bad files."""
    files: dict[str, bytes] = dict(unsure)
    for folder in sorted((data / "test").iterdir()):
        for n, path in enumerate(sorted(folder.glob("*.jpg"))[:2]):
            files[f"incoming/{folder.name[4:].replace('_', ' ')} {n + 1}.jpg"] = path.read_bytes()
    photo = next((data / "test").rglob("*.jpg")).read_bytes()
    buffer = io.BytesIO()
    Image.open(io.BytesIO(photo)).save(buffer, "PNG")
    files["incoming/café/chien été (1).png"] = buffer.getvalue()
    files["incoming/notes.jpg"] = b"shopping list: kibble, leash, tennis balls\n"
    files["incoming/empty.jpg"] = b""
    files["incoming/half a dog.jpg"] = photo[: len(photo) // 2]
    return files


def flood(data: Path, count: int) -> dict[str, bytes]:
    """Many photos at once (the model's own training photos: this is a demo of the pipeline)."""
    photos = sorted(p for split in ("test", "valid", "train") for p in (data / split).rglob("*.jpg"))
    files = {f"incoming/flood/{p.parent.name[4:]} {n:03d}.jpg": p.read_bytes() for n, p in enumerate(photos[:count])}
    files["incoming/flood/readme.jpg"] = b"this is not a photo"
    return files


class ProgressBar:
    def __init__(self) -> None:
        self.shown = -1

    def __call__(self, done: int, total: int) -> None:
        if done != self.shown:
            print(f"\r  [{'#' * (30 * done // total):<30}] {done}/{total} have an outcome", end="", flush=True)
            self.shown = done


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    stop_on_signals()
    try:
        return run()
    except (StackFailed, ContainerFailed) as exc:
        print(f"\nmake demo stopped: {exc}", file=sys.stderr, flush=True)
        return 1


def run() -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dogbreed-demo-") as tmp:
        workdir = Path(tmp)
        print("a small model trained on generated images by model/training/train.py (once per content of the")
        print("  code, kept in .cache/models/) ...", flush=True)
        model = train_small_model()
        print(f"  test accuracy {model.test_accuracy:.0%}; packed as {model.archive.name}")
        unsure = unsure_photos(model.model_dir, model.data_dir)
        print("starting the local stack (moto, model container, Lambda environments, event sources) ...")
        options = StackOptions(model_archive=model.archive, workdir=workdir / "stack", parameters=PARAMETERS)
        with Stack(options) as stack:
            bucket = stack.names.bucket
            outcomes: dict[str, dict[str, Any]] = {}
            uploads: dict[str, str] = {}
            for title, files in (
                ("a trickle: a few images, some bad, some unsure", trickle(model.data_dir, unsure)),
                (f"a flood: {FLOOD + 1} images at once", flood(model.data_dir, FLOOD)),
            ):
                print(f"\n{title}: uploading {len(files)} objects to s3://{bucket}/incoming/")
                etags = stack.upload(files)
                uploads.update(etags)
                outcomes.update(stack.wait_for_outcomes(etags, TIMEOUT_S, ProgressBar()))
                print()
            queue = [plain(item) for item in ReviewStore(stack.client("dynamodb", observer=True), stack.names.table)
                     .queue(limit=20)]  # fmt: skip
            logs = stack.logs
            jobs = stack.runner.finished if stack.runner else []
            job_records = dict(stack.runner.job_records) if stack.runner else {}
        print(f"stack stopped; logs were in {logs} (removed with the demo's temporary folder)")

    return summarize(uploads, outcomes, jobs, job_records, queue, time.monotonic() - started)


def summarize(
    uploads: dict[str, str],
    outcomes: dict[str, dict[str, Any]],
    jobs: list[dict[str, Any]],
    job_records: dict[str, int],
    queue: list[dict[str, Any]],
    elapsed_s: float,
) -> int:
    trickle_rows = [outcomes[k] for k in uploads if k in outcomes and not k.startswith("incoming/flood/")]
    flood_rows = [outcomes[k] for k in uploads if k in outcomes and k.startswith("incoming/flood/")]
    print("\nThe trickle (serverless endpoint):\n")
    print(table(trickle_rows))
    print("\nThe flood (batch transform), by outcome:\n")
    tally = Counter(
        (r["status"], r["mode"], model_cell(r), r.get("breed", r.get("error_code", ""))) for r in flood_rows
    )
    for (status, mode, model, what), count in sorted(tally.items()):
        print(f"  {count:>3}  {status:<10} {mode:<10} {model:<26} {what}")
    print(f"\n  {len(jobs)} transform job(s) for {len(flood_rows)} flood images:")
    for job in jobs:
        name, status = job["detail"]["TransformJobName"], job["detail"]["TransformJobStatus"]
        print(f"  transform job {name}: {status}, {job_records.get(name, 0)} images in multi-record requests")
    missing = [key for key in uploads if key not in outcomes]
    statuses = Counter(f"{o['status']} ({o['mode']})" for o in outcomes.values())
    print(
        f"\n{len(outcomes)}/{len(uploads)} uploads have an outcome: "
        + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
    )
    for key in missing:
        print(f"  NO OUTCOME: {key}")
    thresholds = sorted({float(o["threshold"]) for o in outcomes.values() if "threshold" in o})
    shown = ", ".join(f"{t:.2f}" for t in thresholds) or "none (the model recommends none)"
    print(f"\nThe review queue: answers under the confidence threshold ({shown}, the artifact's), least sure first:\n")
    print(review_table(queue))
    print(f"demo took {elapsed_s:.0f} s\n")
    print("To run the stack yourself and query it:")
    print("  make stack                                   # keeps it up; prints the variables to export")
    aws, python = venv_command("aws"), venv_command("python")
    print(f"  {aws} s3 cp my-dog.jpg 's3://dogbreed-images-local/incoming/my dog.jpg'")
    print(f"  {python} -m cli.query image 'incoming/my dog.jpg'")
    print(f"  {python} -m cli.query breed Afghan_hound --limit 5")
    print(f"  {python} -m cli.query problems --output json")
    print(f"  {python} -m cli.query review                 # then: {python} -m cli.label KEY --breed NAME")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())  # with the Makefile's IMPORT_PATH (make demo sets it)
