"""Where an image goes: the serverless endpoint or a batch transform job."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.logic.outcomes import ImageRef, Mode

# SageMaker serverless endpoints take request payloads of at most 4 MB (counted as 10**6 bytes to be safe).
SERVERLESS_MAX_BYTES = 4_000_000


@dataclass(frozen=True)
class RoutingPolicy:
    mode: Mode
    auto_batch_threshold: int  # in auto mode, from this many images waiting (the batch's included) to batch transform
    batch_max_bytes: int  # the largest image a transform job takes (its MaxPayloadInMB)
    max_image_pixels: int  # images declaring more pixels are decompression bombs
    serverless_max_bytes: int = SERVERLESS_MAX_BYTES

    def max_bytes(self, mode: Mode) -> int:
        return self.serverless_max_bytes if mode is Mode.SERVERLESS else self.batch_max_bytes

    def route(self, images: list[ImageRef], waiting: int = 0) -> tuple[list[ImageRef], list[ImageRef]]:
        """Split images into (serverless, batch) by the mode. In auto mode a Lambda batch goes to
        batch transform when it and the `waiting` images behind it in the upload queue are at least
        the threshold: a backlog larger than the endpoint classifies while a job starts
        (docs/architecture.md, "Which mode for what"). Size does not route: an image over a mode's
        limit is downsized for it (downsize.py)."""
        if self.mode is Mode.SERVERLESS:
            return images, []
        if self.mode is Mode.AUTO and len(images) + waiting < self.auto_batch_threshold:
            return images, []
        return [], images
