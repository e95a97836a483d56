"""TFMA evaluation settings: the metrics, the per-institution slices and the blessing rule.

The Evaluator calls the exported model's ``serving_examples`` signature on the raw
eval-split examples, and its ``transform_features`` signature to derive the 4-class
``label`` from (institution, native label) with the same Transform graph training
used. Metrics are computed overall and for each institution (the paper's
per-source figures, Tables 4 and 5); the blessing rule applies to the overall slice.

The baseline is the model the pipeline serves (ServedModelBaseline), or, while it
serves none, the model the run's Trainer started from (``init_from``). :class:`Evaluator`
is TFX's Evaluator whose executor treats an empty baseline (nothing served yet) as no
baseline at all: TFX then checks only the accuracy floor and ignores the change
threshold.
"""

from __future__ import annotations

import logging

import tensorflow_model_analysis as tfma
from tfx import v1 as tfx
from tfx.components.evaluator import executor as evaluator_executor
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_component_specs

from components.baseline.executor import is_empty
from components.names import INSTITUTION_KEY, LABEL_KEY, NUM_CLASSES
from components.names import PROBABILITIES_OUTPUT as PROBABILITIES
from components.names import SERVING_EXAMPLES_SIGNATURE as SERVING_EXAMPLES
from components.names import TRANSFORM_FEATURES_SIGNATURE as TRANSFORM_FEATURES
from components.tfx_types import Artifacts, Properties

ACCURACY = "sparse_categorical_accuracy"
# Thresholds for the ROC curves (one confusion matrix per threshold and class).
ROC_THRESHOLDS = 1000
# A candidate must not be worse than the served baseline by more than this.
DEFAULT_CHANGE_TOLERANCE = 0.0

_LOG = logging.getLogger(__name__)


def eval_config(accuracy_floor: float, change_tolerance: float = DEFAULT_CHANGE_TOLERANCE
                ) -> tfma.EvalConfig:
    """The EvalConfig the Evaluator runs.

    Args:
        accuracy_floor: smallest overall accuracy that blesses a model.
        change_tolerance: how much lower than the served model's overall accuracy a new
            model may be and still be blessed (0: it must be at least as good). It
            applies only when there is a baseline: a served model, or the run's init
            model (the baseline is not empty).
    """
    if not 0.0 <= accuracy_floor <= 1.0:
        raise ValueError(f"accuracy_floor must be in [0, 1], got {accuracy_floor}")
    if change_tolerance < 0.0:
        raise ValueError(f"change_tolerance must be >= 0, got {change_tolerance}")
    accuracy_threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": accuracy_floor}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER,
            # TFMA compares with a strict inequality; a small slack keeps an equally
            # good model blessed.
            absolute={"value": -(change_tolerance + 1e-9)},
        ),
    )
    class_ids = list(range(NUM_CLASSES))
    return tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(
                signature_name=SERVING_EXAMPLES,
                preprocessing_function_names=[TRANSFORM_FEATURES],
                label_key=LABEL_KEY,
                prediction_key=PROBABILITIES,
            )
        ],
        slicing_specs=[
            tfma.SlicingSpec(),
            tfma.SlicingSpec(feature_keys=[INSTITUTION_KEY]),
        ],
        metrics_specs=[
            tfma.MetricsSpec(
                metrics=[
                    tfma.MetricConfig(class_name="ExampleCount"),
                    # The blessing looks at the overall slice only: TFMA applies a plain
                    # `threshold` to every slice, and an institution with a handful of
                    # eval images would then veto a model on one or two of them.
                    tfma.MetricConfig(
                        class_name="SparseCategoricalAccuracy",
                        per_slice_thresholds=[
                            tfma.PerSliceMetricThreshold(
                                slicing_specs=[tfma.SlicingSpec()],
                                threshold=accuracy_threshold,
                            )
                        ],
                    ),
                    tfma.MetricConfig(class_name="MultiClassConfusionMatrixPlot"),
                ]
            ),
            # One-vs-rest metrics for every class. Precision and recall count the
            # class as predicted when it has the highest score (top 1), as Table 4
            # does, not when its score passes 0.5: with four classes the winning
            # score is often below 0.5. AUC and the ROC curve sweep thresholds.
            tfma.MetricsSpec(
                binarize=tfma.BinarizationOptions(class_ids={"values": class_ids}),
                metrics=[
                    tfma.MetricConfig(class_name="Precision", config='"top_k": 1'),
                    tfma.MetricConfig(class_name="Recall", config='"top_k": 1'),
                    tfma.MetricConfig(
                        class_name="AUC", config=f'"num_thresholds": {ROC_THRESHOLDS}'
                    ),
                    tfma.MetricConfig(
                        class_name="ConfusionMatrixPlot",
                        config=f'"num_thresholds": {ROC_THRESHOLDS}',
                    ),
                ],
            ),
        ],
    )


class Executor(evaluator_executor.Executor):
    """TFX's Evaluator executor, with an empty baseline model taken as no baseline."""

    def Do(self, input_dict: Artifacts, output_dict: Artifacts,
           exec_properties: Properties) -> None:
        key = standard_component_specs.BASELINE_MODEL_KEY
        baselines = input_dict.get(key)
        if baselines and all(is_empty(model) for model in baselines):
            _LOG.info("No model is served yet: evaluating without a baseline")
            input_dict = {k: v for k, v in input_dict.items() if k != key}
        super().Do(input_dict, output_dict, exec_properties)


class Evaluator(tfx.components.Evaluator):
    """TFX's Evaluator (component id ``Evaluator``) running :class:`Executor`."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)
