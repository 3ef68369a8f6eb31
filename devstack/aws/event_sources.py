"""What invokes the functions on AWS, on one machine: Lambda's SQS event source mapping and
EventBridge rules with Lambda targets. Their settings come from the translated template."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devstack.aws.account import ACCOUNT, REGION, queue_url
from devstack.aws.lambda_runtime import Invocation, LambdaFunction, sqs_event

log = logging.getLogger("devstack")

RECEIVE_MAX = 10  # SQS returns at most 10 messages per ReceiveMessage
ASYNC_RETRY_DELAYS_S = (1.0, 2.0)  # Lambda retries a failed async invocation twice (after ~1 and ~2 minutes)


@dataclass(frozen=True)
class SqsTrigger:
    """An AWS::Lambda::EventSourceMapping on an SQS queue."""

    function: str
    queue_arn: str
    batch_size: int
    window_s: float
    report_batch_item_failures: bool
    max_concurrency: int

    @classmethod
    def from_properties(cls, props: dict[str, Any], reserved: dict[str, int] | None = None) -> SqsTrigger:
        """From the mapping's properties; a function's reserved concurrency also caps its batches."""
        function = str(props["FunctionName"])
        maximum = int(props.get("ScalingConfig", {}).get("MaximumConcurrency", 1000))
        return cls(
            function=function,
            queue_arn=str(props["EventSourceArn"]),
            batch_size=int(props.get("BatchSize", 10)),
            window_s=float(props.get("MaximumBatchingWindowInSeconds", 0)),
            report_batch_item_failures="ReportBatchItemFailures" in props.get("FunctionResponseTypes", []),
            max_concurrency=min(maximum, (reserved or {}).get(function, maximum)),
        )


def failed_message_ids(trigger: SqsTrigger, invocation: Invocation, message_ids: list[str]) -> set[str]:
    """Which messages of a batch go back to the queue, by Lambda's rules for SQS."""
    if not invocation.ok:
        return set(message_ids)
    if not trigger.report_batch_item_failures:
        return set()
    result = invocation.result
    try:
        failed = {str(item["itemIdentifier"]) for item in (result or {}).get("batchItemFailures") or []}
    except (AttributeError, KeyError, TypeError):
        return set(message_ids)  # a malformed response fails the whole batch
    if not failed <= set(message_ids):
        return set(message_ids)  # so does an identifier that is not in the batch
    return failed


class SqsPoller:
    """Lambda's SQS trigger: long-poll the queue, gather a batch until it is full or the batching
    window closes, invoke the function with it (at most MaximumConcurrency batches in flight),
    then delete the messages that succeeded. Failed ones reappear after the queue's visibility
    timeout, and the queue's redrive policy moves them to its DLQ after maxReceiveCount receives."""

    def __init__(self, trigger: SqsTrigger, sqs: Any, function: LambdaFunction) -> None:
        self.trigger = trigger
        self.sqs = sqs
        self.function = function
        self.queue_url = queue_url(trigger.queue_arn.rsplit(":", 1)[1])
        self.batch_sizes: list[int] = []
        self._slots = threading.BoundedSemaphore(trigger.max_concurrency)
        self._stopping = threading.Event()
        self.running = threading.Event()  # cleared: the mapping is disabled, and receives nothing
        self.running.set()
        self._thread = threading.Thread(target=self._poll, name=f"sqs-poller-{trigger.function}", daemon=True)
        self._deliveries: list[threading.Thread] = []

    def start(self) -> SqsPoller:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop receiving and let batches in flight finish."""
        self._stopping.set()
        self._thread.join()
        for delivery in self._deliveries:
            delivery.join()

    def _poll(self) -> None:
        while not self._stopping.is_set():
            if not self.running.wait(timeout=0.5) or not self._slots.acquire(timeout=0.5):
                continue
            try:
                batch = self._gather()
            except Exception:
                log.exception("receiving from %s failed", self.queue_url)
                batch = []
                time.sleep(1)
            if not batch:
                self._slots.release()
                continue
            self.batch_sizes.append(len(batch))
            delivery = threading.Thread(target=self._deliver, args=(batch,), daemon=True)
            self._deliveries = [d for d in self._deliveries if d.is_alive()] + [delivery]
            delivery.start()

    def _gather(self) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        closes: float | None = None  # the batching window opens with the first message
        while len(batch) < self.trigger.batch_size and not self._stopping.is_set():
            left = 1.0 if closes is None else closes - time.monotonic()
            if left <= 0:
                break
            messages = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=min(RECEIVE_MAX, self.trigger.batch_size - len(batch)),
                WaitTimeSeconds=int(min(left, 1.0)),
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if messages:
                batch += messages
                closes = closes or time.monotonic() + self.trigger.window_s
            elif closes is None:
                break  # nothing waiting: poll again (and notice a stop)
            elif left < 1.0:
                time.sleep(min(left, 0.05))
        return batch

    def _deliver(self, batch: list[dict[str, Any]]) -> None:
        try:
            event = sqs_event(batch, self.trigger.queue_arn)
            invocation = self.function.invoke(event)
            ids = [m["MessageId"] for m in batch]
            failed = failed_message_ids(self.trigger, invocation, ids)
            if not invocation.ok:
                log.warning("%s failed on a batch of %d: %s", self.trigger.function, len(batch), invocation.error)
            done = [m for m in batch if m["MessageId"] not in failed]
            for start in range(0, len(done), RECEIVE_MAX):
                entries = [
                    {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]}
                    for n, m in enumerate(done[start : start + RECEIVE_MAX])
                ]
                self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
        except Exception:
            log.exception("delivering a batch to %s failed", self.trigger.function)
        finally:
            self._slots.release()


@dataclass(frozen=True)
class RuleTarget:
    """An AWS::Events::Rule on the default bus with a Lambda function as its target. A schedule's rule
    matches the events of its own schedule (scheduled_event)."""

    rule: str
    pattern: dict[str, Any]
    function: str
    every_s: float | None = None  # a schedule's rate

    @classmethod
    def of_rule(
        cls, logical_id: str, properties: dict[str, Any], function: str, every_s: float | None = None
    ) -> RuleTarget:
        """A rule's target; a schedule's runs at its rate, or every `every_s` if given."""
        expression = properties.get("ScheduleExpression")
        if expression is None:
            return cls(logical_id, properties["EventPattern"], function)
        pattern = {"source": ["aws.events"], "detail-type": ["Scheduled Event"], "resources": [logical_id]}
        return cls(logical_id, pattern, function, every_s=every_s or rate_seconds(expression))


def rate_seconds(expression: str) -> float:
    """The period of an EventBridge `rate(value unit)` expression (cron expressions are not used here)."""
    match = re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)", expression)
    if match is None:
        raise NotImplementedError(f"schedule {expression!r} is not supported locally")
    unit = {"minute": 60, "hour": 3600, "day": 86400}[match[2].rstrip("s")]
    return int(match[1]) * unit


def bus_event(source: str, detail_type: str, resources: list[str], detail: dict[str, Any]) -> dict[str, Any]:
    """An event as the default bus delivers it: EventBridge's envelope around a service's detail."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": source,
        "account": ACCOUNT,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "region": REGION,
        "resources": resources,
        "detail": detail,
    }


def scheduled_event(rule: str) -> dict[str, Any]:
    """The event a schedule sends its target (EventBridge user guide, scheduled events)."""
    return bus_event("aws.events", "Scheduled Event", [rule], {})


def matches(pattern: dict[str, Any], event: dict[str, Any]) -> bool:
    """EventBridge pattern matching for what our rules and pipes use: exact values, prefix and exists."""
    for key, wanted in pattern.items():
        if key not in event:
            if isinstance(wanted, list) and {"exists": False} in wanted:
                continue
            return False
        value = event[key]
        if isinstance(wanted, dict):
            if not isinstance(value, dict) or not matches(wanted, value):
                return False
            continue
        values = value if isinstance(value, list) else [value]
        if not any(_matches_one(option, v) for option in wanted for v in values):
            return False
    return True


def _matches_one(option: Any, value: Any) -> bool:
    if isinstance(option, dict):
        if set(option) == {"exists"}:
            return bool(option["exists"])  # the field is there
        if set(option) != {"prefix"}:
            raise NotImplementedError(f"event pattern operator {option} is not supported locally")
        return isinstance(value, str) and value.startswith(option["prefix"])
    return bool(option == value)


class EventBus:
    """The default event bus: an event goes to every rule whose pattern it matches. Lambda targets
    are invoked asynchronously: after a function error Lambda retries twice, then sends the event
    to the function's dead-letter queue."""

    def __init__(
        self,
        targets: list[RuleTarget],
        functions: dict[str, LambdaFunction],
        dead_letter_queues: dict[str, str],
        sqs_as: Callable[[str], Any],
        retry_delays_s: tuple[float, ...] = ASYNC_RETRY_DELAYS_S,
    ) -> None:
        self.targets = targets
        self.functions = functions
        self.dead_letter_queues = dead_letter_queues  # function -> queue URL
        self.sqs_as = sqs_as  # function -> an SQS client acting as its role
        self.retry_delays_s = retry_delays_s
        self.received: list[dict[str, Any]] = []  # every event put on the bus, matched by a rule or not
        self.queues: list[tuple[dict[str, Any], str, Any]] = []  # rules with an SQS target: (pattern, URL, client)
        # A fault: events this says True to are never delivered ("in some rare cases an event might not be
        # delivered", EventBridge user guide, "Event delivery from AWS services").
        self.lose: Callable[[dict[str, Any]], bool] = lambda event: False
        self.lost: list[dict[str, Any]] = []
        self._stopping = threading.Event()
        self._schedules = [
            threading.Thread(target=self._schedule, args=(target,), name=f"schedule-{target.rule}", daemon=True)
            for target in targets
            if target.every_s is not None
        ]

    def start(self) -> EventBus:
        for thread in self._schedules:
            thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._schedules:
            thread.join(timeout=5)

    def put(self, event: dict[str, Any]) -> None:
        self.received.append(event)
        if self.lose(event):
            self.lost.append(event)
            log.warning("event lost, as a fault: %s %s", event.get("detail-type"), event.get("detail", {}))
            return
        for pattern, url, sqs in self.queues:
            if matches(pattern, event):
                sqs.send_message(QueueUrl=url, MessageBody=json.dumps(event))
        for target in self.targets:
            if matches(target.pattern, event):
                self._invoke_async(target, event)

    def send_to_queue(self, pattern: dict[str, Any], queue_url: str, sqs: Any) -> None:
        """A rule with an SQS target, as a user adds one (events:PutRule, events:PutTargets): each
        matching event becomes a message whose body is the event."""
        self.queues.append((pattern, queue_url, sqs))

    def lose_next(self, detail_type: str) -> None:
        """A fault: the next event of this detail-type is never delivered."""
        armed = [True]

        def once(event: dict[str, Any]) -> bool:
            if armed[0] and event.get("detail-type") == detail_type:
                armed[0] = False
                return True
            return False

        self.lose = once

    def fire_schedules(self) -> None:
        """Every schedule's event now, as if its time had come."""
        for target in self.targets:
            if target.every_s is not None:
                self.put(scheduled_event(target.rule))

    def _schedule(self, target: RuleTarget) -> None:
        assert target.every_s is not None
        while not self._stopping.wait(target.every_s):
            self.put(scheduled_event(target.rule))

    def _invoke_async(self, target: RuleTarget, event: dict[str, Any]) -> None:
        function = self.functions[target.function]
        for delay in (0.0, *self.retry_delays_s):
            time.sleep(delay)
            invocation = function.invoke(event)
            if invocation.ok:
                return
            log.warning("%s failed on an event of rule %s: %s", target.function, target.rule, invocation.error)
        queue_url = self.dead_letter_queues.get(target.function)
        if queue_url:
            self.sqs_as(target.function).send_message(QueueUrl=queue_url, MessageBody=json.dumps(event))
