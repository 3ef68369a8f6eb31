"""The local stack is built from template.yaml (it cannot drift from it), and it starts and stops
as one process tree: stopping it leaves no process and no port behind."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from devstack.aws import lambda_runtime
from devstack.aws.host import descendants, free_ports
from devstack.aws.provision import references
from devstack.aws.stack import StackFailed
from infra.template import declared_environment, load_template, resolve, translate
from tests.conftest import IMPORT_PATH, REPO
from tests.stack.conftest import FAST, StartStack, wait_until

pytestmark = pytest.mark.slow  # starts the local stack


def test_the_local_stack_is_what_the_template_declares(start_stack: StartStack) -> None:
    stack = start_stack(as_deployed=True, MaxReceiveCount="3", BatchSize="40")  # overrides flow through
    assert stack.resources is not None and stack.runtime is not None and stack.bus is not None
    template = load_template()["Resources"]
    refs = references(stack.names, stack.parameters)
    sqs, s3, dynamodb = stack.client("sqs"), stack.client("s3"), stack.client("dynamodb")

    queue = resolve(template["ImageQueue"]["Properties"], refs)
    attributes = sqs.get_queue_attributes(QueueUrl=stack.resources.queue_url, AttributeNames=["All"])["Attributes"]
    assert attributes["VisibilityTimeout"] == str(queue["VisibilityTimeout"])
    assert attributes["MessageRetentionPeriod"] == str(queue["MessageRetentionPeriod"])
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == queue["RedrivePolicy"]["deadLetterTargetArn"]
    assert int(redrive["maxReceiveCount"]) == 3

    (notification,) = resolve(template["ImagesBucket"]["Properties"], refs)["NotificationConfiguration"][
        "QueueConfigurations"
    ]
    (configured,) = s3.get_bucket_notification_configuration(Bucket=stack.names.bucket)["QueueConfigurations"]
    assert configured["QueueArn"] == notification["Queue"] == attributes["QueueArn"]
    assert configured["Events"] == [notification["Event"]]
    rules = configured["Filter"]["Key"]["FilterRules"]
    assert [(r["Name"].lower(), r["Value"]) for r in rules] == [
        (r["Name"], r["Value"]) for r in notification["Filter"]["S3Key"]["Rules"]
    ]

    table = template["PredictionsTable"]["Properties"]
    described = dynamodb.describe_table(TableName=stack.names.table)["Table"]
    assert described["KeySchema"] == table["KeySchema"]
    assert {(i["IndexName"], json.dumps(i["KeySchema"])) for i in described["GlobalSecondaryIndexes"]} == {
        (i["IndexName"], json.dumps(i["KeySchema"])) for i in table["GlobalSecondaryIndexes"]
    }

    pollers = {
        (poller.trigger.function, poller.trigger.queue_arn.rsplit(":", 1)[1]): poller for poller in stack.pollers
    }
    names = stack.names
    assert set(pollers) == {
        ("IngestFunction", names.queue),
        ("IngestFunction", names.reclassify_queue),
        ("BuildJobsFunction", names.job_queue),
    }
    poller = pollers["IngestFunction", names.queue]
    uploads = template["IngestFunction"]["Properties"]["Events"]["Uploads"]["Properties"]
    assert poller.trigger.queue_arn == attributes["QueueArn"]
    assert poller.trigger.batch_size == 40
    assert poller.trigger.window_s == float(FAST["BatchingWindowSeconds"])
    assert poller.trigger.report_batch_item_failures == ("ReportBatchItemFailures" in uploads["FunctionResponseTypes"])
    assert poller.trigger.max_concurrency == int(stack.parameters["EndpointMaxConcurrency"])
    requests = pollers["IngestFunction", names.reclassify_queue].trigger  # make reclassify's, beside the uploads
    assert (requests.batch_size, requests.window_s, requests.max_concurrency) == (40, poller.trigger.window_s, 2)
    assert requests.report_batch_item_failures
    builder = pollers["BuildJobsFunction", names.job_queue].trigger
    job_queue = sqs.get_queue_attributes(QueueUrl=stack.resources.job_queue_url, AttributeNames=["All"])["Attributes"]
    assert builder.queue_arn == job_queue["QueueArn"]
    assert (builder.batch_size, builder.window_s) == (10000, float(FAST["GatherWindowSeconds"]))
    assert builder.max_concurrency == 2  # its event source's MaximumConcurrency: the lease keeps one building
    assert stack.functions["IngestFunction"].spec.environment["JOB_QUEUE_URL"].endswith("/" + stack.names.job_queue)

    for logical_id, function in stack.functions.items():
        declared = template[logical_id]["Properties"]
        assert function.spec.handler == declared["Handler"] and function.spec.timeout_s == declared["Timeout"]
        assert set(declared_environment(logical_id)) <= set(function.spec.environment)
        assert function.spec.environment["AWS_ENDPOINT_URL"] == stack.endpoint_url  # the only local wiring
        assert function.spec.environment["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"] == stack.runtime.url
    assert stack.functions["IngestFunction"].spec.environment["INFERENCE_MODE"] == stack.parameters["InferenceMode"]
    assert "INFERENCE_MODE" not in stack.functions["CollectFunction"].spec.environment

    (rule,) = [
        r
        for r in translate(load_template())["Resources"].values()
        if r["Type"] == "AWS::Events::Rule" and "EventPattern" in r["Properties"]
    ]
    target, schedule = sorted(stack.bus.targets, key=lambda t: t.every_s is not None)
    assert target.pattern == resolve(rule["Properties"]["EventPattern"], refs)
    assert (target.function, schedule.function, schedule.every_s) == ("CollectFunction", "CollectFunction", 600)

    model = stack.client("sagemaker").describe_model(ModelName=stack.parameters["ModelName"])["PrimaryContainer"]
    declared_env = resolve(template["Model"]["Properties"]["PrimaryContainer"]["Environment"], refs)
    assert model["Environment"] == {k: str(v) for k, v in declared_env.items()}


def session_processes(session: int) -> list[int]:
    """Every process of a session (what a terminal's signals reach), by this machine's numbers."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[3]) == session:  # after the state, ppid and pgrp
            found.append(int(stat.parent.name))
    return found


class Make:
    """`make TARGET` in a session of its own, as from a terminal, with its own TMPDIR; what it prints is kept."""

    def __init__(self, tmp_path: Path, target: str, *variables: str) -> None:
        self.tmpdir = tmp_path / "tmpdir"
        self.tmpdir.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
        env["TMPDIR"] = str(self.tmpdir)
        self.process = subprocess.Popen(
            ["make", "--no-print-directory", target, *variables],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.printed: list[str] = []
        threading.Thread(target=lambda: self.printed.extend(self.process.stdout or []), daemon=True).start()

    def wait_for(self, ready: Callable[[], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready() and self.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ready(), "".join(self.printed)

    def commands(self) -> set[str]:
        """The command lines of the processes below make."""
        found = set()
        for pid in descendants(self.process.pid):
            with contextlib.suppress(OSError):
                found.add(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        return found


@pytest.mark.parametrize(
    ("target", "signum", "to_group"),
    [
        ("demo", signal.SIGTERM, False),  # `kill -TERM` of make, which passes it on
        ("stack", signal.SIGHUP, True),  # a closed terminal: every process of its session
    ],
)
def test_a_signal_to_make_leaves_no_process_and_no_scratch_folder(
    model_archive: Path, tmp_path: Path, target: str, signum: int, to_group: bool
) -> None:
    variables = []
    if target == "stack":
        args = f"--model {model_archive} --workdir {tmp_path / 'stack'} --moto-port 0 --runtime-port 0"
        variables = [f"STACK_ARGS={args}"]
    make = Make(tmp_path, target, *variables)
    try:
        # GIVEN the target halfway: the demo's Lambda environments and model containers running, or the stack up
        if target == "demo":
            make.wait_for(lambda: any("awslambdaric" in c for c in make.commands()), timeout_s=300)
        make.wait_for(lambda: any("org.pytorch.serve.ModelServer" in c for c in make.commands()), timeout_s=300)
        # TorchServe's worker starts a moment after the JVM: seen once as 4 processes on a loaded machine
        make.wait_for(lambda: len(set(descendants(make.process.pid))) >= 5, timeout_s=60)
        started = set(descendants(make.process.pid))
        assert len(started) >= 5, make.commands()  # python, unshare, the toolkit, TorchServe, a worker, ...
        # WHEN the signal comes
        if to_group:
            os.killpg(make.process.pid, signum)
        else:
            make.process.send_signal(signum)
        make.process.wait(90)
    finally:
        if make.process.poll() is None:
            os.killpg(make.process.pid, signal.SIGKILL)
    # THEN nothing of it runs and its scratch folders (the demo's, each container's) are gone
    printed = "".join(make.printed)
    assert f"{signal.Signals(signum).name}: stopping everything" in printed, printed[-3000:]
    assert wait_until(lambda: not session_processes(make.process.pid), timeout_s=10), session_processes(
        make.process.pid
    )
    assert not [pid for pid in started if Path(f"/proc/{pid}").exists()]
    assert list(make.tmpdir.iterdir()) == []


def test_the_stack_stays_up_for_a_user_and_stops_without_leftovers(
    model_archive: Path, tmp_path: Path, dataset: Path
) -> None:
    moto_port, runtime_port = free_ports(2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    env["PYTHONPATH"] = IMPORT_PATH
    command = [sys.executable, "-m", "devstack.workloads.up", "--model", str(model_archive)]
    command += ["--workdir", str(tmp_path / "stack"), "--moto-port", str(moto_port)]
    command += ["--runtime-port", str(runtime_port), "--parameter", "BatchingWindowSeconds=1"]
    stack = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        printed: list[str] = []
        threading.Thread(
            target=lambda: printed.extend(line.strip() for line in stack.stdout or []), daemon=True
        ).start()
        deadline = time.monotonic() + 90
        while "READY" not in printed and stack.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        user_env = dict(env)
        for line in printed:
            if line.startswith("export "):
                user_env.update(pair.split("=", 1) for pair in line.split()[1:])
        assert "READY" in printed, "\n".join(printed)
        assert user_env["AWS_ENDPOINT_URL"] == f"http://127.0.0.1:{moto_port}"

        # A user uploads with the AWS CLI the project installs, as printed, and queries.
        assert any(line.startswith(".venv/bin/aws s3 cp") for line in printed), printed
        photo = next((dataset / "test").rglob("*.jpg"))
        target = f"s3://{user_env['IMAGES_BUCKET']}/incoming/my dog.jpg"
        # as printed; run by the venv's Python, since pip writes the AWS CLI's script a `#!` line that Linux
        # cannot run from a path with a space (docs/local-stack.md)
        upload = [sys.executable, str(Path(sys.executable).parent / "aws"), "s3", "cp", str(photo), target]
        result = subprocess.run(upload, env=user_env, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        query = [sys.executable, "-m", "cli.query", "--output", "json", "image", "incoming/my dog.jpg"]
        answer: list[dict[str, object]] = []
        while not answer or answer[0]["status"] == "PENDING":
            result = subprocess.run(query, cwd=REPO, env=user_env, capture_output=True, text=True, check=False)
            answer = json.loads(result.stdout) if result.returncode == 0 else []
            assert time.monotonic() < deadline + 60, result.stderr
            time.sleep(0.5)
        assert answer[0]["status"] == "CLASSIFIED" and answer[0]["mode"] == "serverless"

        started = set(descendants(stack.pid))  # every process below it, TorchServe's workers included
        # the endpoint's container (unshare, the toolkit, TorchServe, a worker) and an ingest environment
        # (the emulator, the runtime client)
        assert len(started) >= 6
    finally:
        stack.send_signal(signal.SIGINT)
        code = stack.wait(60)
    assert code == 0
    time.sleep(0.5)
    assert not [pid for pid in started if Path(f"/proc/{pid}").exists()]
    for port in (moto_port, runtime_port):
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past connections' TIME_WAIT is fine
            sock.bind(("127.0.0.1", port))  # raises if anything still listens


def test_a_function_that_cannot_start_an_environment_stops_what_waits_at_once(
    start_stack: StartStack, dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No emulator (a fresh clone once ran the demo without .venv-sam): the first delivery fails and
    wait_for_outcomes raises with the reason, instead of waiting out its timeout."""
    monkeypatch.setattr(lambda_runtime, "SAM_PACKAGE", dataset / "no-sam-here")
    stack = start_stack()
    etags = stack.upload({"incoming/dog.jpg": next((dataset / "test").rglob("*.jpg")).read_bytes()})
    with pytest.raises(StackFailed, match="IngestFunction: no execution environment could start: no aws-lambda-rie"):
        stack.wait_for_outcomes(etags, timeout_s=3600)
