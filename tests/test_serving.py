"""The pushed model behind TF Serving's REST API, as MARCO clients call it; its TF Lite export."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from click.testing import CliRunner

from components.names import SERVING_CLASS_NAMES
from components.tools.serving import ServedModel, predict_request, scores_by_class
from pipeline.cli import main
from tests.scoring_fixtures import (
    VERSION,
    direct_probabilities,
    direct_serving,
    serving_dir,  # noqa: F401  (fixture)
    tf2_loaded,
)
from tests.trainer_fixtures import drop_image


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    """Two JPEGs and two PNGs of different drops."""
    rng = np.random.default_rng(7)
    return [drop_image(label, rng) for label in (1, 3, 0, 2)]


@pytest.fixture(scope="module")
def served(serving_dir) -> ServedModel:  # noqa: F811
    return ServedModel(str(serving_dir / str(VERSION)))


def released_client_body(images: list[bytes]) -> str:
    """The request as MARCO's released instructions build it, one instance per image.

    ``jpeg2json.py`` writes ``{"image_bytes": {"b64": ...}}`` per image; TF Serving's
    REST API takes a list of those under ``instances``.
    """
    instances = ",".join(
        '{"image_bytes":{"b64": "' + base64.b64encode(image).decode("ascii") + '"}}'
        for image in images
    )
    return '{"instances": [' + instances + "]}"


@pytest.mark.slow
def test_released_client_request_gets_classes_and_scores(served, serving_dir, images):  # noqa: F811
    status, response = served.predict_rest(released_client_body(images))
    assert status == 200, response
    response = json.loads(json.dumps(response))  # what goes over the wire
    predictions = response["predictions"]
    assert len(predictions) == len(images)
    expected = direct_probabilities(serving_dir / str(VERSION), images)
    direct = direct_serving(serving_dir / str(VERSION), images)
    for index, prediction in enumerate(predictions):
        assert set(prediction) == {"classes", "scores"}
        assert sorted(prediction["classes"]) == sorted(SERVING_CLASS_NAMES)
        scores = prediction["scores"]
        assert scores == sorted(scores, reverse=True)
        assert sum(scores) == pytest.approx(1.0, abs=1e-5)
        # The same numbers as the probabilities signature, class by class...
        by_class = scores_by_class(prediction)
        for class_index, name in enumerate(SERVING_CLASS_NAMES):
            assert by_class[name] == pytest.approx(float(expected[index, class_index]),
                                                   abs=1e-6)
        # ...and as serving_default called in process.
        assert prediction["classes"] == [c.decode() for c in direct["classes"][index]]
        np.testing.assert_allclose(scores, direct["scores"][index], atol=1e-6)
    # Different drops get different scores: the comparison above means something.
    assert len({tuple(p["scores"]) for p in predictions}) == len(images)


@pytest.mark.slow
def test_released_batch_script_finds_every_class_by_its_released_name(serving_dir, images):  # noqa: F811
    """The released batch script zips ``classes`` with ``scores`` into a dict and reads
    ``b'Crystals'``, ``b'Other'``, ``b'Precipitate'`` and ``b'Clear'`` out of it."""
    direct = direct_serving(serving_dir / str(VERSION), images)
    expected = direct_probabilities(serving_dir / str(VERSION), images)
    for index in range(len(images)):
        dictionary = dict(zip(direct["classes"][index], direct["scores"][index], strict=True))
        looked_up = [dictionary[b"Clear"], dictionary[b"Crystals"], dictionary[b"Other"],
                     dictionary[b"Precipitate"]]
        np.testing.assert_allclose(looked_up, expected[index], atol=1e-6)
        prediction = max(dictionary.items(), key=lambda item: item[1])[0]
        assert str(prediction)[2:-1] == SERVING_CLASS_NAMES[int(np.argmax(expected[index]))]


def test_predict_request_builds_the_released_body(images):
    assert predict_request(images) == json.loads(released_client_body(images))
    assert predict_request(images[:1], "probabilities")["signature_name"] == "probabilities"


@pytest.mark.parametrize("bad, message", [
    (b"", "empty"),
    (b"GIF89a but not really", "GIF"),
    (b"a text file", "Unknown image file format"),
])
@pytest.mark.slow
def test_malformed_images_get_an_error_response(served, images, bad, message):
    status, response = served.predict_rest(released_client_body([bad]))
    assert status == 400
    assert message.lower() in response["error"].lower(), response
    assert set(response) == {"error"}


@pytest.mark.slow
def test_one_malformed_image_fails_the_whole_request(served, images):
    truncated = images[0][: len(images[0]) // 2]
    status, response = served.predict_rest(released_client_body([images[1], truncated]))
    assert status == 400 and "JPEG" in response["error"]
    assert "predictions" not in response
    # The model keeps serving after the error.
    status, response = served.predict_rest(released_client_body(images[:1]))
    assert status == 200 and len(response["predictions"]) == 1


@pytest.mark.parametrize("body, status, message", [
    ("{not json", 400, "not JSON"),
    ('{"instances": []}', 400, "non-empty list"),
    ('{"examples": [1]}', 400, "exactly one of"),
    ('{"instances": [{"image": {"b64": "AAAA"}}]}', 400, "image_bytes"),
    ('{"instances": [{"image_bytes": {"b64": "%%%"}}]}', 400, "base64"),
    ('{"signature_name": "classify", "instances": [{"b64": "AAAA"}]}', 404, "classify"),
])
@pytest.mark.slow
def test_bad_requests_are_refused_as_tf_serving_does(served, body, status, message):
    got_status, response = served.predict_rest(body)
    assert (got_status, set(response)) == (status, {"error"})
    assert message in response["error"]


@pytest.mark.slow
def test_bare_b64_instances_columnar_inputs_and_other_signatures(served, serving_dir, images):  # noqa: F811
    encoded = [{"b64": base64.b64encode(i).decode()} for i in images[:2]]
    expected = direct_probabilities(serving_dir / str(VERSION), images[:2])
    # A single-input signature takes bare values as instances.
    status, rows = served.predict_rest({"instances": encoded})
    assert status == 200 and len(rows["predictions"]) == 2
    # Columnar format: outputs come back as whole tensors.
    status, columns = served.predict_rest({"inputs": {"image_bytes": encoded}})
    assert status == 200
    assert [scores_by_class({"classes": c, "scores": s}) for c, s in
            zip(columns["outputs"]["classes"], columns["outputs"]["scores"], strict=True)] == [
        scores_by_class(p) for p in rows["predictions"]]
    # A single-output signature gives bare values per instance.
    status, response = served.predict_rest({"signature_name": "probabilities",
                                            "instances": encoded})
    assert status == 200
    np.testing.assert_allclose(response["predictions"], expected, atol=1e-6)


@pytest.mark.slow
def test_tflite_export_matches_the_saved_model(serving_dir, images, tmp_path):  # noqa: F811
    from components.tools.scoring.tflite import TFLiteScorer, prepare_image, sample_images

    out = tmp_path / "marco.tflite"
    result = CliRunner().invoke(main, ["export-tflite", "--model", str(serving_dir),
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "input 'image': float32 [1, 75, 75, 3]" in result.output
    scorer = TFLiteScorer(str(out))
    assert scorer.input_size == 75
    # Square and non-square photographs: the centre crop is part of the recipe.
    checks = [*images, *sample_images(3, seed=5)]
    lite = np.stack([scorer.probabilities(prepare_image(image, 75)) for image in checks])
    reference = direct_probabilities(serving_dir / str(VERSION), checks)
    assert np.max(np.abs(lite - reference)) < 1e-5
    # The images are told apart far beyond that tolerance, so the match is not trivial.
    assert np.max(np.abs(reference - reference.mean(axis=0))) > 1e-3
    np.testing.assert_allclose(lite.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_tflite_input_size_comes_from_the_network(serving_dir):  # noqa: F811
    import tensorflow as tf

    from components.tools.scoring.tflite import network_input_size

    assert network_input_size(tf2_loaded(serving_dir / str(VERSION))) == 75
    with pytest.raises(ValueError, match="no Keras call function"):
        network_input_size(tf.Module())

