"""Execution environments run as Lambda runs them: the Runtime Interface Emulator in front of the
runtime interface client (awslambdaric), one invoke at a time, the function's timeout enforced."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.aws import lambda_runtime
from devstack.aws.cpu_share import why_unavailable
from devstack.aws.host import free_ports
from devstack.aws.lambda_runtime import FunctionSpec, Invocation, LambdaFunction
from tests.stack.conftest import TakePort

HANDLER = """
import os, time

def handler(event, context):
    if event.get("sleep"):
        time.sleep(event["sleep"])
    if event.get("fail"):
        raise ValueError("no such breed")
    return {
        "pid": os.getpid(),
        "greeting": os.environ["GREETING"],
        "memory": context.memory_limit_in_mb,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "function": context.function_name,
    }
"""


@pytest.fixture
def function(tmp_path: Path) -> Iterator[LambdaFunction]:
    code = tmp_path / "code"
    code.mkdir()
    (code / "app.py").write_text(HANDLER)
    spec = FunctionSpec("GreeterFunction", "app.handler", code, {"GREETING": "woof"}, timeout_s=2, memory_mb=256)
    started = LambdaFunction(spec, concurrency=1, log_dir=tmp_path / "logs")
    yield started
    started.stop()


def test_the_handler_runs_with_the_functions_environment_and_context(function: LambdaFunction) -> None:
    first, second = function.invoke({}), function.invoke({})
    assert first.ok and second.ok
    assert first.result["greeting"] == "woof" and first.result["function"] == "GreeterFunction"
    assert first.result["memory"] == "256"  # a string, as the runtime client gives it
    assert 0 < first.result["remaining_ms"] <= 2000
    assert first.result["pid"] == second.result["pid"]  # a warm environment is reused


def test_ports_are_chosen_where_no_outgoing_connection_can_take_them() -> None:
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    ports = free_ports(200)
    assert len(set(ports)) == 200
    assert not [port for port in ports if low <= port <= high]  # a connection's source port is from there


@pytest.mark.parametrize("which", [0, 1], ids=["runtime API", "invocations"])
def test_an_emulator_whose_port_was_taken_starts_again_on_others(
    function: LambdaFunction, take_port: TakePort, which: int
) -> None:
    taken = take_port(lambda_runtime, which)
    assert function.invoke({}).ok
    assert taken and "address already in use" in function.log_path.read_text().lower()


def test_an_error_is_the_functions_error(function: LambdaFunction) -> None:
    assert function.invoke({"fail": True}) == Invocation(False, error="ValueError: no such breed")


def test_a_function_past_its_timeout_is_stopped_and_its_next_invoke_starts_cold(function: LambdaFunction) -> None:
    warm = function.invoke({}).result["pid"]
    started = time.monotonic()
    timed_out = function.invoke({"sleep": 5})
    assert timed_out == Invocation(False, error="Task timed out after 2.00 seconds")
    assert time.monotonic() - started < 4  # stopped at its timeout, not at the end of its work
    after = function.invoke({})
    assert after.ok and after.result["pid"] != warm  # the runtime was killed and initialised again


def test_a_runtime_killed_mid_invoke_fails_that_invoke_only(function: LambdaFunction) -> None:
    function.invoke({})
    answered: list[Invocation] = []
    invoke = threading.Thread(target=lambda: answered.append(function.invoke({"sleep": 1.5})))
    invoke.start()
    time.sleep(0.5)
    assert function.kill_environment() is not None
    invoke.join()
    assert not answered[0].ok and "Runtime exited" in answered[0].error
    assert function.invoke({}).ok


def test_every_invoke_is_billed_from_the_report_lines(function: LambdaFunction) -> None:
    for _ in range(3):
        function.invoke({"sleep": 0.2})
    assert function.invocations == 3
    assert 600 <= function.billed_ms < 2000  # each invoke rounded up to the millisecond
    assert function.log_path.read_text().count("REPORT RequestId:") == 3


def test_an_environment_gets_the_share_of_a_cpu_its_memory_buys(tmp_path: Path) -> None:
    """Lambda gives a function CPU in proportion to its memory (one vCPU at 1,769 MB): 512 MB, about
    0.29 of one. Where this machine has no writable cgroup cpu controller the function says so and
    runs unlimited."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "app.py").write_text(HANDLER)
    spec = FunctionSpec("GreeterFunction", "app.handler", code, {"GREETING": "woof"}, timeout_s=5, memory_mb=512)
    function = LambdaFunction(spec, concurrency=1, log_dir=tmp_path / "logs", cpu_share=True)
    try:
        answer = function.invoke({})
        assert answer.ok
        if why_unavailable() is not None:
            assert not function.cpu_share
            return
        (environment,) = function._all
        assert environment.cpu is not None
        assert environment.cpu.quota() == pytest.approx(512 / 1769, abs=0.01)
        assert answer.result["pid"] in environment.cpu.pids()  # the handler's runtime, started on the invoke
        group = environment.cpu.path
    finally:
        function.stop()
    assert not group.exists()  # removed with the environment
    assert function.longest_ms > 0  # from the REPORT lines
