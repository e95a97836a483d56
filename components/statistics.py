"""StatisticsGen options: statistics overall and per institution, image bytes as bytes.

Encoded images are not text. Without help TFDV treats them as strings: it tries each
one as UTF-8 and keeps top-k "values" made of megabytes of image data. The curated
schema marks ``image_bytes`` with an ``image_domain``; given that schema (StatisticsGen's
``schema`` input, from ImportSchemaGen), TFDV computes only their presence and byte
sizes, which still catches empty or oversized images. The feature cannot instead be
left out with ``feature_allowlist``: Transform needs it required (dense) in the schema,
and ExampleValidator reports a required feature without statistics as missing.
The institution slices show each lab's label mix, image sizes and formats.
"""

from __future__ import annotations

import tensorflow_data_validation as tfdv
from tfx_bsl.public.proto import slicing_spec_pb2

from components.names import INSTITUTION_KEY


def stats_options() -> tfdv.StatsOptions:
    """Options for StatisticsGen (serialisable, as StatisticsGen requires): one slice
    per institution besides the overall statistics."""
    return tfdv.StatsOptions(
        slicing_config=slicing_spec_pb2.SlicingConfig(
            slicing_specs=[slicing_spec_pb2.SlicingSpec(feature_keys=[INSTITUTION_KEY])]
        ),
    )
