"""A candidate model tried on images already classified (`make compare`): the ingest function's part,
and where a trial's files live.

`make compare` (cli/compare.py) picks a sample of classified images and sends one small request per
image to the reclassify queue, naming the trial. The ingest function takes them from there, under its
own role: it reads each image and checks it as it checks an upload (downsized to fit a transform
request), and writes the sample into shards of the flood path's format (jobs.py) under the trial's
input/ folder, with an index of each shard's images (and of those it could not take) under index/.
Nothing is written to the predictions table. The command then runs a transform job of the candidate
over the shards; its answers go to the trial's output/ folder.

A request delivered twice puts its image in two shards: the candidate answers it twice, alike, and
the command reads one answer per image.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger

import answers
from pipeline.logic.deadline import Deadline
from pipeline.logic.errors import ObjectChanged, RejectedImage, TransientError
from pipeline.logic.jobs import JobFiles, shard_uri
from pipeline.logic.outcomes import ImageRef, Mode
from pipeline.logic.ports import ObjectStore
from pipeline.logic.s3uri import S3Uri

logger = Logger(child=True)

TRIALS_PREFIX = "trials/"  # in the images bucket; template.yaml's roles and lifecycle rule name it
_TRIAL_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}$")  # within a transform job's and a model's 63 characters


def check_trial_id(trial: object) -> str:
    if not isinstance(trial, str) or not _TRIAL_ID.match(trial):
        raise ValueError(f"trial id {trial!r} is not 1-41 lower-case letters, digits and hyphens")
    return trial


def new_trial_id(now: datetime) -> str:
    return f"{now.astimezone(UTC):%Y%m%dt%H%M%S}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class TrialFiles:
    """One trial's files in the images bucket: the candidate's artifact, the shards and their index,
    and the transform job's manifest and output (JobFiles, the flood path's layout)."""

    bucket: str
    trial: str

    def __post_init__(self) -> None:
        check_trial_id(self.trial)

    @property
    def root(self) -> S3Uri:
        return S3Uri(self.bucket, f"{TRIALS_PREFIX}{self.trial}/")

    @property
    def name(self) -> str:
        """The trial's transform job and model: outside the pipeline's job prefix, so its collector
        never takes the job's end."""
        return f"trial-{self.trial}"

    @property
    def model(self) -> S3Uri:
        return self.root.join("model.tar.gz")

    @property
    def index(self) -> S3Uri:
        return self.root.join("index/")

    @property
    def report(self) -> S3Uri:
        return self.root.join("report.json")

    @property
    def job(self) -> JobFiles:
        return JobFiles(
            name=self.name,
            manifest=self.root.join("manifest.json"),
            inputs=self.root.join("input/"),
            output=self.root.join("output/"),
        )


@dataclass(frozen=True)
class TrialRequest:
    trial: str
    image: ImageRef


@dataclass
class TrialResult:
    sharded: int = 0
    refused: int = 0  # rejected now, or overwritten since: in an index, not in a shard
    failed_message_ids: set[str] = field(default_factory=set)  # to deliver again (transient, out of time)


class Trial:
    """Write the requested images into a trial's shards. `read` is the ingest function's own read of an
    image for a transform request (Ingest.read_checked)."""

    def __init__(
        self,
        objects: ObjectStore,
        read: Callable[[ImageRef, Mode], tuple[bytes, str]],
        max_shard_bytes: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.objects = objects
        self.read = read
        self.max_shard_bytes = max_shard_bytes
        self.clock = clock

    def run(self, requests: list[TrialRequest], deadline: Deadline | None = None) -> TrialResult:
        result = TrialResult()
        deadline = deadline or Deadline.never()
        groups: dict[TrialFiles, list[ImageRef]] = {}
        for request in requests:
            groups.setdefault(TrialFiles(request.image.bucket, request.trial), []).append(request.image)
        for files, refs in groups.items():
            shard = _Shard(files)
            for ref in refs:
                if deadline.passed(self.clock()) and (shard.refs or result.sharded):
                    result.failed_message_ids.add(ref.message_id)  # comes again, with more time
                    continue
                try:
                    data, _ = self.read(ref, Mode.BATCH)
                except RejectedImage as exc:
                    shard.refused.append((ref, f"{exc.code}: {exc.reason}"))
                    continue
                except ObjectChanged:
                    shard.refused.append((ref, "ObjectChanged: overwritten since it was classified"))
                    continue
                except TransientError as exc:
                    logger.warning("trial image not read; it comes again", key=ref.key, error=str(exc))
                    result.failed_message_ids.add(ref.message_id)
                    continue
                line = answers.dumps_record(ref.key, data) + b"\n"
                if shard.lines and shard.size + len(line) > self.max_shard_bytes:
                    self._write(shard, result)
                    shard = _Shard(files)
                shard.add(ref, line)
            self._write(shard, result)
        return result

    def _write(self, shard: _Shard, result: TrialResult) -> None:
        """The shard, then its index (which the command counts): an index names only written shards."""
        if not shard.refs and not shard.refused:
            return
        nonce = uuid.uuid4().hex
        uri = shard_uri(shard.files.job.inputs.key, shard.files.bucket, started=self.clock(), nonce=nonce)
        try:
            if shard.refs:
                self.objects.put_bytes(uri.bucket, uri.key, b"".join(shard.lines), answers.JSON_LINES)
            index = shard.files.index.join(f"{nonce}.json")
            self.objects.put_json(index.bucket, index.key, shard.index_doc(uri))
        except TransientError as exc:
            logger.warning("trial shard not written; its images come again", trial=shard.files.trial, error=str(exc))
            result.failed_message_ids.update(ref.message_id for ref in shard.refs + [ref for ref, _ in shard.refused])
            return
        result.sharded += len(shard.refs)
        result.refused += len(shard.refused)
        logger.info("trial shard written", trial=shard.files.trial, images=len(shard.refs), refused=len(shard.refused))


@dataclass
class _Shard:
    files: TrialFiles
    refs: list[ImageRef] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)
    size: int = 0
    refused: list[tuple[ImageRef, str]] = field(default_factory=list)  # not in the shard, and why

    def add(self, ref: ImageRef, line: bytes) -> None:
        self.refs.append(ref)
        self.lines.append(line)
        self.size += len(line)

    def index_doc(self, uri: S3Uri) -> dict[str, Any]:
        return {
            "shard": str(uri) if self.refs else None,
            "images": [ref.key for ref in self.refs],
            "refused": {ref.key: why for ref, why in self.refused},
        }


def read_index(body: bytes) -> tuple[S3Uri | None, list[str], dict[str, str]]:
    """(shard, its image keys in line order, refused keys with why) of one index file."""
    doc = json.loads(body)
    shard = S3Uri.parse(doc["shard"]) if doc.get("shard") else None
    return shard, [str(key) for key in doc["images"]], {str(k): str(v) for k, v in doc["refused"].items()}
