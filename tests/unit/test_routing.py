"""Where each image goes, by mode, threshold and size."""

from __future__ import annotations

import pytest

from pipeline.logic.outcomes import Mode
from pipeline.logic.routing import SERVERLESS_MAX_BYTES, RoutingPolicy
from tests.unit.conftest import image_ref


def policy(mode: Mode, threshold: int = 3) -> RoutingPolicy:
    return RoutingPolicy(mode, threshold, batch_max_bytes=6_000_000, max_image_pixels=50_000_000)


SMALL = [image_ref(f"incoming/{i}.jpg") for i in range(2)]
BIG = image_ref("incoming/big.png", size=SERVERLESS_MAX_BYTES + 1)


def test_serverless_and_batch_modes_send_everything_one_way() -> None:
    assert policy(Mode.SERVERLESS).route([*SMALL, BIG]) == ([*SMALL, BIG], [])
    assert policy(Mode.BATCH).route([*SMALL, BIG]) == ([], [*SMALL, BIG])


def test_auto_sends_a_small_batch_to_the_endpoint() -> None:
    assert policy(Mode.AUTO).route(SMALL) == (SMALL, [])


def test_auto_sends_a_batch_at_the_threshold_to_batch_transform() -> None:
    three = [*SMALL, image_ref("incoming/third.jpg")]
    assert policy(Mode.AUTO, threshold=3).route(three) == ([], three)


def test_auto_counts_the_backlog_behind_a_batch() -> None:
    """A small batch with a backlog behind it of the threshold or more goes to batch transform; the
    backlog does not move the other modes."""
    assert policy(Mode.AUTO, threshold=100).route(SMALL, waiting=97) == (SMALL, [])
    assert policy(Mode.AUTO, threshold=100).route(SMALL, waiting=98) == ([], SMALL)
    assert policy(Mode.SERVERLESS, threshold=100).route(SMALL, waiting=10**6) == (SMALL, [])
    assert policy(Mode.BATCH, threshold=100).route(SMALL, waiting=0) == ([], SMALL)


def test_size_does_not_route_an_image_too_large_for_the_endpoint() -> None:
    # An image over the endpoint's limit is downsized for it (downsize.py), not sent to wait for a job.
    assert policy(Mode.AUTO, threshold=3).route([*SMALL, BIG]) == ([], [*SMALL, BIG])
    assert policy(Mode.AUTO, threshold=4).route([*SMALL, BIG]) == ([*SMALL, BIG], [])


@pytest.mark.parametrize(("mode", "limit"), [(Mode.SERVERLESS, SERVERLESS_MAX_BYTES), (Mode.BATCH, 6_000_000)])
def test_each_mode_has_its_payload_limit(mode: Mode, limit: int) -> None:
    assert policy(Mode.AUTO).max_bytes(mode) == limit
