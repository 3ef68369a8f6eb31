"""Try a candidate model on images already classified, before it answers for everyone.

    make compare ARGS="--stack dogbreed --candidate s3://my-models/v2/model.tar.gz --dry-run"   # sample, cost
    make compare ARGS="--stack dogbreed --candidate s3://my-models/v2/model.tar.gz --sample 1000"
    make compare ARGS="--candidate s3://..."               (against `make stack`, its exported variables)

A serverless endpoint cannot run two variants, so the candidate is compared offline, on the stack's
own images, in AWS:
1. Sample: one Scan of the predictions table for the CLASSIFIED images under --prefix, and the labels
   people gave (cli.label). The sample is stratified by breed (every breed first, then each breed in
   proportion to its share), labelled images first within their breed; --seed picks another sample.
2. Cost: printed before anything starts (--dry-run stops there).
3. Shards, in AWS: one small request per image to the reclassify queue, naming the trial; the ingest
   function reads and checks each image under its own role and writes the sample into shards of the
   flood path's format under trials/<trial>/ (pipeline/logic/trial.py). No image passes through the
   machine that runs this, and nothing is written to the predictions table.
4. The candidate: copied into the trial's folder (CopyObject), made a SageMaker model like the stack's
   transform model (its image, environment and role), and run as one transform job over the shards; its
   answers go to trials/<trial>/output/. The model is deleted afterwards; the lifecycle rule expires
   the trial's files after 7 days.
5. Report: agreement with the current answers, the breeds that changed most, the confidence shift, and
   both models' accuracy on the labelled images; printed and written to trials/<trial>/report.json.

The table, bucket, queue and transform model come from --table/--bucket/--queue-url/--model-name, else
PREDICTIONS_TABLE, IMAGES_BUCKET, RECLASSIFY_QUEUE_URL, TRANSFORM_MODEL_NAME (which `make stack`
prints), else --stack's outputs. The job's instances are the stack's TransformInstanceType and
TransformInstanceCount (--stack's parameters, else the template's defaults).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import answers
from cli.query import stack_outputs, stack_parameters
from cli.reclassify import send_requests
from infra.predictions import record
from infra.prices import load_prices
from infra.template import load_template, parameter_defaults
from pipeline.adapters.dynamodb import record_ref
from pipeline.adapters.review import LABEL_KEY
from pipeline.adapters.sagemaker import TransformJobs
from pipeline.logic.jobs import TERMINAL_JOB_STATES, QueuedShard
from pipeline.logic.notifications import trial_request
from pipeline.logic.s3uri import S3Uri
from pipeline.logic.trial import TrialFiles, new_trial_id, read_index

SAMPLE_ATTRIBUTES = (
    "image_id",
    "bucket",
    "key",
    "etag",
    "size",
    "uploaded_at",
    "label",
    "breed",
    "confidence",
    "model_version",
    "of_image",
    "given_label",
    "given_breed",
)
# For the estimate: the ingest function's time per image, the slowest batch of the full-scale soaks (17 s
# for 100 photos, docs/performance.md), and a transform instance's images per second, under what make
# serving-benchmark measured on 2 vCPUs (102 a second, one image a request) for a 4-vCPU instance.
INGEST_SECONDS_PER_IMAGE = 0.17
TRANSFORM_IMAGES_PER_SECOND = 50.0
CHANGED_BREEDS = 10  # breeds listed in the report


# -- the sample ------------------------------------------------------------------------------------


def scan(dynamodb: Any, table: str, bucket: str, prefix: str) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The CLASSIFIED records under the prefix, and the labels of their content by image id (one Scan)."""
    names = {f"#{name}": name for name in SAMPLE_ATTRIBUTES} | {"#status": "status"}
    pages = dynamodb.get_paginator("scan").paginate(
        TableName=table,
        FilterExpression="(begins_with(#image_id, :id) AND #status = :classified) OR begins_with(#image_id, :label)",
        ExpressionAttributeNames=names,
        ExpressionAttributeValues={
            ":id": {"S": f"{bucket}/{prefix}"},
            ":classified": {"S": "CLASSIFIED"},
            ":label": {"S": LABEL_KEY},
        },
        ProjectionExpression=", ".join(f"#{name}" for name in SAMPLE_ATTRIBUTES),
    )
    records: list[dict[str, Any]] = []
    labels: dict[str, dict[str, Any]] = {}
    for page in pages:
        for item in map(record, page["Items"]):
            if item["image_id"].startswith(LABEL_KEY):
                labels[item["of_image"]] = item
            else:
                records.append(item)
    by_id = {item["image_id"]: item for item in records}
    # a label stands for the content it was given for: one of older content says nothing of this answer
    return records, {i: label for i, label in labels.items() if i in by_id and by_id[i]["etag"] == label["etag"]}


def stratified_sample(
    records: list[dict[str, Any]], labelled: Iterable[str], size: int, seed: str = ""
) -> list[dict[str, Any]]:
    """`size` records, stratified by breed: the i-th of a breed's n records ranks i/n, so every breed's
    first comes before any breed's second and each breed then enters in proportion to its share. Within
    a breed, labelled images first, then an order drawn from the seed."""
    labelled = set(labelled)

    def drawn(item: dict[str, Any]) -> str:
        return hashlib.sha256(f"{seed}\0{item['image_id']}".encode()).hexdigest()

    by_breed: dict[str, list[dict[str, Any]]] = {}
    for item in records:
        by_breed.setdefault(str(item["breed"]), []).append(item)
    ranked: list[tuple[float, str, dict[str, Any]]] = []
    for members in by_breed.values():
        members.sort(key=lambda item: (item["image_id"] not in labelled, drawn(item)))
        ranked += [(number / len(members), drawn(item), item) for number, item in enumerate(members)]
    ranked.sort(key=lambda entry: entry[:2])
    return [item for _, _, item in ranked[:size]]


# -- what it costs ---------------------------------------------------------------------------------


def estimate(
    prices: Mapping[str, Any],
    images: int,
    instance_type: str,
    instance_count: int,
    ingest_memory_mb: int,
    batch_size: int,
) -> dict[str, float]:
    """The trial's cost in dollars, by part (prices.json's list prices)."""
    shards = max(1, images // batch_size)  # at least one shard an ingest batch
    instance_s = instance_count * prices["transform_startup_seconds"] + images / TRANSFORM_IMAGES_PER_SECOND
    return {
        # reads of the images; the artifact's copy, shards, indexes, manifest, outputs and report
        "s3": images * prices["s3_get_per_1000_requests"] / 1000
        + (3 * shards + 3) * prices["s3_put_per_1000_requests"] / 1000,
        "sqs": (images / 10 + 2 * shards) * prices["sqs_per_million_requests"] / 1e6,
        "lambda": images * INGEST_SECONDS_PER_IMAGE * ingest_memory_mb / 1024 * prices["lambda_arm64_per_gb_second"]
        + shards * prices["lambda_per_million_requests"] / 1e6,
        "transform": instance_s * prices["transform_instance_per_hour"][instance_type] / 3600,
    }


# -- the trial in AWS ------------------------------------------------------------------------------


@dataclass
class Sharded:
    shards: list[S3Uri] = field(default_factory=list)
    images: set[str] = field(default_factory=set)
    refused: dict[str, str] = field(default_factory=dict)  # key -> why the ingest function left it out


def sharded(s3: Any, files: TrialFiles) -> Sharded:
    """What the ingest function has written of the trial so far, from its index files."""
    found = Sharded()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=files.bucket, Prefix=files.index.key):
        for entry in page.get("Contents", []):
            shard, keys, refused = read_index(s3.get_object(Bucket=files.bucket, Key=entry["Key"])["Body"].read())
            if shard is not None:
                found.shards.append(shard)
            found.images.update(keys)
            found.refused.update(refused)
    return found


def wait_for_shards(
    s3: Any, files: TrialFiles, keys: set[str], timeout_s: float, out: Any, poll_s: float = 5.0
) -> Sharded:
    deadline = time.monotonic() + timeout_s
    while True:
        found = sharded(s3, files)
        done = len(keys & (found.images | set(found.refused)))
        print(f"  {done:,} of {len(keys):,} images in the trial's shards", file=out, flush=True)
        if done == len(keys):
            return found
        if time.monotonic() > deadline:
            raise TrialFailed(
                f"after {timeout_s:.0f} s the ingest function has taken {done:,} of {len(keys):,} images: "
                "see its log group, ReclassifyQueueStalledAlarm and the uploads' dead-letter queue"
            )
        time.sleep(poll_s)


class TrialFailed(Exception):
    """The trial cannot go on; the message says why and where to look."""


def run_candidate(
    sagemaker: Any,
    s3: Any,
    files: TrialFiles,
    serving_model: str,
    shards: list[S3Uri],
    transform: Mapping[str, Any],
    timeout_s: float,
    out: Any,
) -> dict[str, Any]:
    """Make the candidate a model like the serving transform model, run it over the shards, and return the
    job's description; the model is deleted after."""
    serving = sagemaker.describe_model(ModelName=serving_model)
    container = serving["PrimaryContainer"]
    sagemaker.create_model(
        ModelName=files.name,
        ExecutionRoleArn=serving["ExecutionRoleArn"],
        PrimaryContainer={
            "Image": container["Image"],
            "ModelDataUrl": str(files.model),
            "Environment": container.get("Environment", {}),
        },
        EnableNetworkIsolation=bool(serving.get("EnableNetworkIsolation", False)),
    )
    try:
        job = files.job
        manifest = job.manifest_doc(QueuedShard(shard, ()) for shard in shards)
        s3.put_object(Bucket=files.bucket, Key=job.manifest.key, Body=json.dumps(manifest).encode())
        jobs = TransformJobs(sagemaker, model_name=files.name, job_prefix="trial", **transform)
        jobs.start(job.name, str(job.manifest), str(job.output))
        print(f"  transform job {job.name} started", file=out, flush=True)
        deadline, status = time.monotonic() + timeout_s, None
        while status not in TERMINAL_JOB_STATES:
            if time.monotonic() > deadline:
                sagemaker.stop_transform_job(TransformJobName=job.name)
                raise TrialFailed(f"transform job {job.name} still {status} after {timeout_s:.0f} s: stopped")
            time.sleep(5.0 if status else 0.0)
            description = sagemaker.describe_transform_job(TransformJobName=job.name)
            status = description["TransformJobStatus"]
        if status != "Completed":
            raise TrialFailed(f"transform job {job.name} {status}: {description.get('FailureReason', 'no reason')}")
        return dict(description)
    finally:
        sagemaker.delete_model(ModelName=files.name)


def read_answers(s3: Any, files: TrialFiles, shards: list[S3Uri]) -> dict[str, answers.Answer]:
    found: dict[str, answers.Answer] = {}
    for shard in shards:
        output = files.job.output_for(shard.key)
        body = s3.get_object(Bucket=output.bucket, Key=output.key)["Body"].read()
        answered, broken = answers.loads_lines(body)
        if broken:
            raise TrialFailed(f"{output} has lines that are no answer: {broken[:3]}")
        found.update(answered)
    return found


# -- the report ------------------------------------------------------------------------------------


@dataclass
class BreedChange:
    breed: str  # the current answer
    images: int
    changed: int
    to: str  # the candidate's most common other answer for them ("" if none changed)


@dataclass
class Comparison:
    sample: int
    compared: int  # images the candidate answered
    agreed: int
    not_compared: dict[str, str]  # key -> why (left out by the ingest function, or the candidate's error)
    changed: list[BreedChange]
    confidence_current: float  # mean, over the images compared
    confidence_candidate: float
    confidence_shift_median: float
    labelled: int
    right_current: int
    right_candidate: int

    def lines(self) -> list[str]:
        share = self.agreed / self.compared if self.compared else 0.0
        lines = [
            f"compared {self.compared:,} of {self.sample:,} sampled images",
            f"agreement with the current answers: {share:.1%} ({self.agreed:,} the same breed)",
            f"confidence: {self.confidence_current:.3f} now, {self.confidence_candidate:.3f} with the candidate "
            f"(mean shift {self.confidence_candidate - self.confidence_current:+.3f}, "
            f"median {self.confidence_shift_median:+.3f})",
        ]
        if self.labelled:
            lines.append(
                f"on the {self.labelled:,} labelled images: current {self.right_current / self.labelled:.1%} right, "
                f"candidate {self.right_candidate / self.labelled:.1%}"
            )
        else:
            lines.append("no labelled image in the sample: accuracy not measured (label answers with cli.label)")
        if self.changed:
            lines.append("breeds that changed most (current answer: changed / images, most often to):")
            lines += [f"  {c.breed}: {c.changed} / {c.images}, to {c.to}" for c in self.changed]
        for key, why in sorted(self.not_compared.items()):
            lines.append(f"not compared: {key}: {why}")
        return lines


def compare(
    sample: list[dict[str, Any]],
    answered: Mapping[str, answers.Answer],
    refused: Mapping[str, str],
    labels: Mapping[str, Mapping[str, Any]],
) -> Comparison:
    """The candidate's answers against the current records and the labels of the sampled images."""
    not_compared: dict[str, str] = {}
    pairs: list[tuple[dict[str, Any], answers.Prediction]] = []
    for item in sample:
        answer = answered.get(item["key"])
        if isinstance(answer, answers.Prediction):
            pairs.append((item, answer))
        elif isinstance(answer, answers.ErrorRecord):
            not_compared[item["key"]] = f"the candidate refused it: {answer.code}: {answer.message}"
        else:
            not_compared[item["key"]] = refused.get(item["key"], "no answer from the candidate")
    per_breed: dict[str, Counter[str]] = {}
    for item, prediction in pairs:
        per_breed.setdefault(str(item["breed"]), Counter())[prediction.class_name] += 1
    changed = []
    for breed, answers_of in per_breed.items():
        others = Counter({name: n for name, n in answers_of.items() if name != breed})
        if others:
            top = others.most_common(1)[0][0]
            changed.append(BreedChange(breed, sum(answers_of.values()), sum(others.values()), top))
    changed.sort(key=lambda c: (-c.changed, -c.changed / c.images, c.breed))
    shifts = [prediction.confidence - float(item["confidence"]) for item, prediction in pairs]
    judged = [(item, prediction, labels[item["image_id"]]) for item, prediction in pairs if item["image_id"] in labels]
    return Comparison(
        sample=len(sample),
        compared=len(pairs),
        agreed=sum(prediction.label == item["label"] for item, prediction in pairs),
        not_compared=not_compared,
        changed=changed[:CHANGED_BREEDS],
        confidence_current=statistics.fmean(float(item["confidence"]) for item, _ in pairs) if pairs else 0.0,
        confidence_candidate=statistics.fmean(p.confidence for _, p in pairs) if pairs else 0.0,
        confidence_shift_median=statistics.median(shifts) if shifts else 0.0,
        labelled=len(judged),
        right_current=sum(item["label"] == label["given_label"] for item, _, label in judged),
        right_candidate=sum(prediction.label == label["given_label"] for _, prediction, label in judged),
    )


# -- the command -----------------------------------------------------------------------------------


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidate", required=True, help="the candidate's model.tar.gz (s3://...)")
    parser.add_argument("--sample", type=int, default=1000, help="images to compare on (default 1000)")
    parser.add_argument("--seed", default="", help="draw another sample")
    parser.add_argument("--prefix", default="incoming/", help="only images under this prefix")
    parser.add_argument("--stack", help="read the stack's names and transform settings from this CloudFormation stack")
    parser.add_argument("--table", default=os.environ.get("PREDICTIONS_TABLE"), help="the predictions table")
    parser.add_argument("--bucket", default=os.environ.get("IMAGES_BUCKET"), help="the images bucket")
    parser.add_argument("--queue-url", default=os.environ.get("RECLASSIFY_QUEUE_URL"), help="the reclassify queue")
    parser.add_argument("--model-name", default=os.environ.get("TRANSFORM_MODEL_NAME"), help="the transform model")
    parser.add_argument("--timeout-min", type=float, default=60, help="longest wait for the shards, then the job")
    parser.add_argument("--dry-run", action="store_true", help="print the sample's size and the cost, start nothing")
    return parser


def main(args: argparse.Namespace, clients: dict[str, Any] | None = None, out: Any = sys.stdout) -> int:
    import boto3

    names = ("dynamodb", "sqs", "s3", "sagemaker", "cloudformation")
    clients = clients or {name: boto3.client(name) for name in names}
    template = load_template()
    settings = {k: str(v) for k, v in parameter_defaults(template).items()}
    table, bucket, queue_url, model_name = args.table, args.bucket, args.queue_url, args.model_name
    if args.stack:
        outputs = stack_outputs(clients["cloudformation"], args.stack)
        settings |= stack_parameters(clients["cloudformation"], args.stack)
        table, bucket = table or outputs["PredictionsTableName"], bucket or outputs["ImagesBucketName"]
        queue_url, model_name = queue_url or outputs["ReclassifyQueueUrl"], model_name or outputs["TransformModelName"]
    if not (table and bucket and queue_url and model_name):
        print(
            "give --stack, or --table, --bucket, --queue-url and --model-name (make stack prints their variables)",
            file=sys.stderr,
        )
        return 2
    candidate = S3Uri.parse(args.candidate)
    records, labels = scan(clients["dynamodb"], table, bucket, args.prefix)
    sample = stratified_sample(records, labels, args.sample, args.seed)
    if not sample:
        print(f"no classified image under s3://{bucket}/{args.prefix} to compare on", file=sys.stderr)
        return 1
    instance_type, instance_count = settings["TransformInstanceType"], int(settings["TransformInstanceCount"])
    transform: dict[str, Any] = {
        "instance_type": instance_type,
        "instance_count": instance_count,
        "max_payload_mb": int(settings["TransformMaxPayloadMB"]),
    }
    ingest = template["Resources"]["IngestFunction"]["Properties"]
    memory = int(ingest.get("MemorySize", template["Globals"]["Function"]["MemorySize"]))
    cost = estimate(load_prices(), len(sample), instance_type, instance_count, memory, int(settings["BatchSize"]))
    breeds = len({item["breed"] for item in sample})
    sampled_labels = {item["image_id"]: labels[item["image_id"]] for item in sample if item["image_id"] in labels}
    print(
        f"sample: {len(sample):,} of {len(records):,} classified images, {breeds} breeds, "
        f"{len(sampled_labels):,} labelled",
        file=out,
    )
    print(
        f"estimated cost: ${sum(cost.values()):.2f} ("
        + ", ".join(f"{k} ${v:.3f}" for k, v in cost.items())
        + f"; {transform['instance_count']} x {transform['instance_type']} with its start-up, list prices of "
        "infra/prices.json)",
        file=out,
        flush=True,
    )
    if args.dry_run:
        return 0
    files = TrialFiles(bucket, new_trial_id(datetime.now(UTC)))
    print(f"trial {files.trial}: {files.root}", file=out, flush=True)
    clients["s3"].copy_object(
        Bucket=bucket, Key=files.model.key, CopySource={"Bucket": candidate.bucket, "Key": candidate.key}
    )
    refs = {item["key"]: record_ref(item) for item in sample}
    requests = (trial_request(files.trial, ref) for ref in refs.values())
    _, refused = send_requests(clients["sqs"], queue_url, requests, out)
    if refused:
        print(f"{refused:,} requests refused by SQS twice: run the command again", file=sys.stderr)
        return 1
    try:
        found = wait_for_shards(clients["s3"], files, set(refs), args.timeout_min * 60, out)
        if found.shards:  # none when every sampled image is gone or changed since: nothing to run
            timeout_s = args.timeout_min * 60
            run_candidate(
                clients["sagemaker"], clients["s3"], files, model_name, found.shards, transform, timeout_s, out
            )
        answered = read_answers(clients["s3"], files, found.shards)
    except TrialFailed as exc:
        print(f"trial {files.trial} failed: {exc}", file=sys.stderr)
        return 1
    report = compare(sample, answered, found.refused, sampled_labels)
    clients["s3"].put_object(Bucket=bucket, Key=files.report.key, Body=json.dumps(asdict(report), indent=2).encode())
    print("\n".join(report.lines()), file=out)
    print(f"report: {files.report}", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
