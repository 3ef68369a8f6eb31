"""Job names and the one owner of a job's S3 layout: what the ingest side writes, the collector reads."""

from __future__ import annotations

import json
import re

import pytest

from pipeline.logic.errors import MalformedMessage
from pipeline.logic.jobs import JobFiles, JobLayout, QueuedShard, job_name, ref_json_size, shard_uri
from pipeline.logic.s3uri import S3Uri
from tests.unit.conftest import BUCKET, T0, image_ref

LAYOUT = JobLayout("dogbreed", "batch-input/", "manifests/", "transform-output/")


def shard(name: str, *keys: str) -> QueuedShard:
    return QueuedShard(S3Uri(BUCKET, f"batch-input/2026/11/22/{name}.jsonl"), tuple(image_ref(k) for k in keys))


def test_job_names_are_readable_unique_and_short_enough() -> None:
    images = [image_ref("incoming/a.jpg"), image_ref("incoming/b.jpg")]
    first = job_name("dogbreed", images, started=T0, nonce="one")
    assert re.fullmatch(r"dogbreed-20261122100000-[0-9a-f]{16}", first)
    assert job_name("dogbreed", images, started=T0, nonce="two") != first  # a resubmission gets a new name
    assert job_name("dogbreed", list(reversed(images)), started=T0, nonce="one") == first  # order does not matter


def test_a_prefix_that_makes_an_invalid_name_is_refused() -> None:
    with pytest.raises(ValueError, match="job prefix"):
        job_name("x" * 40, [image_ref("incoming/a.jpg")], started=T0, nonce="n")
    with pytest.raises(ValueError, match="job prefix"):
        job_name("dog_breed", [image_ref("incoming/a.jpg")], started=T0, nonce="n")


def test_shards_and_jobs_put_their_files_under_the_layout_prefixes() -> None:
    # flat under the prefix: no sub-folder whose output name AWS could read two ways
    assert shard_uri("batch-input/", BUCKET, started=T0, nonce="n1") == S3Uri(
        BUCKET, "batch-input/20261122T100000-n1.jsonl"
    )
    job = LAYOUT.new_job(BUCKET, [shard("s1", "incoming/a.jpg")], started=T0, nonce="n")
    assert job.manifest == S3Uri(BUCKET, f"manifests/{job.name}.json")
    assert job.index == S3Uri(BUCKET, f"manifests/{job.name}.images.json")
    assert job.inputs == S3Uri(BUCKET, "batch-input/")
    assert job.output == S3Uri(BUCKET, f"transform-output/{job.name}/")


def test_a_shard_message_round_trips_and_names_its_delivery() -> None:
    queued = shard("s1", "incoming/a.jpg", "incoming/café/b (1).png")
    read = QueuedShard.from_message("m-1", queued.message_body(), receive_count=3)
    assert read.uri == queued.uri and read.message_id == "m-1" and read.receive_count == 3
    assert [(r.key, r.etag, r.size, r.uploaded_at) for r in read.images] == [
        (r.key, r.etag, r.size, r.uploaded_at) for r in queued.images
    ]
    assert {(r.message_id, r.receive_count) for r in read.images} == {("m-1", 3)}
    assert len(queued.message_body().encode()) <= sum(ref_json_size(r) for r in queued.images) + 200


@pytest.mark.parametrize("body", ["not json", "[]", '{"shard": "s3://b/k"}', '{"shard": "nowhere", "images": []}'])
def test_a_message_that_is_not_a_shard_is_malformed(body: str) -> None:
    with pytest.raises(MalformedMessage, match="does not announce a shard"):
        QueuedShard.from_message("m-1", body)


def test_the_collector_reads_back_what_the_builder_wrote() -> None:
    # GIVEN a job of two shards, its manifest and index as the job builder writes them
    shards = [shard("s1", "incoming/a.jpg", "incoming/sub dir/b (1).png"), shard("s2", "incoming/café/c.jpg")]
    written = LAYOUT.new_job(BUCKET, shards, started=T0, nonce="n")
    assert written.manifest_doc(shards) == [
        {"prefix": f"s3://{BUCKET}/batch-input/"},
        "2026/11/22/s1.jsonl",
        "2026/11/22/s2.jsonl",
    ]
    # WHEN the collector reads the index back from the job's event (output path without its slash)
    doc = json.loads(json.dumps(written.index_doc(shards)))
    read, found = JobFiles.from_index(written.name, written.manifest, doc, str(written.output).rstrip("/"))
    # THEN it finds the same files and shards, and each shard's output where SageMaker writes it
    assert read == written
    assert [(s.uri, [r.key for r in s.images]) for s in found] == [(s.uri, [r.key for r in s.images]) for s in shards]
    expected = S3Uri(BUCKET, f"transform-output/{written.name}/2026/11/22/s1.jsonl.out")
    assert read.output_for(shards[0].uri.key) == expected


@pytest.mark.parametrize("doc", [[], {"prefix": "s3://b/batch-input/"}, {"prefix": "nowhere", "shards": []}])
def test_a_malformed_index_is_an_error(doc: object) -> None:
    with pytest.raises(ValueError, match="is malformed"):
        JobFiles.from_index("job", S3Uri(BUCKET, "manifests/job.json"), doc, f"s3://{BUCKET}/out/job/")


@pytest.mark.parametrize("uri", ["s3://bucket", "https://bucket/key", "s3:///key", "bucket/key"])
def test_s3_uris_need_a_bucket_and_a_key(uri: str) -> None:
    with pytest.raises(ValueError, match="not an s3://bucket/key URI"):
        S3Uri.parse(uri)


def test_s3_uris_round_trip() -> None:
    assert str(S3Uri.parse("s3://bucket/a/b c.jpg")) == "s3://bucket/a/b c.jpg"
    assert S3Uri.parse("s3://bucket/") == S3Uri("bucket", "")
