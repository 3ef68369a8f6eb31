"""The SageMaker launchers send the expected requests, checked against moto's SageMaker API."""

from __future__ import annotations

import argparse
import json
from typing import Any

import boto3
import hpo
import launch
import pytest
import recipe
import requests
import train
from tuning_metrics import METRIC_DEFINITIONS

from devstack.aws.account import ACCOUNT, REGION
from tests.conftest import REPO

ROLE = f"arn:aws:iam::{ACCOUNT}:role/dogbreed-sagemaker"
BUCKET = "dogbreed-ml"


@pytest.fixture
def sagemaker(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    requests.post(f"{moto_url}/moto-api/reset", timeout=10)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("SAGEMAKER_VALIDATE_ROLE", "false")
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    return boto3.client("sagemaker")


def run(*argv: str) -> Any:
    return launch.main(launch.get_args_parser().parse_args(["--region", REGION, *argv]))


def test_tune_searches_the_specified_space_with_the_scripts_metrics(sagemaker: Any) -> None:
    name = run("tune", "--data", f"s3://{BUCKET}/datasets/dogImages/", "--role", ROLE, "--bucket", BUCKET,
               "--max-jobs", "12", "--max-parallel-jobs", "3")  # fmt: skip
    job = sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
    config = job["HyperParameterTuningJobConfig"]
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Maximize", "MetricName": "validation:accuracy"}
    assert config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 12, "MaxParallelTrainingJobs": 3}
    ranges = config["ParameterRanges"]
    assert ranges["ContinuousParameterRanges"] == [
        {"Name": "lr", "MinValue": "0.0001", "MaxValue": "0.01", "ScalingType": "Logarithmic"}
    ]
    categorical = {r["Name"]: r["Values"] for r in ranges["CategoricalParameterRanges"]}
    assert categorical == {"batch-size": ["16", "32", "64"], "epochs": ["5", "10", "20"], "optimizer": ["adam", "sgd"]}
    definition = job["TrainingJobDefinition"]
    assert definition["AlgorithmSpecification"]["MetricDefinitions"] == METRIC_DEFINITIONS
    assert definition["StaticHyperParameters"]["sagemaker_program"] == "hpo.py"
    # the recipe's fixed values go to every trial, as the final training gets them; trials keep no checkpoints
    static = {k: v.strip('"') for k, v in definition["StaticHyperParameters"].items()}
    assert recipe.fixed_hyperparameters().items() <= static.items() and not set(recipe.SEARCHED) & set(static)
    assert "CheckpointConfig" not in definition
    assert "pytorch-training:2.6" in definition["AlgorithmSpecification"]["TrainingImage"]
    (channel, *_) = definition["InputDataConfig"]
    assert channel["ChannelName"] == "training"
    assert channel["DataSource"]["S3DataSource"]["S3Uri"] == f"s3://{BUCKET}/datasets/dogImages/"


def test_best_reads_the_tuned_hyperparameters(sagemaker: Any, capsys: pytest.CaptureFixture[str]) -> None:
    name = run("tune", "--data", f"s3://{BUCKET}/d/", "--role", ROLE, "--bucket", BUCKET)
    expected = sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)["BestTrainingJob"]
    capsys.readouterr()
    best = run("best", "--tuning-job", name)
    assert best == {k: v.strip('"') for k, v in expected["TunedHyperParameters"].items()}
    assert json.loads(capsys.readouterr().out)["training_job"] == expected["TrainingJobName"]


def test_train_runs_train_py_distributed_on_spot_with_checkpoints(sagemaker: Any) -> None:
    name = run("train", "--data", f"s3://{BUCKET}/datasets/dogImages/", "--role", ROLE, "--bucket", BUCKET,
               "--spot", "--instance-count", "2", "--hyperparameters", '{"epochs": 20, "lr": 0.0005}')  # fmt: skip
    job = sagemaker.describe_training_job(TrainingJobName=name)
    assert job["HyperParameters"] == {**recipe.fixed_hyperparameters(), "epochs": "20", "lr": "0.0005"}
    assert job["EnableManagedSpotTraining"] is True
    assert job["StoppingCondition"]["MaxWaitTimeInSeconds"] >= job["StoppingCondition"]["MaxRuntimeInSeconds"]
    # a checkpoint prefix of the job's own: a spot restart resumes it, no later training ever finds it
    assert job["CheckpointConfig"]["LocalPath"] == "/opt/ml/checkpoints"
    assert job["CheckpointConfig"]["S3Uri"].startswith(f"s3://{BUCKET}/dogbreed-train/checkpoints/20")
    assert job["TensorBoardOutputConfig"]["LocalPath"] == "/opt/ml/output/tensorboard"
    assert job["ResourceConfig"]["InstanceCount"] == 2
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in job["InputDataConfig"]}
    assert channels["training"] == f"s3://{BUCKET}/datasets/dogImages/"
    assert "code" in channels  # the training source directory (launch.training_source)
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=BUCKET)["Contents"]]
    uploaded = {k.rsplit("/", 1)[-1] for k in keys if "/input/code/" in k}
    shipped = {p.name for part in ("training", "serving") for p in (REPO / "model" / part).glob("*.py")}
    assert shipped <= uploaded  # model/training/ and model/serving/, side by side
    assert not uploaded & {"launch.py", "benchmark.py", "dataset_tool.py"}


def test_train_adds_reviewed_images_as_the_extra_channel(sagemaker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    name = run("train", "--data", f"s3://{BUCKET}/datasets/dogImages/", "--role", ROLE, "--bucket", BUCKET,
               "--extra-data", f"s3://{BUCKET}/reviewed/")  # fmt: skip
    job = sagemaker.describe_training_job(TrainingJobName=name)
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in job["InputDataConfig"]}
    assert channels["extra"] == f"s3://{BUCKET}/reviewed/"
    monkeypatch.setenv("SM_CHANNEL_EXTRA", "/opt/ml/input/data/extra")  # where SageMaker puts that channel
    assert train.get_args_parser().parse_args([]).extra_train == "/opt/ml/input/data/extra"


def script_args(script: Any, hyperparameters: dict[str, str]) -> argparse.Namespace:
    """What a training container does with a job's hyperparameters: `--name value` to the entry script."""
    argv = [item for k, v in hyperparameters.items() if not k.startswith("sagemaker_") for item in (f"--{k}", v)]
    return script.get_args_parser().parse_args(argv)


def test_the_final_training_runs_the_tuned_recipe_unchanged(sagemaker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a tuning job of a recipe other than the defaults, whose best trial had these searched values
    # (moto's tuning jobs run no trials, so its BestTrainingJob has placeholder values)
    name = run("tune", "--data", f"s3://{BUCKET}/d/", "--role", ROLE, "--bucket", BUCKET,
               "--hyperparameters", '{"fine-tune": "all", "label-smoothing": 0.2}')  # fmt: skip
    tuning = sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
    static = {k: v.strip('"') for k, v in tuning["TrainingJobDefinition"]["StaticHyperParameters"].items()}
    tuned = {"lr": "0.0031", "batch-size": "64", "epochs": "10", "optimizer": "sgd"}
    monkeypatch.setattr(launch, "best", lambda args: tuned if args.tuning_job == name else {})
    # WHEN the final training takes it
    job_name = run(
        "train", "--data", f"s3://{BUCKET}/d/", "--role", ROLE, "--bucket", BUCKET, "--from-tuning-job", name
    )
    final = sagemaker.describe_training_job(TrainingJobName=job_name)["HyperParameters"]
    # THEN the best trial's arguments and the final training's define the same recipe
    best_trial = script_args(hpo, {**static, **tuned})
    final_args = script_args(train, final)
    assert recipe.of(best_trial) == recipe.of(final_args)
    assert (final_args.fine_tune, final_args.label_smoothing) == ("all", 0.2)
    # AND another trial of that tuning job differs from it in the searched values only
    other = script_args(hpo, {**static, "lr": "0.0042", "batch-size": "64", "epochs": "5", "optimizer": "sgd"})
    differs = {k for k, v in recipe.of(other).items() if recipe.of(final_args)[k] != v}
    assert differs and differs <= set(recipe.SEARCHED)
    # AND values of another recipe cannot be slipped in beside the tuning job's
    with pytest.raises(SystemExit, match="unchanged"):
        run("train", "--data", f"s3://{BUCKET}/d/", "--role", ROLE, "--bucket", BUCKET, "--from-tuning-job", name,
            "--hyperparameters", '{"fine-tune": "head"}')  # fmt: skip


def test_create_model_deploy_and_transform(sagemaker: Any) -> None:
    run("create-model", "--model-data", f"s3://{BUCKET}/out/model.tar.gz", "--role", ROLE)
    model = sagemaker.describe_model(ModelName="dogbreed-resnet18")
    assert model["PrimaryContainer"]["ModelDataUrl"] == f"s3://{BUCKET}/out/model.tar.gz"
    assert model["PrimaryContainer"]["Environment"] == {"SAGEMAKER_PROGRAM": "inference.py", "MODEL_PRECISION": "int8"}
    assert "pytorch-inference:2.6" in model["PrimaryContainer"]["Image"]
    assert "cpu" in model["PrimaryContainer"]["Image"]  # serverless endpoints have no GPU

    config_name = run("deploy", "--memory-mb", "4096", "--max-concurrency", "8")
    config = sagemaker.describe_endpoint_config(EndpointConfigName=config_name)
    (variant,) = config["ProductionVariants"]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 4096, "MaxConcurrency": 8}
    assert variant["ModelName"] == "dogbreed-resnet18"
    assert sagemaker.describe_endpoint(EndpointName="dogbreed-serverless")["EndpointConfigName"] == config_name

    name = run("transform", "--input", f"s3://{BUCKET}/incoming/", "--output", f"s3://{BUCKET}/transform-output/")
    job = sagemaker.describe_transform_job(TransformJobName=name)
    assert job["TransformInput"]["SplitType"] == "None"
    assert job["TransformInput"]["ContentType"] == "application/x-image"
    assert job["Environment"] == {"BAD_INPUT_POLICY": "record"}
    assert job["MaxPayloadInMB"] * job["MaxConcurrentTransforms"] <= 100


def test_a_network_isolated_model_runs_transform_jobs_but_no_serverless_endpoint(sagemaker: Any) -> None:
    """Serverless endpoints do not support network isolation (SageMaker's "Feature exclusions");
    moto's SageMaker is patched to refuse it as SageMaker does (devstack/aws/moto_sagemaker.py)."""
    from botocore.exceptions import ClientError

    run("create-model", "--model-data", f"s3://{BUCKET}/out/model.tar.gz", "--role", ROLE, "--network-isolation")
    with pytest.raises(ClientError) as refused:
        run("deploy")
    assert refused.value.response["Error"]["Code"] == "ValidationException"
    assert "EnableNetworkIsolation" in refused.value.response["Error"]["Message"]
    name = run("transform", "--input", f"s3://{BUCKET}/incoming/", "--output", f"s3://{BUCKET}/transform-output/")
    assert sagemaker.describe_transform_job(TransformJobName=name)["ModelName"] == "dogbreed-resnet18"


def test_dataset_upload_keeps_the_dogimages_layout(sagemaker: Any, dataset: Any) -> None:
    import dataset_tool

    uri = dataset_tool.upload(dataset, BUCKET, "datasets/dogImages/", boto3.client("s3"))
    assert uri == f"s3://{BUCKET}/datasets/dogImages/"
    keys = {o["Key"] for page in boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
            for o in page.get("Contents", [])}  # fmt: skip
    local = {f"datasets/dogImages/{p.relative_to(dataset).as_posix()}" for p in dataset.rglob("*") if p.is_file()}
    assert keys == local
    assert "datasets/dogImages/train/001.Affenpinscher/Affenpinscher_00000.jpg" in keys
