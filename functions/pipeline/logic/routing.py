"""Where an image goes: the serverless endpoint (one request per image) or a batch transform job."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.logic.outcomes import ImageRef, Mode

# SageMaker serverless endpoints take request payloads of at most 4 MB (counted as 10**6 bytes to be safe).
SERVERLESS_MAX_BYTES = 4_000_000


@dataclass(frozen=True)
class RoutingPolicy:
    mode: Mode
    auto_batch_threshold: int  # in auto mode, a Lambda batch of this many images goes to batch transform
    batch_max_bytes: int  # the largest image a transform job takes (its MaxPayloadInMB)
    max_image_pixels: int  # images declaring more pixels are decompression bombs
    serverless_max_bytes: int = SERVERLESS_MAX_BYTES

    def max_bytes(self, mode: Mode) -> int:
        return self.serverless_max_bytes if mode is Mode.SERVERLESS else self.batch_max_bytes

    def route(self, images: list[ImageRef]) -> tuple[list[ImageRef], list[ImageRef]]:
        """Split images into (serverless, batch) by the mode. In auto mode a batch of at least the
        threshold goes to batch transform. Size does not route: an image over a mode's limit is
        downsized for it (downsize.py)."""
        if self.mode is Mode.SERVERLESS or (self.mode is Mode.AUTO and len(images) < self.auto_batch_threshold):
            return images, []
        return [], images
