"""The cost model's arithmetic (devstack/workloads/cost.py) on known counts, and its price table."""

from __future__ import annotations

import pytest

from devstack.aws.template import load_template, parameter_defaults
from devstack.workloads.cost import (
    HOST_NETWORKS,
    Usage,
    crossover,
    flood_cost,
    instance_comparison,
    job_cost,
    load_prices,
    run_cost,
)

PRICES = {
    "s3_get_per_1000_requests": 0.0004,
    "s3_put_per_1000_requests": 0.005,
    "sqs_per_million_requests": 0.4,
    "dynamodb_per_million_write_units": 0.625,
    "dynamodb_per_million_read_units": 0.125,
    "lambda_arm64_per_gb_second": 0.0000133334,
    "lambda_per_million_requests": 0.2,
    "serverless_inference_per_gb_second": 0.00002,
    "serverless_inference_per_gb_processed": 0.016,
    "transform_instance_per_hour": {"ml.m5.xlarge": 0.36},
    "transform_startup_seconds": 300,
}


def test_a_run_is_priced_service_by_service() -> None:
    usage = Usage(
        images=1000,
        s3_get=2000,
        s3_put=10,
        sqs_requests=1_000_000,
        dynamodb_write_units=4000,
        dynamodb_read_units=2000,
        lambda_requests=500_000,
        lambda_gb_seconds=100.0,
        endpoint_gb_seconds=300.0,
        endpoint_gb_processed=0.5,
        instance_seconds=3600.0,
        jobs=1,
    )
    cost = run_cost(usage, PRICES, "ml.m5.xlarge")
    assert cost["s3"] == pytest.approx(2000 * 0.0004 / 1000 + 10 * 0.005 / 1000)
    assert cost["sqs"] == pytest.approx(0.4)
    assert cost["dynamodb"] == pytest.approx(4000 * 0.625e-6 + 2000 * 0.125e-6)
    assert cost["lambda"] == pytest.approx(100 * 0.0000133334 + 0.1)
    assert cost["endpoint"] == pytest.approx(300 * 0.00002 + 0.5 * 0.016)
    assert cost["transform"] == pytest.approx(0.36)  # one instance-hour


def test_each_job_pays_its_instances_start_up() -> None:
    assert job_cost(PRICES, "ml.m5.xlarge", 1) == pytest.approx(0.03)  # 300 s at $0.36/h
    assert job_cost(PRICES, "ml.m5.xlarge", 2) == pytest.approx(0.06)
    assert flood_cost(1e-5, 0.03, 10_000, 5000) == pytest.approx(0.1 + 2 * 0.03)
    assert flood_cost(1e-5, 0.03, 10_001, 5000) == pytest.approx(0.10001 + 3 * 0.03)
    assert flood_cost(1e-5, 0.03, 10_000, None) == pytest.approx(0.1)  # serverless: no jobs


def test_the_crossover_is_where_a_job_pays_for_itself() -> None:
    assert crossover(5e-6, 3e-6, 0.03) == 15_000
    assert flood_cost(5e-6, 0, 15_000, None) >= flood_cost(3e-6, 0.03, 15_000, 15_000)
    assert flood_cost(5e-6, 0, 14_999, None) < flood_cost(3e-6, 0.03, 14_999, 15_000)
    assert crossover(3e-6, 5e-6, 0.03) is None  # batch never catches up


def test_the_price_table_says_where_and_when_and_prices_the_default_instance() -> None:
    prices = load_prices()
    assert prices["region"] and prices["recorded"] and prices["sources"]
    assert set(PRICES) <= set(prices)
    default = parameter_defaults(load_template())["TransformInstanceType"]
    assert default in prices["transform_instance_per_hour"]


def test_instance_types_are_compared_at_the_measured_rate() -> None:
    usage = Usage(1000, 0, 0, 0, 0, 0, 0, 0.0, 0.0, 0.0, instance_seconds=36.0, jobs=1)  # 0.036 s an image
    prices = {"transform_instance_per_hour": {"ml.c6i.xlarge": 0.2, "ml.m5.xlarge": 0.25, "ml.g4dn.xlarge": 0.7}}
    compared = instance_comparison(usage, prices)
    assert compared == pytest.approx({"ml.c6i.xlarge": 0.002, "ml.m5.xlarge": 0.0025})  # GPU types are not CPU rates
    # every CPU type of the price table says which network its hosts serve
    cpu_types = [t for t in load_prices()["transform_instance_per_hour"] if not t.startswith("ml.g")]
    assert all(t.split(".")[1] in HOST_NETWORKS for t in cpu_types)
