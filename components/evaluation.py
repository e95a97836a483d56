"""TFMA evaluation settings: the metrics, the per-institution slices and the blessing rule.

The Evaluator calls the exported model's ``serving_examples`` signature on the raw
eval-split examples, and its ``transform_features`` signature to derive the 4-class
``label`` from (institution, native label) with the same Transform graph training
used. Metrics are computed overall and for each institution (the paper's
per-source figures, Tables 4 and 5); the blessing rule applies to the overall slice.
"""

from __future__ import annotations

import tensorflow_model_analysis as tfma

from components.names import INSTITUTION_KEY, LABEL_KEY, NUM_CLASSES

SERVING_EXAMPLES = "serving_examples"
TRANSFORM_FEATURES = "transform_features"
PROBABILITIES = "probabilities"
ACCURACY = "sparse_categorical_accuracy"
# Thresholds for the ROC curves (one confusion matrix per threshold and class).
ROC_THRESHOLDS = 1000
# A candidate must not be worse than the blessed baseline by more than this.
DEFAULT_CHANGE_TOLERANCE = 0.0


def eval_config(accuracy_floor: float, change_tolerance: float = DEFAULT_CHANGE_TOLERANCE
                ) -> tfma.EvalConfig:
    """The EvalConfig the Evaluator runs.

    Args:
        accuracy_floor: smallest overall accuracy that blesses a model.
        change_tolerance: how much lower than the last blessed model's overall accuracy
            a new model may be and still be blessed (0: it must be at least as good).
            TFMA applies this only when a baseline model was resolved.
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
