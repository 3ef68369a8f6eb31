"""Classifying images again with the current model (functions/pipeline/logic/reclassify.py), over
in-memory fakes: the lifecycle table's "to classify again" event, then the ingest logic's flood path."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from answers import Candidate, Prediction
from pipeline.logic.deadline import Deadline
from pipeline.logic.errors import TransientError
from pipeline.logic.jobs import QueuedShard
from pipeline.logic.lifecycle import Change, Event
from pipeline.logic.outcomes import ImageRef, Mode, Outcome, Status
from pipeline.logic.reclassify import REASON, Reclassify
from tests.pipeline import images
from tests.unit.conftest import Clock
from tests.unit.test_build import World as BuildWorld
from tests.unit.test_ingest import SlowReads, World

OLD = Prediction((Candidate("069", "French_bulldog", 0.9),), model_precision="int8", model_version="sha256:0ld")


@pytest.fixture
def world(clock: Clock) -> World:
    return World(Mode.SERVERLESS, clock)  # the stack's mode: reclassifying goes by the flood path anyway


def classified(world: World, key: str) -> ImageRef:
    ref = world.upload(key, images.jpeg(color=(len(key), 90, 30)))
    outcome = Outcome(Status.CLASSIFIED, Mode.SERVERLESS, prediction=OLD, model_name="dogbreed-resnet18")
    assert world.store.write([Change(ref, Event.ANSWERED, outcome)], world.clock()) == [True]
    return replace(ref, message_id="")  # as the command builds it, from the record


def reclassify(world: World) -> Reclassify:
    return Reclassify.beside(world.ingest)  # as the ingest function builds it, for the requests it takes


def queued_keys(world: World) -> list[str]:
    return [ref.key for body in world.queue.messages for ref in QueuedShard.from_message("m", body).images]


def test_classified_images_wait_again_and_go_by_the_flood_path(world: World) -> None:
    refs = [classified(world, f"incoming/{n}.jpg") for n in range(3)]
    result = reclassify(world).run(refs)
    # each is recorded waiting with the reason, and queued in a shard for the job builder
    assert (result.selected, result.taken, result.queued, result.left_waiting) == (3, 3, 3, 0)
    for ref in refs:
        outcome = world.outcome(ref)
        assert outcome is not None and (outcome.status, outcome.mode, outcome.reason) == (
            Status.PENDING,
            Mode.BATCH,
            REASON,
        )
    assert sorted(queued_keys(world)) == sorted(ref.key for ref in refs)
    assert world.endpoint.calls == []  # never the serverless endpoint, whatever the stack's mode


def test_only_a_classified_image_of_this_content_is_taken(world: World) -> None:
    ref = classified(world, "incoming/rex.jpg")
    in_job = replace(world.upload("incoming/in-job.jpg", images.jpeg()), message_id="")
    job = Outcome(Status.PENDING, Mode.BATCH, job_name="dogbreed-job")
    assert world.store.write([Change(in_job, Event.JOB_STARTED, job, job="dogbreed-job")], world.clock()) == [True]
    rejected = world.upload("incoming/bad.jpg", b"not an image")
    refused = Outcome(Status.REJECTED, Mode.SERVERLESS, reason="not an image", error_code="NotAnImage")
    world.store.write([Change(rejected, Event.ANSWERED, refused)], world.clock())
    overwritten = world.upload("incoming/rex.jpg", images.png())  # newer content of rex.jpg since its record
    result = reclassify(world).run([in_job, replace(rejected, message_id=""), ref])
    # rex.jpg's record is still of the old content, so it is taken; reading it finds it overwritten
    assert (result.taken, result.skipped, result.queued) == (1, 2, 0)
    assert result.left_waiting == 1  # the newer upload's own event records rex.jpg
    assert world.queue.messages == [] and overwritten.etag != ref.etag
    assert world.outcome(in_job) == job and world.outcome(rejected) == refused


def test_a_deleted_image_is_rejected_with_the_reason(world: World) -> None:
    ref = classified(world, "incoming/gone.jpg")
    world.objects.delete(ref.bucket, ref.key)
    result = reclassify(world).run([ref])
    outcome = world.outcome(ref)
    assert result.queued == 0 and [o.status for o in result.outcomes] == [Status.REJECTED]
    assert outcome is not None and outcome.error_code == "ObjectDeleted"


def test_a_run_stopped_before_queueing_leaves_images_waiting_and_the_next_run_queues_them(world: World) -> None:
    refs = [classified(world, f"incoming/{n}.jpg") for n in range(2)]
    # GIVEN the job queue refuses the first run's shard (the command stops there)
    world.queue.fail_next(TransientError("SQS unavailable"))
    first = reclassify(world).run(refs)
    assert (first.taken, first.queued, first.left_waiting) == (2, 0, 2)
    assert all(world.outcome(ref).reason == REASON for ref in refs)  # type: ignore[union-attr]
    # WHEN it runs again over the same images (the command selects them by REASON)
    second = reclassify(world).run(refs)
    # THEN the waiting images are taken again and queued, once
    assert (second.taken, second.queued) == (2, 2)
    assert sorted(queued_keys(world)) == sorted(ref.key for ref in refs)


def test_a_request_that_could_not_be_queued_comes_again_and_its_image_waits_meanwhile(world: World) -> None:
    refs = [replace(classified(world, f"incoming/{n}.jpg"), message_id=f"m{n}") for n in range(2)]
    world.queue.fail_next(TransientError("SQS unavailable"))
    first = reclassify(world).run(refs)
    # the requests' messages are reported failed, so SQS delivers them again; the images wait
    assert first.failed_message_ids == {"m0", "m1"} and first.left_waiting == 2
    second = reclassify(world).run([replace(ref, receive_count=2) for ref in refs])
    assert second.failed_message_ids == set() and second.queued == 2


def test_past_the_deadline_the_requests_not_started_come_again(clock: Clock) -> None:
    world = World(Mode.SERVERLESS, clock, objects=SlowReads(clock, seconds=10))  # photos slow to read
    refs = [replace(classified(world, f"incoming/{n}.jpg"), message_id=f"m{n}") for n in range(10)]
    deadline = Deadline.of_invocation(clock(), remaining_ms=120_000)  # work stops at 90 s: 9 reads of 10 s
    result = reclassify(world).run(refs, deadline)
    assert (result.queued, result.failed_message_ids) == (9, {"m9"})
    assert world.outcome(refs[9]).reason == REASON  # type: ignore[union-attr]  # waits for its request again


def test_a_repeated_run_queues_again_what_still_waits(world: World) -> None:
    ref = classified(world, "incoming/rex.jpg")
    reclassify(world).run([ref])
    again = reclassify(world).run([ref])
    assert (again.taken, again.queued) == (1, 1)  # the builder keeps one of the two (test_build.py)
    assert queued_keys(world) == [ref.key, ref.key]


def test_reclassifying_refuses_an_ingest_off_the_flood_path(world: World) -> None:
    with pytest.raises(ValueError, match="flood path"):
        Reclassify(world.store, world.ingest)


def test_an_image_uploaded_long_ago_waits_from_its_request_not_its_upload(world: World, clock: Clock) -> None:
    """An image classified months ago waits for its job from the request: the job builder starts a job for
    it, where it once failed it at once for waiting longer than MaxBatchWaitMinutes since its upload."""
    ref = classified(world, "incoming/old.jpg")
    clock.advance(timedelta(days=90).total_seconds())
    reclassify(world).run([ref])
    (body,) = world.queue.messages
    shard = QueuedShard.from_message("m", body)
    (queued,) = shard.images
    assert queued.uploaded_at == ref.uploaded_at and queued.requested_at == clock()
    builds = BuildWorld(clock, store=world.store)
    result = builds.builder.run([shard])
    outcome = world.outcome(ref)
    assert result.jobs and outcome is not None and outcome.status is Status.PENDING and outcome.job_name
