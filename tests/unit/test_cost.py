"""The cost model's arithmetic (devstack/workloads/cost.py) on known counts, and its price table."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from devstack.aws.meter import RequestMeter, index_hash_keys
from devstack.workloads.cost import (
    FLOODS,
    HOSTS,
    MILLION,
    Rate,
    Usage,
    auto_batch_backlog,
    cheapest_cpu_type,
    compare,
    crossover,
    flood_cost,
    idle_cost,
    rates,
    run_cost,
    serverless_range,
)
from infra.prices import job_cost, load_cpu_class_rates, load_prices
from infra.template import load_template, parameter_defaults

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


M5 = Rate("ml.m5.xlarge", images_per_s=100.0, serves="int8", basis="known")


def usage(images: int = 1000, **counts: float) -> Usage:
    fields = dict.fromkeys(Usage.__dataclass_fields__, 0) | {"images": images} | counts
    return Usage(**fields)  # type: ignore[arg-type]


def test_a_run_is_priced_service_by_service() -> None:
    run = usage(
        s3_get=2000,
        s3_put=10,
        sqs_requests=1_000_000,
        dynamodb_write_units=4000,
        dynamodb_read_units=2000,
        lambda_requests=500_000,
        lambda_gb_seconds=100.0,
        endpoint_gb_seconds=300.0,
        endpoint_gb_processed=0.5,
        transform_records=360_000,
        jobs=1,
    )
    cost = run_cost(run, PRICES, M5)
    assert cost["s3"] == pytest.approx(2000 * 0.0004 / 1000 + 10 * 0.005 / 1000)
    assert cost["sqs"] == pytest.approx(0.4)
    assert cost["dynamodb"] == pytest.approx(4000 * 0.625e-6 + 2000 * 0.125e-6)
    assert cost["lambda"] == pytest.approx(100 * 0.0000133334 + 0.1)
    assert cost["endpoint"] == pytest.approx(300 * 0.00002 + 0.5 * 0.016)
    assert cost["transform"] == pytest.approx(0.36)  # 360,000 images at 100 a second: one instance-hour


def test_each_job_pays_its_instances_start_up() -> None:
    assert job_cost(PRICES, "ml.m5.xlarge", 1) == pytest.approx(0.03)  # 300 s at $0.36/h
    assert job_cost(PRICES, "ml.m5.xlarge", 2) == pytest.approx(0.06)
    assert flood_cost(1e-5, 0.03, 10_000, 5000) == pytest.approx(0.1 + 2 * 0.03)
    assert flood_cost(1e-5, 0.03, 10_001, 5000) == pytest.approx(0.10001 + 3 * 0.03)
    assert flood_cost(1e-5, 0.03, 10_000, None) == pytest.approx(0.1)  # serverless: no jobs


def cheaper(serverless: float, batch: float, per_job: float, m: int, flood: int) -> bool:
    return flood_cost(batch, per_job, flood, m) < flood_cost(serverless, 0, flood, None)


@pytest.mark.parametrize(
    ("serverless", "batch", "per_job", "m"),
    [
        (5e-6, 3e-6, 0.0301, 15_100),  # a full job barely pays: the first flood cheaper throughout is far out
        (5e-6, 3e-6, 0.03, 40_000),  # cheaper within the first job, and from there on
        (6.5e-6, 3.5e-6, 0.017, 7_000),  # cheaper in the tail of one block, dearer at the next one's start
        (6.5e-6, 3.5e-6, 0.017, 5_000),  # a full job saves $0.015 < $0.017: never
        (3e-6, 5e-6, 0.03, 5_000),  # dearer per image: never
        (1.0, 0.1, 0.5, 10),  # cheaper from the first image
    ],
)
def test_the_crossover_is_the_flood_from_which_batch_stays_the_cheaper(
    serverless: float, batch: float, per_job: float, m: int
) -> None:
    found = crossover(serverless, batch, per_job, m)
    if found is None:  # no flood from which batch stays cheaper: each block of jobs starts dearer
        assert not any(cheaper(serverless, batch, per_job, m, k * m + 1) for k in range(50))
        return
    assert all(cheaper(serverless, batch, per_job, m, n) for n in range(found, found + 3 * m))
    assert found == 1 or not cheaper(serverless, batch, per_job, m, found - 1)


def test_the_crossover_agrees_with_the_table_for_the_templates_defaults() -> None:
    """Measured-like counts, the price table and the template's MaxImagesPerJob, instance type and
    count: every instance type's crossover holds at each flood of the printed table, and its
    figure per million is the table's million-image row."""
    parameters = parameter_defaults(load_template())
    prices = load_prices()
    runs = {
        "serverless": usage(300, s3_get=300, sqs_requests=900, dynamodb_write_units=600, lambda_requests=10,
                            lambda_gb_seconds=2.0, endpoint_gb_seconds=60.0, endpoint_gb_processed=0.03),
        "batch": usage(300, s3_get=330, s3_put=6, sqs_requests=1000, dynamodb_write_units=1500, lambda_requests=8,
                       lambda_gb_seconds=0.7, transform_records=300, jobs=1),
    }  # fmt: skip
    priced = [name for name in prices["transform_instance_per_hour"] if name in HOSTS]
    comparison = compare(runs, prices, parameters, rates({"AVX2": 50.0}, 2, priced))
    m = int(parameters["MaxImagesPerJob"])
    assert comparison.max_images_per_job == m and comparison.default_type == parameters["TransformInstanceType"]
    for name, batch in comparison.batch.items():
        endpoint = comparison.serverless_per_image
        for flood in FLOODS:
            if batch.crossover is not None and flood >= batch.crossover:
                assert cheaper(endpoint, batch.per_image, batch.per_job, m, flood), (name, flood)
        if batch.crossover is None:  # never: a full job saves less than its start-up, at any multiple of M too
            assert not cheaper(endpoint, batch.per_image, batch.per_job, m, MILLION // m * m), name
    default = comparison.batch[comparison.default_type]
    table = comparison.table()
    assert table[MILLION]["batch"] * 1000 == pytest.approx(default.per_million)
    assert table[MILLION]["serverless"] * 1000 == pytest.approx(comparison.serverless_per_image * MILLION)
    for flood, row in table.items():  # the table's rows and the crossover say the same
        if default.crossover is not None and flood >= default.crossover:
            assert row["batch"] < row["serverless"], flood
    assert list(comparison.batch) == sorted(comparison.batch, key=lambda t: comparison.batch[t].per_million)


def test_instance_rates_are_their_hosts_class_scaled_by_vcpus() -> None:
    types = ["ml.c7i.xlarge", "ml.c6i.xlarge", "ml.c5.xlarge", "ml.c4.xlarge", "ml.g4dn.xlarge"]
    measured = {"AVX-512 VNNI": 150.0, "AVX-512": 80.0, "AVX2": 70.0}  # on 2 cores
    found = {r.instance_type: r for r in rates(measured, 2, types)}
    assert found["ml.c6i.xlarge"].images_per_s == pytest.approx(300.0)
    c6i = found["ml.c6i.xlarge"]
    assert (c6i.serves, c6i.basis) == ("int8", "measured as AVX-512 VNNI, x 4/2 vCPUs")
    # by host: the slower of Cascade Lake (VNNI) and Skylake (AVX-512)
    assert found["ml.c5.xlarge"].images_per_s == pytest.approx(160.0) and "by host" in found["ml.c5.xlarge"].basis
    assert found["ml.c5.xlarge"].serves == "int8-reduce-range"
    assert (found["ml.c4.xlarge"].images_per_s, found["ml.c4.xlarge"].serves) == (140.0, "int8-reduce-range")
    # AMX not measured here: the fastest class below it, said to be a floor
    assert found["ml.c7i.xlarge"].images_per_s == pytest.approx(300.0) and "a floor" in found["ml.c7i.xlarge"].basis
    assert found["ml.g4dn.xlarge"].serves == "fp16" and "not scaled" in found["ml.g4dn.xlarge"].basis
    c7i = {r.instance_type: r for r in rates({**measured, "AMX": 400.0}, 2, types)}["ml.c7i.xlarge"]
    assert c7i.images_per_s == pytest.approx(800.0) and "floor" not in c7i.basis
    only_avx2 = {r.instance_type: r for r in rates({"AVX2": 70.0}, 2, types)}  # an AVX2 machine stands for no other
    assert {r.images_per_s for name, r in only_avx2.items() if name != "ml.g4dn.xlarge"} == {140.0}
    with pytest.raises(ValueError, match="no CPU class at or below AVX2"):
        rates({"AMX": 400.0}, 2, ["ml.c4.xlarge"])


def test_the_serverless_range_scales_only_the_endpoints_time() -> None:
    run = usage(endpoint_gb_seconds=100.0, sqs_requests=1_000_000)
    spread = serverless_range(run, PRICES, M5, {"fast": 100.0, "slow": 50.0}, "fast")
    endpoint = 100.0 * PRICES["serverless_inference_per_gb_second"]
    assert spread["fast"] == pytest.approx(sum(run_cost(run, PRICES, M5).values()) / 1000)
    assert spread["slow"] - spread["fast"] == pytest.approx(endpoint / 1000)  # twice the time, the rest unchanged


def test_the_templates_instance_type_is_the_cheapest_cpu_type_by_the_recorded_rates() -> None:
    """The default TransformInstanceType follows from make cost's table: the recorded rates by CPU
    class (infra/cpu_class_rates.json) and infra/prices.json, at the template's defaults."""
    recorded = load_cpu_class_rates()
    assert recorded["recorded"] and recorded["machine"] and recorded["command"]
    prices = load_prices()
    priced = [name for name in prices["transform_instance_per_hour"] if name in HOSTS]
    found = rates(recorded["batch_images_per_s"], recorded["cpus"], priced)
    runs = {"serverless": usage(endpoint_gb_seconds=50.0), "batch": usage(transform_records=1000)}
    comparison = compare(runs, prices, parameter_defaults(load_template()), found)
    assert cheapest_cpu_type(comparison) == parameter_defaults(load_template())["TransformInstanceType"]


def test_the_price_table_says_where_and_when_and_prices_a_vnni_and_a_gpu_type() -> None:
    prices = load_prices()
    assert prices["region"] and prices["recorded"] and prices["sources"]
    assert set(PRICES) <= set(prices)
    default = parameter_defaults(load_template())["TransformInstanceType"]
    priced = prices["transform_instance_per_hour"]
    assert default in priced and HOSTS[default].classes == ("AVX-512 VNNI",)
    assert "ml.g4dn.xlarge" in priced and HOSTS["ml.g4dn.xlarge"].gpu
    assert set(priced) <= set(HOSTS)  # every priced type says what it runs on


def test_the_idle_cost_counts_what_the_template_creates_that_bills_by_the_month() -> None:
    template = load_template()
    alarms = [r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    single = sum("MetricName" in alarm for alarm in alarms)
    drift = template["Resources"]["ConfidenceDriftAlarm"]["Properties"]  # metric math: billed per metric it reads
    math_metrics = sum(len([q for q in a["Metrics"] if "MetricStat" in q]) for a in alarms if "Metrics" in a)
    assert math_metrics >= len([q for q in drift["Metrics"] if "MetricStat" in q]) == 3
    idle = idle_cost(template, load_prices())
    assert idle == {"KMS key": 1.0, "alarms": pytest.approx((single + math_metrics) * 0.1), "dashboard": 3.0}
    assert len(alarms) >= 12  # every stall has its alarm (tests/iac/test_alarms.py)


def test_a_write_costs_its_size_again_in_each_index_the_item_is_in() -> None:
    environ = {"HTTP_X_AMZ_TARGET": "DynamoDB_20120810.PutItem", "PATH_INFO": "/"}
    keys = index_hash_keys(load_template())
    assert set(keys) == {"breed", "problem_status", "review"}

    def units(item: dict[str, Any]) -> int:
        return RequestMeter.usage(environ, json.dumps({"Item": item}).encode(), keys)["dynamodb:WRU"]

    pending = {"image_id": {"S": "b/incoming/a.jpg"}, "status": {"S": "PENDING"}}
    assert units(pending) == 1
    assert units({**pending, "breed": {"S": "Beagle"}}) == 2  # the table and by-breed
    assert units({**pending, "problem_status": {"S": "FAILED"}, "reason": {"S": "r" * 1500}}) == 4  # 2 KB twice


def test_classifying_again_is_priced_as_the_batch_path_with_its_own_counts() -> None:
    """A reclassify run's counts, priced like batch's on the template's instance type, start-ups of
    jobs of MaxImagesPerJob included; no such run, no figure."""
    parameters = parameter_defaults(load_template())
    prices = load_prices()
    batch = usage(300, s3_get=330, s3_put=6, sqs_requests=1000, dynamodb_write_units=1500, lambda_requests=8,
                  lambda_gb_seconds=0.7, transform_records=300, jobs=1)  # fmt: skip
    priced = [name for name in prices["transform_instance_per_hour"] if name in HOSTS]
    found = rates({"AVX2": 50.0}, 2, priced)
    without = compare({"serverless": batch, "batch": batch}, prices, parameters, found)
    assert without.reclassify_per_million is None
    again = compare({"serverless": batch, "batch": batch, "reclassify": batch}, prices, parameters, found)
    # the same counts as the batch run: the same figure per million as batch on the default type
    assert again.reclassify_per_million == pytest.approx(again.batch[again.default_type].per_million)
    more = replace(batch, dynamodb_write_units=3000)  # each image written once more (back to waiting)
    dearer = compare({"serverless": batch, "batch": batch, "reclassify": more}, prices, parameters, found)
    extra = 1500 / 300 * MILLION * prices["dynamodb_per_million_write_units"] / 1e6
    assert dearer.reclassify_per_million == pytest.approx(again.reclassify_per_million + extra)


def test_auto_modes_threshold_is_the_backlog_the_endpoint_clears_while_a_job_starts() -> None:
    """AutoBatchThreshold follows from the recorded rate of a serverless invocation, EndpointMaxConcurrency
    and a job's gather window and start-up, at the template's defaults (within a quarter: a round number)."""
    parameters = parameter_defaults(load_template())
    recorded = load_cpu_class_rates()["serverless_invocation_images_per_s"]
    backlog = auto_batch_backlog(parameters, load_prices(), recorded)
    assert 0.8 <= int(parameters["AutoBatchThreshold"]) / backlog <= 1.25, backlog
    # the arithmetic: 5 invocations at once, 420 s of gathering (120) and start-up (300)
    assert auto_batch_backlog({"EndpointMaxConcurrency": 5, "GatherWindowSeconds": 120}, PRICES, 10.0) == 21_000
