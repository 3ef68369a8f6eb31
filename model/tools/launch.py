"""Run the model's lifecycle on SageMaker: tune, read the best hyperparameters, train, create the
model, deploy a serverless endpoint, run a batch transform.

    make launch ARGS="tune --data s3://bucket/datasets/dogImages/ --role ROLE_ARN --bucket bucket"
    make launch ARGS="best --tuning-job NAME"
    make launch ARGS="train --data s3://... --role ROLE_ARN --bucket bucket --from-tuning-job NAME"
    make launch ARGS="create-model --model-data s3://.../model.tar.gz --role ROLE_ARN"
    make launch ARGS="deploy --memory-mb 3072 --max-concurrency 5"
    make launch ARGS="transform --input s3://bucket/incoming/ --output s3://bucket/transform-output/"

Tuning and training use the SageMaker Python SDK v3 (`pip install .[launch]`, pinned); their jobs get
model/training/ and model/serving/ as one flat source directory. The serving calls use boto3
directly: they map 1:1 to the service API, and SDK 3.27's serverless endpoint-config helper sends a
mis-cased field. A transform job is the same request the pipeline sends (transform_job_request).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
import recipe
from tuning_metrics import METRIC_DEFINITIONS

from pipeline.adapters.sagemaker import transform_job_request

MODEL = Path(__file__).resolve().parents[1]
ANSWERS = MODEL.parent / "functions" / "answers.py"  # the answer contract, at the Lambda package's root
PYTORCH_VERSION = "2.6"
PY_VERSION = "py312"
OBJECTIVE = "validation:accuracy"


def training_source(directory: Path) -> Path:
    """What a training job runs: the entry points and their modules (model/training/) and the code
    they train and pack into the artifact's code/ (model/serving/ and the answer contract,
    functions/answers.py), side by side in one folder."""
    directory.mkdir(parents=True, exist_ok=True)
    for path in [*sorted((MODEL / "training").glob("*.py")), *sorted((MODEL / "serving").glob("*.py")), ANSWERS]:
        shutil.copy2(path, directory / path.name)
    return directory


def image_uri(region: str, scope: str, instance_type: str) -> str:
    from sagemaker.core import image_uris

    return str(
        image_uris.retrieve(
            framework="pytorch",
            region=region,
            version=PYTORCH_VERSION,
            py_version=PY_VERSION,
            instance_type=instance_type,
            image_scope=scope,
        )
    )


def _session(args: argparse.Namespace) -> Any:
    from sagemaker.core.helper.session_helper import Session

    return Session(boto_session=boto3.Session(region_name=args.region), default_bucket=args.bucket)


def _trainer(
    args: argparse.Namespace,
    source_dir: Path,
    entry_script: str,
    hyperparameters: dict[str, Any],
    base_name: str,
    *,
    checkpoints: bool,
) -> Any:
    """A ModelTrainer for the entry script. With `checkpoints`, the job gets a checkpoint prefix
    named by its launch time, to the second: a managed spot restart of that job restores it, and a
    job launched later never finds it."""
    from sagemaker.core.training.configs import (
        CheckpointConfig,
        Compute,
        OutputDataConfig,
        SourceCode,
        StoppingCondition,
    )
    from sagemaker.train import ModelTrainer
    from sagemaker.train.distributed import Torchrun

    spot = getattr(args, "spot", False)
    prefix = f"s3://{args.bucket}/{base_name}"
    trainer = ModelTrainer(
        sagemaker_session=_session(args),
        role=args.role,
        base_job_name=base_name,
        training_image=image_uri(args.region, "training", args.instance_type),
        source_code=SourceCode(source_dir=str(source_dir), entry_script=entry_script),
        compute=Compute(
            instance_type=args.instance_type,
            instance_count=args.instance_count,
            enable_managed_spot_training=spot,
        ),
        distributed=Torchrun(),  # one process per GPU, on every instance
        hyperparameters=hyperparameters,
        stopping_condition=StoppingCondition(
            max_runtime_in_seconds=args.max_runtime, max_wait_time_in_seconds=2 * args.max_runtime if spot else None
        ),
        output_data_config=OutputDataConfig(s3_output_path=f"{prefix}/output"),
        checkpoint_config=CheckpointConfig(
            s3_uri=f"{prefix}/checkpoints/{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}",
            local_path="/opt/ml/checkpoints",
        )
        if checkpoints
        else None,
    )
    return trainer


def _channels(args: argparse.Namespace) -> list[Any]:
    from sagemaker.core.training.configs import InputData

    channels = [InputData(channel_name="training", data_source=args.data)]
    if getattr(args, "extra_data", None):  # train.py reads it as SM_CHANNEL_EXTRA (--extra-train)
        channels.append(InputData(channel_name="extra", data_source=args.extra_data))
    return channels


def tune(args: argparse.Namespace) -> str:
    from sagemaker.core.parameter import CategoricalParameter, ContinuousParameter
    from sagemaker.train.tuner import HyperparameterTuner

    ranges: dict[str, Any] = {}
    for name, spec in recipe.SEARCHED.items():
        if spec[0] == "continuous":
            ranges[name] = ContinuousParameter(spec[1], spec[2], scaling_type="Logarithmic")
        else:
            ranges[name] = CategoricalParameter(spec[1])
    with tempfile.TemporaryDirectory() as tmp:  # uploaded by tune()
        # the recipe's fixed values, as the final training will get them (train --from-tuning-job);
        # trials keep no checkpoints: a spot interruption restarts a trial from its start
        static = recipe.fixed_hyperparameters(json.loads(args.hyperparameters))
        trainer = _trainer(args, training_source(Path(tmp)), "hpo.py", static, "dogbreed-hpo", checkpoints=False)
        tuner = HyperparameterTuner(
            model_trainer=trainer,
            objective_metric_name=OBJECTIVE,
            objective_type="Maximize",
            hyperparameter_ranges=ranges,
            metric_definitions=METRIC_DEFINITIONS,
            max_jobs=args.max_jobs,
            max_parallel_jobs=args.max_parallel_jobs,
            strategy="Bayesian",
            early_stopping_type="Auto",
            base_tuning_job_name="dogbreed-hpo",
        )
        tuner.tune(inputs=_channels(args), wait=False)
    name = str(tuner.latest_tuning_job.hyper_parameter_tuning_job_name)
    print(f"tuning job {name} started; then: make launch ARGS='best --tuning-job {name}'")
    return name


def best(args: argparse.Namespace) -> dict[str, str]:
    """The hyperparameters of the tuning job's best training job."""
    client = boto3.client("sagemaker", region_name=args.region)
    job = client.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=args.tuning_job)
    best_job = job.get("BestTrainingJob")
    if not best_job:
        raise SystemExit(
            f"tuning job {args.tuning_job} has no completed training job yet ({job['HyperParameterTuningJobStatus']})"
        )
    hyperparameters = {k: v.strip('"') for k, v in best_job["TunedHyperParameters"].items()}
    metric = best_job.get("FinalHyperParameterTuningJobObjectiveMetric", {})
    print(
        json.dumps(
            {"training_job": best_job["TrainingJobName"], "objective": metric, "hyperparameters": hyperparameters}
        )
    )
    return hyperparameters


def tuned_recipe(region: str, tuning_job: str) -> dict[str, str]:
    """The hyperparameters of a tuning job's recipe with its best trial's searched values: its static
    hyperparameters that are recipe arguments (not SageMaker's own), and the tuned ones, unchanged."""
    client = boto3.client("sagemaker", region_name=region)
    job = client.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=tuning_job)
    static = job["TrainingJobDefinition"].get("StaticHyperParameters", {})
    fixed = {k: v.strip('"') for k, v in static.items() if k in recipe.names()}
    return {**fixed, **best(argparse.Namespace(region=region, tuning_job=tuning_job))}


def train(args: argparse.Namespace) -> str:
    overrides = json.loads(args.hyperparameters)
    if args.from_tuning_job:
        if overrides:
            raise SystemExit(
                f"--hyperparameters {sorted(overrides)} with --from-tuning-job: the final training runs the tuning "
                "job's recipe and best values unchanged; tune again with the values you want"
            )
        hyperparameters = tuned_recipe(args.region, args.from_tuning_job)
    else:
        searched = {k: v for k, v in overrides.items() if k in recipe.SEARCHED}
        fixed = {k: v for k, v in overrides.items() if k not in recipe.SEARCHED}
        hyperparameters = {**recipe.fixed_hyperparameters(fixed), **{k: str(v) for k, v in searched.items()}}
    from sagemaker.core.training.configs import MetricDefinition

    with tempfile.TemporaryDirectory() as tmp:  # uploaded by train()
        trainer = _trainer(
            args, training_source(Path(tmp)), "train.py", hyperparameters, "dogbreed-train", checkpoints=True
        )
        trainer.with_tensorboard_output_config()
        trainer.with_metric_definitions(
            [MetricDefinition(name=m["Name"], regex=m["Regex"]) for m in METRIC_DEFINITIONS]
        )
        trainer.train(input_data_config=_channels(args), wait=False)
    name = str(trainer._latest_training_job.training_job_name)
    print(f"training job {name} started; its model.tar.gz goes straight to create-model")
    return name


def create_model(args: argparse.Namespace) -> str:
    client = boto3.client("sagemaker", region_name=args.region)
    client.create_model(
        ModelName=args.model_name,
        ExecutionRoleArn=args.role,
        # serverless endpoints refuse a network-isolated model; transform jobs take one
        EnableNetworkIsolation=args.network_isolation,
        PrimaryContainer={
            "Image": args.image or image_uri(args.region, "inference", "ml.c6i.xlarge"),
            "ModelDataUrl": args.model_data,
            "Environment": {"SAGEMAKER_PROGRAM": "inference.py", "MODEL_PRECISION": args.precision},
        },
    )
    print(f"model {args.model_name} created, serving {args.precision}")
    return str(args.model_name)


def deploy(args: argparse.Namespace) -> str:
    client = boto3.client("sagemaker", region_name=args.region)
    config_name = f"{args.endpoint_name}-{int(time.time())}"
    serverless: dict[str, Any] = {"MemorySizeInMB": args.memory_mb, "MaxConcurrency": args.max_concurrency}
    if args.provisioned_concurrency:
        serverless["ProvisionedConcurrency"] = args.provisioned_concurrency
    client.create_endpoint_config(
        EndpointConfigName=config_name,
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": args.model_name, "ServerlessConfig": serverless}
        ],
    )
    existing = client.list_endpoints(NameContains=args.endpoint_name)["Endpoints"]
    if any(e["EndpointName"] == args.endpoint_name for e in existing):
        client.update_endpoint(EndpointName=args.endpoint_name, EndpointConfigName=config_name)
    else:
        client.create_endpoint(EndpointName=args.endpoint_name, EndpointConfigName=config_name)
    print(f"endpoint {args.endpoint_name} -> {config_name} (creation can take 10 minutes)")
    return config_name


def transform(args: argparse.Namespace) -> str:
    """Classify every object under an S3 prefix; one request per object, per-image error records."""
    client = boto3.client("sagemaker", region_name=args.region)
    name = f"dogbreed-adhoc-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}"
    request = transform_job_request(
        name,
        model_name=args.model_name,
        source={"S3DataType": "S3Prefix", "S3Uri": args.input},
        output_uri=args.output,
        instance_type=args.instance_type,
        instance_count=args.instance_count,
        max_payload_mb=args.max_payload_mb,
        multi_record=False,  # raw images, one per object
    )
    client.create_transform_job(**request)
    print(f"transform job {name} started; outputs: {args.output}<key>.out")
    return name


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--region", default=boto3.Session().region_name or "us-east-1")
    commands = parser.add_subparsers(dest="command", required=True)

    def training(sub: argparse.ArgumentParser, instance_type: str) -> None:
        sub.add_argument("--data", required=True, help="s3:// prefix of a dogImages tree (train/ valid/ test/)")
        sub.add_argument("--role", required=True, help="SageMaker execution role ARN")
        sub.add_argument("--bucket", required=True, help="bucket for code, output and checkpoints")
        sub.add_argument("--instance-type", default=instance_type)
        sub.add_argument("--instance-count", type=int, default=1)
        sub.add_argument("--max-runtime", type=int, default=4 * 3600)

    t = commands.add_parser("tune", help="start the hyperparameter tuning job")
    training(t, "ml.g5.xlarge")
    t.add_argument("--max-jobs", type=int, default=12)
    t.add_argument("--max-parallel-jobs", type=int, default=3)
    t.add_argument("--spot", action="store_true", help="managed spot trials (an interrupted trial starts again)")
    t.add_argument("--hyperparameters", default="{}", help='the recipe\'s fixed values, e.g. \'{"fine-tune": "all"}\'')

    b = commands.add_parser("best", help="print the best hyperparameters of a tuning job")
    b.add_argument("--tuning-job", required=True)

    tr = commands.add_parser("train", help="start the final training job")
    training(tr, "ml.g5.xlarge")
    tr.add_argument("--from-tuning-job", help="train the recipe of this tuning job with its best trial's values")
    tr.add_argument(
        "--hyperparameters", default="{}", help="recipe values, e.g. '{\"epochs\": 20}' (not with a tuning job)"
    )
    tr.add_argument("--spot", action="store_true", help="managed spot training; resumes from checkpoints")
    tr.add_argument(
        "--extra-data",
        help="s3:// prefix of reviewed images (cli.export --to s3://...), added to the training split only",
    )

    m = commands.add_parser("create-model", help="create the SageMaker model from model.tar.gz")
    m.add_argument("--model-data", required=True)
    m.add_argument("--role", required=True)
    m.add_argument("--model-name", default="dogbreed-resnet18")
    m.add_argument("--image", help="inference image; default: the PyTorch 2.6 CPU inference image")
    m.add_argument(
        "--precision", choices=("int8", "fp16", "fp32"), default="int8", help="MODEL_PRECISION: int8 (CPU), fp16 (GPU)"
    )
    m.add_argument(
        "--network-isolation",
        action="store_true",
        help="no network for the container: for a model only transform jobs use (serverless endpoints refuse it)",
    )

    d = commands.add_parser("deploy", help="create or update the serverless endpoint")
    d.add_argument("--model-name", default="dogbreed-resnet18")
    d.add_argument("--endpoint-name", default="dogbreed-serverless")
    d.add_argument("--memory-mb", type=int, choices=(1024, 2048, 3072, 4096, 5120, 6144), default=3072)
    d.add_argument("--max-concurrency", type=int, default=5)
    d.add_argument("--provisioned-concurrency", type=int, default=0)

    x = commands.add_parser("transform", help="batch-classify every image under an S3 prefix")
    x.add_argument("--model-name", default="dogbreed-resnet18")
    x.add_argument("--input", required=True)
    x.add_argument("--output", required=True)
    x.add_argument("--instance-type", default="ml.c6i.xlarge", help="as the template's TransformInstanceType")
    x.add_argument("--instance-count", type=int, default=1)
    x.add_argument("--max-payload-mb", type=int, default=6, help="the largest image the job takes")
    return parser


COMMANDS = {
    "tune": tune,
    "best": best,
    "train": train,
    "create-model": create_model,
    "deploy": deploy,
    "transform": transform,
}


def main(args: argparse.Namespace) -> Any:
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
