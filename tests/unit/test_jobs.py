"""Job names and the one owner of a job's S3 layout: what the ingest side writes, the collector reads."""

from __future__ import annotations

import re

import pytest

from pipeline.logic.jobs import JobFiles, JobLayout, job_name
from pipeline.logic.s3uri import S3Uri
from tests.unit.conftest import BUCKET, T0, image_ref

LAYOUT = JobLayout("dogbreed", "incoming/", "manifests/", "transform-output/")


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


def test_a_new_job_puts_its_files_under_the_layout_prefixes() -> None:
    job = LAYOUT.new_job(BUCKET, [image_ref("incoming/a.jpg")], started=T0, nonce="n")
    assert job.manifest == S3Uri(BUCKET, f"manifests/{job.name}.json")
    assert job.inputs == S3Uri(BUCKET, "incoming/")
    assert job.output == S3Uri(BUCKET, f"transform-output/{job.name}/")


def test_the_collector_reads_back_what_the_ingest_side_wrote() -> None:
    # GIVEN a job's manifest, as the ingest function writes it
    keys = ["incoming/a.jpg", "incoming/sub dir/b (1).png", "incoming/café/c.jpg"]
    written = LAYOUT.new_job(BUCKET, [image_ref(k) for k in keys], started=T0, nonce="n")
    doc = written.manifest_doc(keys)
    assert doc[0] == {"prefix": f"s3://{BUCKET}/incoming/"}
    assert doc[1:] == ["a.jpg", "sub dir/b (1).png", "café/c.jpg"]
    # WHEN the collector reads it back from the job's event (output path without its slash)
    read, found = JobFiles.from_manifest(written.name, written.manifest, doc, str(written.output).rstrip("/"))
    # THEN it finds the same files and keys, and each image's output where SageMaker writes it
    assert read == written
    assert found == keys
    assert read.output_for("incoming/sub dir/b (1).png") == S3Uri(
        BUCKET, f"transform-output/{written.name}/sub dir/b (1).png.out"
    )


def test_only_images_under_the_input_prefix_can_join_a_job() -> None:
    assert LAYOUT.holds("incoming/a.jpg") and not LAYOUT.holds("elsewhere/a.jpg")
    job = LAYOUT.new_job(BUCKET, [], started=T0, nonce="n")
    with pytest.raises(ValueError, match="outside the input prefix"):
        job.manifest_doc(["elsewhere/a.jpg"])


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"prefix": "s3://b/incoming/"}, "does not start with"),
        ([], "does not start with"),
        (["a.jpg"], "does not start with"),
        ([{"prefix": "s3://other-bucket/incoming/"}, "a.jpg"], "is not in bucket"),
    ],
)
def test_a_malformed_manifest_is_an_error(doc: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        JobFiles.from_manifest("job", S3Uri(BUCKET, "manifests/job.json"), doc, f"s3://{BUCKET}/out/job/")


@pytest.mark.parametrize("uri", ["s3://bucket", "https://bucket/key", "s3:///key", "bucket/key"])
def test_s3_uris_need_a_bucket_and_a_key(uri: str) -> None:
    with pytest.raises(ValueError, match="not an s3://bucket/key URI"):
        S3Uri.parse(uri)


def test_s3_uris_round_trip() -> None:
    assert str(S3Uri.parse("s3://bucket/a/b c.jpg")) == "s3://bucket/a/b c.jpg"
    assert S3Uri.parse("s3://bucket/") == S3Uri("bucket", "")
