"""ServedModelBaseline and the Pusher, run directly on local serving folders.

The executors get hand-made artifacts, as TFX's launcher would hand them over, and
tiny tf.keras SavedModels stand in for trained models.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import tensorflow as tf
from tfx.types import standard_artifacts
from tfx.utils import path_utils

from components.baseline import executor as baseline_executor
from components.baseline import newest_served_version, served
from components.baseline.driver import Driver
from components.pusher import (
    NOT_PUSHED_REASON_PROPERTY,
    PUSHED_DESTINATION_PROPERTY,
    PUSHED_PROPERTY,
    SERVED_VERSION_PROPERTY,
)
from components.pusher import Executor as PusherExecutor


def _fake_version(serving: Path, name: str, content: bytes = b"graph") -> Path:
    """A version folder with a saved_model.pb (enough to count as served)."""
    folder = serving / name
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(content)
    (folder / "variables" / "variables.index").write_bytes(b"index " + content)
    return folder


def _keras_saved_model(path: Path, seed: int) -> Path:
    tf.keras.utils.set_random_seed(seed)
    model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(2, name="scores")])
    model.save(str(path), save_format="tf")
    return path


@pytest.fixture(scope="module")
def keras_models(tmp_path_factory) -> tuple[Path, Path]:
    """Two tiny SavedModels with different weights."""
    folder = tmp_path_factory.mktemp("keras")
    return _keras_saved_model(folder / "a", 1), _keras_saved_model(folder / "b", 2)


def _trained_model(root: Path, saved_model: Path, artifact_id: int = 1):
    """A Model artifact laid out as the Trainer writes it (``<uri>/Format-Serving``)."""
    model = standard_artifacts.Model()
    model.uri = str(root)
    model.id = artifact_id
    shutil.copytree(saved_model, path_utils.serving_model_dir(str(root)))
    return model


def _run_baseline(serving: Path, out: Path, served_version: str | None = None,
                  init_from: Path | None = None):
    model = standard_artifacts.Model()
    model.uri = str(out)
    out.mkdir(parents=True)
    properties = {baseline_executor.SERVING_DIR_KEY: str(serving),
                  baseline_executor.SERVED_VERSION_KEY: served_version}
    if init_from is not None:
        properties[baseline_executor.INIT_FROM_KEY] = str(init_from)
    baseline_executor.Executor().Do({}, {baseline_executor.MODEL_KEY: [model]}, properties)
    return model


def test_newest_served_version_is_the_highest_numbered_saved_model(tmp_path):
    serving = tmp_path / "serving"
    assert newest_served_version(str(serving)) == ""  # no folder
    serving.mkdir()
    assert newest_served_version(str(serving)) == ""  # no versions
    for name in ("9", "12", "100"):
        _fake_version(serving, name)
    # Not versions: other names, a file, and a newer folder still without saved_model.pb.
    _fake_version(serving, "latest")
    _fake_version(serving, "20000-backup")
    (serving / "99999").write_text("a file")
    (serving / "500" / "variables").mkdir(parents=True)
    assert newest_served_version(str(serving)) == "100"  # numerically, not "9"
    assert served.newest_served(str(serving)) == served.ServedVersion(
        "100", str(serving / "100"))


def test_baseline_is_empty_when_nothing_is_served(tmp_path):
    for serving in (tmp_path / "missing", tmp_path / "empty"):
        if serving.name == "empty":
            (serving / "not-a-version").mkdir(parents=True)
        model = _run_baseline(serving, tmp_path / "out" / serving.name)
        assert model.get_string_custom_property(
            baseline_executor.SERVED_VERSION_PROPERTY) == ""
        assert baseline_executor.is_empty(model)
        assert list(Path(model.uri).iterdir()) == []


def test_baseline_copies_the_newest_version_where_the_evaluator_looks(
    tmp_path, keras_models
):
    serving = tmp_path / "serving"
    _fake_version(serving, "1700000000")
    shutil.copytree(keras_models[1], serving / "1700000500")
    served.write_push_record(str(serving / "1700000500"), {
        served.RECORD_MODEL_URI: "/runs/Trainer/model/7", served.RECORD_MODEL_ID: 7})
    _fake_version(serving, "old")

    model = _run_baseline(serving, tmp_path / "out", served_version="1700000500")

    assert not baseline_executor.is_empty(model)
    properties = {k: model.get_string_custom_property(k) for k in (
        baseline_executor.SERVED_VERSION_PROPERTY, baseline_executor.SERVED_PATH_PROPERTY,
        baseline_executor.SERVED_DIGEST_PROPERTY, baseline_executor.SERVED_MODEL_URI_PROPERTY)}
    assert properties == {
        "served_version": "1700000500",
        "served_path": str(serving / "1700000500"),
        "served_digest": served.saved_model_digest(str(keras_models[1])),
        "served_model_uri": "/runs/Trainer/model/7",
    }
    # The Evaluator's path for a (new-style) Model artifact holds the served SavedModel.
    copy = path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model))
    assert copy == str(tmp_path / "out" / "Format-Serving")
    loaded = tf.saved_model.load(copy)
    expected = tf.saved_model.load(str(keras_models[1]))
    x = tf.constant([[1.0, 2.0, 3.0]])
    tf.debugging.assert_equal(loaded.signatures["serving_default"](x)["scores"],
                              expected.signatures["serving_default"](x)["scores"])


def test_baseline_is_the_init_model_until_a_model_is_served(tmp_path, keras_models):
    """A run that starts from an earlier model (init_from) is compared with it while
    this pipeline serves nothing; once it serves a model, that model is the baseline."""
    init = tmp_path / "imported"
    shutil.copytree(keras_models[0], init / "1600000000")
    _fake_version(init, "1500000000")
    serving = tmp_path / "serving"

    model = _run_baseline(serving, tmp_path / "out1", init_from=init)
    assert not baseline_executor.is_empty(model)
    assert baseline_executor.is_init_baseline(model)
    assert model.get_string_custom_property(
        baseline_executor.SERVED_VERSION_PROPERTY) == "init:1600000000"
    assert model.get_string_custom_property(
        baseline_executor.SERVED_PATH_PROPERTY) == str(init / "1600000000")
    copy = path_utils.serving_model_dir(model.uri)
    assert served.saved_model_digest(copy) == served.saved_model_digest(str(keras_models[0]))

    # A bare SavedModel folder works too.
    model = _run_baseline(serving, tmp_path / "out2", init_from=keras_models[0])
    assert model.get_string_custom_property(
        baseline_executor.SERVED_VERSION_PROPERTY) == "init"

    shutil.copytree(keras_models[1], serving / "1700000000")
    model = _run_baseline(serving, tmp_path / "out3", init_from=init)
    assert not baseline_executor.is_init_baseline(model)
    assert model.get_string_custom_property(
        baseline_executor.SERVED_VERSION_PROPERTY) == "1700000000"
    assert served.saved_model_digest(path_utils.serving_model_dir(model.uri)) == (
        served.saved_model_digest(str(keras_models[1])))

    with pytest.raises(FileNotFoundError, match="init model .*nothing: no SavedModel"):
        _run_baseline(tmp_path / "serving-empty", tmp_path / "out4",
                      init_from=tmp_path / "nothing")


def test_driver_puts_the_init_model_in_the_cache_key_while_nothing_is_served(tmp_path):
    from tfx.orchestration.portable import data_types

    init = tmp_path / "imported"
    _fake_version(init, "7")
    serving = tmp_path / "serving"
    properties = {baseline_executor.SERVING_DIR_KEY: str(serving),
                  baseline_executor.SERVED_VERSION_KEY: None,
                  baseline_executor.INIT_FROM_KEY: str(init)}
    driver = Driver(None)
    key = baseline_executor.SERVED_VERSION_KEY
    assert driver.run(data_types.ExecutionInfo(exec_properties=dict(properties))
                      ).exec_properties[key].string_value == "init:7"
    _fake_version(init, "8")
    assert driver.run(data_types.ExecutionInfo(exec_properties=dict(properties))
                      ).exec_properties[key].string_value == "init:8"
    _fake_version(serving, "42")
    assert driver.run(data_types.ExecutionInfo(exec_properties=dict(properties))
                      ).exec_properties[key].string_value == "42"


def test_driver_puts_the_newest_served_version_in_the_cache_key(tmp_path):
    from tfx.orchestration.portable import data_types

    serving = tmp_path / "serving"
    properties = {baseline_executor.SERVING_DIR_KEY: str(serving),
                  baseline_executor.SERVED_VERSION_KEY: None}
    driver = Driver(None)
    output = driver.run(data_types.ExecutionInfo(exec_properties=dict(properties)))
    assert output.exec_properties[baseline_executor.SERVED_VERSION_KEY].string_value == ""
    assert output.exec_properties[baseline_executor.SERVING_DIR_KEY].string_value == str(
        serving)
    _fake_version(serving, "41")
    _fake_version(serving, "42")
    output = driver.run(data_types.ExecutionInfo(exec_properties=dict(properties)))
    assert output.exec_properties[baseline_executor.SERVED_VERSION_KEY].string_value == "42"
    resolved = driver.resolve_exec_properties(dict(properties), None, None)
    assert resolved[baseline_executor.SERVED_VERSION_KEY] == "42"


def test_digest_covers_names_and_contents_but_not_the_push_record(tmp_path):
    a = _fake_version(tmp_path, "a")
    b = _fake_version(tmp_path, "b")
    assert served.saved_model_digest(str(a)) == served.saved_model_digest(str(b))
    served.write_push_record(str(b), {served.RECORD_MODEL_URI: "x"})
    assert served.saved_model_digest(str(a)) == served.saved_model_digest(str(b))
    (b / "variables" / "variables.index").write_bytes(b"index other")
    assert served.saved_model_digest(str(a)) != served.saved_model_digest(str(b))
    c = _fake_version(tmp_path, "c")
    (c / "variables" / "variables.index").rename(c / "variables" / "renamed.index")
    assert served.saved_model_digest(str(a)) != served.saved_model_digest(str(c))


def _push(model, serving: Path, out: Path, blessed: bool = True):
    blessing = standard_artifacts.ModelBlessing()
    blessing.set_int_custom_property("blessed", int(blessed))
    push = standard_artifacts.PushedModel()
    push.uri = str(out)
    destination = json.dumps({"filesystem": {"base_directory": str(serving)}})
    PusherExecutor().Do(
        {"model": [model], "model_blessing": [blessing]},
        {"pushed_model": [push]},
        {"push_destination": destination},
    )
    return push


def test_pusher_pushes_a_different_model_and_skips_the_one_already_served(
    tmp_path, keras_models
):
    serving = tmp_path / "serving"
    first = _trained_model(tmp_path / "Trainer" / "model" / "1", keras_models[0], 1)

    # Nothing served yet: pushed as TFX pushes, with a push record in the version.
    push = _push(first, serving, tmp_path / "push1")
    assert push.get_int_custom_property(PUSHED_PROPERTY) == 1
    [version] = sorted(serving.iterdir())
    assert push.get_string_custom_property(PUSHED_DESTINATION_PROPERTY) == str(version)
    assert (version / "saved_model.pb").is_file()
    record = served.read_push_record(str(version))
    assert record == {served.RECORD_MODEL_URI: first.uri, served.RECORD_MODEL_ID: 1,
                      served.RECORD_DIGEST: served.saved_model_digest(str(keras_models[0]))}

    # The same Model artifact again (a rerun with a cached Trainer): not pushed.
    again = _push(first, serving, tmp_path / "push2")
    assert again.get_int_custom_property(PUSHED_PROPERTY) == 0
    assert again.get_string_custom_property(SERVED_VERSION_PROPERTY) == version.name
    assert again.get_string_custom_property(NOT_PUSHED_REASON_PROPERTY) == (
        f"already served: same model {first.uri}")
    assert sorted(serving.iterdir()) == [version]
    assert not (tmp_path / "push2").exists()

    # Another training run that produced the same files: not pushed either.
    twin = _trained_model(tmp_path / "Trainer" / "model" / "2", keras_models[0], 2)
    again = _push(twin, serving, tmp_path / "push3")
    assert again.get_int_custom_property(PUSHED_PROPERTY) == 0
    assert again.get_string_custom_property(NOT_PUSHED_REASON_PROPERTY).startswith(
        "already served: same SavedModel files")
    assert sorted(serving.iterdir()) == [version]

    # A different model is pushed as a new, newer version.
    version.rename(serving / "1000")  # an older timestamp, so the next push is newer
    other = _trained_model(tmp_path / "Trainer" / "model" / "3", keras_models[1], 3)
    push = _push(other, serving, tmp_path / "push4")
    assert push.get_int_custom_property(PUSHED_PROPERTY) == 1
    assert not push.has_custom_property(NOT_PUSHED_REASON_PROPERTY)
    assert newest_served_version(str(serving)) not in ("", "1000")
    newest = Path(push.get_string_custom_property(PUSHED_DESTINATION_PROPERTY))
    assert newest.name == newest_served_version(str(serving))
    assert served.read_push_record(str(newest))[served.RECORD_MODEL_URI] == other.uri


def test_pusher_leaves_an_unblessed_model_to_tfx(tmp_path, keras_models):
    """Not blessed is TFX's verdict, even for a copy of the served model."""
    serving = tmp_path / "serving"
    shutil.copytree(keras_models[1], serving / "1000")
    model = _trained_model(tmp_path / "model", keras_models[1])
    push = _push(model, serving, tmp_path / "push", blessed=False)
    assert push.get_int_custom_property(PUSHED_PROPERTY) == 0
    assert not push.has_custom_property(NOT_PUSHED_REASON_PROPERTY)
    assert [p.name for p in serving.iterdir()] == ["1000"]


def test_endpoint_pusher_skips_the_model_already_served(tmp_path, keras_models, monkeypatch):
    """The Vertex AI endpoint gets a blessed model unless the serving folder serves it."""
    from tfx.extensions.google_cloud_ai_platform import runner

    from components.pusher import SERVING_DIR_CONFIG, EndpointExecutor

    deployed = []
    monkeypatch.setattr(runner, "deploy_model_for_aip_prediction",
                        lambda **kwargs: deployed.append(kwargs) or "endpoint/model")
    serving = tmp_path / "serving"
    shutil.copytree(keras_models[0], serving / "1000")
    config = {
        "ai_platform_enable_vertex": True, "ai_platform_vertex_region": "europe-west4",
        "ai_platform_vertex_container_image_uri": "europe-docker.pkg.dev/serving:1",
        "ai_platform_serving_args": {"project_id": "my-gcp-project",
                                     "endpoint_name": "marco"},
        SERVING_DIR_CONFIG: str(serving),
    }

    def push(model, out):
        blessing = standard_artifacts.ModelBlessing()
        blessing.set_int_custom_property("blessed", 1)
        pushed = standard_artifacts.PushedModel()
        pushed.uri = str(out)
        EndpointExecutor().Do({"model": [model], "model_blessing": [blessing]},
                              {"pushed_model": [pushed]},
                              {"custom_config": json.dumps(config)})
        return pushed

    same = push(_trained_model(tmp_path / "m1", keras_models[0]), tmp_path / "p1")
    assert same.get_int_custom_property(PUSHED_PROPERTY) == 0
    assert same.get_string_custom_property(NOT_PUSHED_REASON_PROPERTY).startswith(
        "already served: same SavedModel files")
    assert deployed == []
    other = push(_trained_model(tmp_path / "m2", keras_models[1], 2), tmp_path / "p2")
    assert other.get_int_custom_property(PUSHED_PROPERTY) == 1
    assert len(deployed) == 1
