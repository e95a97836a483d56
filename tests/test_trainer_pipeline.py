"""The Trainer component through LocalDagRunner, and the signatures of what it exports."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from components.names import INSTITUTION_KEY, NATIVE_LABEL_KEY
from tests.ingestion_fixtures import make_synthetic


def _example_proto(image, info, institution, native) -> bytes:
    """A raw example as ingestion writes it."""
    from components import names

    def b(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode()
                                if isinstance(v, str) else v]))

    def i(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))

    features = {
        names.IMAGE_KEY: b(image), names.FORMAT_KEY: b(info.format),
        names.HEIGHT_KEY: i(info.height), names.WIDTH_KEY: i(info.width),
        names.CHANNELS_KEY: i(info.channels), INSTITUTION_KEY: b(institution),
        NATIVE_LABEL_KEY: b(native), names.IMAGE_ID_KEY: b(f"{institution}/probe"),
        names.SOURCE_PATH_KEY: b("probe"),
    }
    return tf.train.Example(
        features=tf.train.Features(feature=features)).SerializeToString()


@pytest.mark.e2e
@pytest.mark.slow
def test_trainer_component_exports_a_model_that_answers_every_signature(tmp_path, real_drops):
    from tfx import v1 as tfx

    from pipeline.config import PRESETS, PipelineConfig
    from pipeline.pipeline import create_pipeline

    data = tmp_path / "data"
    make_synthetic(data, 60)
    config = PipelineConfig(
        pipeline_root=str(tmp_path / "root"),
        preset=PRESETS["tiny"],
        data_dir=str(data),
        eval_percent=25,
        beam_pipeline_args=("--direct_num_workers=1",),
    )
    metadata = tfx.orchestration.metadata.sqlite_metadata_connection_config(
        str(tmp_path / "metadata.db"))
    tfx.orchestration.LocalDagRunner().run(create_pipeline(config, metadata))

    exported = sorted((tmp_path / "root" / "Trainer" / "model").glob("*/Format-Serving"))
    assert len(exported) == 1
    model = tf.saved_model.load(str(exported[0]))
    assert {"serving_default", "probabilities", "serving_examples",
            "transform_features"} <= set(model.signatures)

    photos = sorted(real_drops.glob("*.jpeg"))[:3]
    images = [p.read_bytes() for p in photos]
    by_bytes = model.signatures["probabilities"](image_bytes=tf.constant(images))
    examples = tf.constant([_example_proto(img, _info(img), "GSK", "crystals")
                            for img in images])
    by_example = model.signatures["serving_examples"](examples=examples)
    np.testing.assert_allclose(by_bytes["probabilities"].numpy(),
                               by_example["probabilities"].numpy(), rtol=1e-5, atol=1e-6)
    transformed = model.signatures["transform_features"](examples=examples)
    assert transformed["label"].numpy().ravel().tolist() == [1, 1, 1]  # GSK 'crystals'
    served = model.signatures["serving_default"](image_bytes=tf.constant(images))
    assert served["classes"].shape == (3, 4)
    assert np.all(np.diff(served["scores"].numpy(), axis=1) <= 0)


def _info(image: bytes):
    from components.imagecheck import inspect_image

    return inspect_image(image)


def test_pipeline_config_needs_some_data():
    from pipeline.config import PRESETS, PipelineConfig

    with pytest.raises(ValueError, match="data_dir, marco_shards or both"):
        PipelineConfig(pipeline_root="r", preset=PRESETS["tiny"])

