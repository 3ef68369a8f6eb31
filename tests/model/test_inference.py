"""model/serving/inference.py served as SageMaker serves it: in a model container running the PyTorch
inference image's serving stack (TorchServe and the toolkit, under torch 2.6; tests/model/conftest.py)."""

from __future__ import annotations

import io
import json
import socket
import threading
from pathlib import Path
from typing import Any

import classifier
import inference
import pytest
import torch
from PIL import Image

import answers
from devstack.aws.container import ModelContainer, Response, pack_model, unpack_model
from devstack.aws.provision import model_environment
from tests.model.conftest import Serve
from tests.pipeline import images

pytestmark = pytest.mark.slow  # serves a trained model

FORMATS = {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "application/x-image": "JPEG",
    "image/gif": "GIF",
    "image/bmp": "BMP",
    "image/webp": "WEBP",
    "image/tiff": "TIFF",
}


def body(response: Response) -> dict[str, Any]:
    """A prediction, or the error record that leads a toolkit error body (a traceback follows it)."""
    return dict(json.JSONDecoder().raw_decode(response.body.decode())[0])


def sample_image(dataset: Path, label: str, fmt: str = "JPEG") -> bytes:
    folder = next(p for p in (dataset / "test").iterdir() if p.name.startswith(label))
    image = Image.open(next(folder.glob("*.jpg")))
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("content_type", sorted(FORMATS))
def test_every_image_content_type_is_classified(
    endpoint_container: ModelContainer, dataset: Path, content_type: str
) -> None:
    response = endpoint_container.invoke(sample_image(dataset, "003", FORMATS[content_type]), content_type)
    assert response.status == 200
    assert response.content_type == "application/json"
    answer = body(response)
    assert answer["predicted_label"] == "003"
    assert answer["class_name"] == "Airedale_terrier"
    assert answer["confidence"] == answer["top5"][0]["probability"]
    probabilities = [c["probability"] for c in answer["top5"]]
    assert len(probabilities) == 5 and probabilities == sorted(probabilities, reverse=True)
    assert 0.2 < sum(probabilities) <= 1.0001


def test_predictions_are_right_on_held_out_images(endpoint_container: ModelContainer, dataset: Path) -> None:
    correct = total = 0
    for folder in sorted((dataset / "test").iterdir()):
        for path in folder.glob("*.jpg"):
            total += 1
            correct += (
                body(endpoint_container.invoke(path.read_bytes(), "image/jpeg"))["predicted_label"] == folder.name[:3]
            )
    assert correct / total >= 0.8


BAD = [
    ("not an image", b"shopping list: kibble\n", "image/jpeg", 400, "NotAnImage"),
    ("empty", b"", "image/jpeg", 400, "EmptyObject"),
    ("truncated", images.truncated_jpeg(), "image/jpeg", 400, "InvalidImage"),
    ("corrupt", images.corrupt_jpeg(), "image/jpeg", 400, "InvalidImage"),
    ("decompression bomb", images.png_bomb(), "image/png", 413, "DecompressionBomb"),
    ("oversize", images.jpeg()[:-2] + b"\x00" * 6_100_000 + b"\xff\xd9", "image/jpeg", 413, "TooLarge"),
    ("text content type", b"hello", "text/plain", 415, "UnsupportedContentType"),
]


@pytest.mark.parametrize(("name", "data", "content_type", "status", "code"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_a_client_error(
    endpoint_container: ModelContainer, name: str, data: bytes, content_type: str, status: int, code: str
) -> None:
    response = endpoint_container.invoke(data, content_type)
    assert response.status == status
    assert body(response)["error"]["code"] == code
    assert body(response)["error"]["message"]


@pytest.mark.parametrize(("name", "data", "content_type", "status", "code"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_under_batch_transform_is_an_error_record(
    job_container: ModelContainer, name: str, data: bytes, content_type: str, status: int, code: str
) -> None:
    response = job_container.invoke(data, content_type)
    assert response.status == 200  # the job goes on
    assert json.loads(response.body) == {"error": {"code": code, "message": body(response)["error"]["message"]}}


def multi_record_body(records: list[tuple[str, bytes]]) -> bytes:
    return b"\n".join(answers.dumps_record(record_id, image) for record_id, image in records)


def test_a_multi_record_request_answers_one_line_per_image_in_order(serve: Serve, dataset: Path) -> None:
    """Good and bad images mixed, over several mini-batches: each gets its own line, and a good
    image gets the answer it gets alone."""
    container = serve(BATCH_SIZE="2")  # three mini-batches
    good = [(f"incoming/{label}.jpg", sample_image(dataset, label)) for label in ("001", "002", "003", "001", "002")]
    bad = [(f"incoming/{name}.jpg", data) for name, data, content_type, *_ in BAD if content_type != "text/plain"]
    records = [good[0], bad[0], *good[1:3], *bad[1:], *good[3:]]
    response = container.invoke(multi_record_body(records), answers.JSON_LINES, accept=answers.JSON_LINES)
    assert response.status == 200 and response.content_type == answers.JSON_LINES
    lines = response.body.decode().split("\n")
    assert len(lines) == len(records)  # no trailing newline: SageMaker adds one per response (AssembleWith=Line)
    assert [json.loads(line)["id"] for line in lines] == [record_id for record_id, _ in records]
    by_id, broken = answers.loads_lines(response.body)
    assert not broken
    for record_id, image in good:
        alone = answers.loads(container.invoke(image, "image/jpeg").body)
        together = by_id[record_id]
        assert isinstance(alone, answers.Prediction) and isinstance(together, answers.Prediction)
        assert together.label == alone.label == record_id[len("incoming/") : -len(".jpg")]
        assert together.confidence == pytest.approx(alone.confidence, abs=1e-4)
    expected_codes = {f"incoming/{name}.jpg": code for name, _, kind, _, code in BAD if kind != "text/plain"}
    assert {i: a.code for i, a in by_id.items() if isinstance(a, answers.ErrorRecord)} == expected_codes


def test_a_multi_record_request_is_decoded_in_decode_threads(
    trained: tuple[Path, dict[str, object]], dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DECODE_THREADS workers decode a request's records, never more, and the answers keep the input order."""
    monkeypatch.setenv("DECODE_THREADS", "3")
    model = inference.model_fn(str(trained[0]))
    threads: set[str] = set()
    prepare = inference._prepare

    def watched(request: inference.Request, loaded: inference.Classifier) -> torch.Tensor:
        threads.add(threading.current_thread().name)
        return prepare(request, loaded)

    monkeypatch.setattr(inference, "_prepare", watched)
    labels = ["001", "002", "003", "004", "005"] * 4
    records = [(f"incoming/{n}-{label}.jpg", sample_image(dataset, label)) for n, label in enumerate(labels)]
    answered = inference.predict_fn(inference.Request(multi_record_body(records), answers.JSON_LINES), model)
    assert isinstance(answered, list)
    assert [record_id for record_id, _ in answered] == [record_id for record_id, _ in records]
    assert 1 <= len(threads) <= 3 and all(name.startswith("decode") for name in threads)


def test_a_line_that_is_not_a_record_fails_the_request(endpoint_container: ModelContainer, dataset: Path) -> None:
    request = multi_record_body([("incoming/a.jpg", sample_image(dataset, "001"))]) + b"\nnot a record"
    response = endpoint_container.invoke(request, answers.JSON_LINES, accept=answers.JSON_LINES)
    assert response.status == 400
    assert body(response)["error"]["code"] == "BrokenRecord"


def test_an_unsupported_accept_is_refused(endpoint_container: ModelContainer, dataset: Path) -> None:
    response = endpoint_container.invoke(sample_image(dataset, "001"), "image/jpeg", accept="text/csv")
    assert response.status == 406


def test_a_server_fault_is_not_bad_input(
    trained: tuple[Path, dict[str, object]], dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fault of the model itself leaves the handler as it is raised, which the toolkit answers
    with a 500 (a retry, not a REJECTED image); only bad input becomes a 4xx."""
    from sagemaker_inference.errors import GenericInferenceToolkitError

    def broken(*_: Any) -> Any:
        raise RuntimeError("CUDA error: device-side assert")

    monkeypatch.delenv("BAD_INPUT_POLICY", raising=False)
    loaded = inference.model_fn(str(trained[0]))
    monkeypatch.setattr(loaded, "network", broken)
    request = inference.input_fn(sample_image(dataset, "001"), "image/jpeg")
    with pytest.raises(RuntimeError, match="CUDA error") as raised:
        inference.predict_fn(request, loaded)
    assert not isinstance(raised.value, GenericInferenceToolkitError)


def test_model_fn_needs_no_network(trained: tuple[Path, dict[str, object]], monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("model_fn opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    loaded = inference.model_fn(str(trained[0]))
    assert len(loaded.breeds) == 5


def test_serving_preprocessing_matches_evaluation(dataset: Path) -> None:
    """The fast JPEG path (reduced-scale decode) gives the tensor eval_transform gives."""
    path = next((dataset / "test").rglob("*.jpg"))
    expected = classifier.eval_transform(64)(Image.open(path).convert("RGB"))
    fast = classifier.eval_transform(64)(
        inference.decode_image(path.read_bytes(), max_pixels=10**8, draft_size=classifier.resize_size(64))
    )
    assert fast.shape == expected.shape
    assert torch.mean(torch.abs(fast - expected)).item() < 0.05


def test_a_photo_stored_sideways_is_decoded_as_its_owner_sees_it(dataset: Path) -> None:
    """Phones store the sensor's pixels and the turn in EXIF (orientation 6: a quarter turn)."""
    path = next((dataset / "test").rglob("*.jpg"))
    seen = Image.open(path).convert("RGB")
    assert seen.width != seen.height
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    seen.transpose(Image.Transpose.ROTATE_90).save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    decoded = inference.decode_image(buffer.getvalue(), max_pixels=10**8, draft_size=None)
    assert decoded.size == seen.size
    difference = torch.mean(torch.abs(classifier.eval_transform(64)(decoded) - classifier.eval_transform(64)(seen)))
    assert difference.item() < 0.05


@pytest.mark.parametrize("draft_size", [None, 64])
def test_a_photo_in_display_p3_is_decoded_in_srgb(draft_size: int | None) -> None:
    """An iPhone JPEG embeds Display P3, whose numbers mean more saturated colours than sRGB's: the
    network, which learned sRGB photos, sees them converted (the training loader decodes alike)."""
    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), (200, 100, 100)).save(
        buffer, "JPEG", quality=95, icc_profile=images.display_p3_profile()
    )
    decoded = inference.decode_image(buffer.getvalue(), max_pixels=10**8, draft_size=draft_size)
    red, green, _ = decoded.getpixel((100, 100))  # type: ignore[misc]
    assert decoded.mode == "RGB" and red >= 210 and green <= 96, decoded.getpixel((100, 100))
    plain = io.BytesIO()
    Image.new("RGB", (640, 480), (200, 100, 100)).save(plain, "JPEG", quality=95)  # no profile: sRGB as it is
    as_is = inference.decode_image(plain.getvalue(), max_pixels=10**8, draft_size=draft_size).getpixel((100, 100))
    assert all(abs(a - b) <= 3 for a, b in zip(as_is, (200, 100, 100), strict=True))  # type: ignore[arg-type]


def test_the_training_artifact_is_served_as_is(
    trained: tuple[Path, dict[str, object]], tmp_path: Path, dataset: Path
) -> None:
    """model.tar.gz as SageMaker builds it from SM_MODEL_DIR, unpacked as SageMaker unpacks it and
    served from /opt/ml/model by the artifact's own code/ (the toolkit puts it on the import path)."""
    archive = pack_model(trained[0], tmp_path / "model.tar.gz")
    unpacked = unpack_model(archive, tmp_path / "model")
    log = tmp_path / "container.log"
    container = ModelContainer(unpacked, model_environment(), log).start()
    try:
        first = container.invoke(sample_image(dataset, "002"), "image/jpeg")
        second = container.invoke(b"not an image", "application/x-image")
    finally:
        container.stop()
    assert first.status == 200 and json.loads(first.body)["class_name"] == "Afghan_hound"
    assert second.status == 400
    assert "/opt/ml/model/code/inference.py" in log.read_text()  # the artifact's handler, in its traceback
