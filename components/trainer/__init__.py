"""The Trainer's module code: ``run_fn`` for TFX's generic Trainer.

Referenced by dotted path (``components.trainer.run_fn``), so no module file needs
packaging. Settings arrive in ``custom_config`` (see
:class:`components.trainer.config.TrainingConfig`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time

from components.trainer.config import CUSTOM_CONFIG_KEY, TrainingConfig

BACKUP_DIR_KEY = "backup_dir"
# An earlier model to start from (``PipelineConfig.init_from``): a serving folder, a
# version folder or a SavedModel, local or gs://.
INIT_FROM_KEY = "init_from"
TRAIN_EXAMPLES_KEY = "train_examples"
METRICS_FILE = "metrics.json"
# How long a non-chief replica waits for the chief's export after its own.
CHIEF_EXPORT_TIMEOUT_S = 1800.0

__all__ = ["CUSTOM_CONFIG_KEY", "INIT_FROM_KEY", "TrainingConfig", "run_fn", "save_outputs"]


def run_fn(fn_args) -> None:
    """Trains on the transformed examples and exports the serving SavedModel.

    Args:
        fn_args: TFX's FnArgs: train/eval files, the Transform output, the serving
            model and model run directories, step counts and ``custom_config``.
    """
    import tensorflow_transform as tft

    from components.trainer.train import train_model

    custom = fn_args.custom_config or {}
    config = TrainingConfig.from_custom_config(custom)
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    model, metrics = train_model(
        config,
        fn_args.train_files,
        fn_args.eval_files,
        fn_args.model_run_dir,
        train_steps=int(fn_args.train_steps or 0),
        eval_steps=fn_args.eval_steps or None,
        train_examples=custom.get(TRAIN_EXAMPLES_KEY),
        backup_dir=custom.get(BACKUP_DIR_KEY),
        init_from=custom.get(INIT_FROM_KEY) or None,
    )
    save_outputs(
        model, metrics, fn_args.serving_model_dir, fn_args.model_run_dir, tf_transform_output
    )


def save_outputs(
    model,
    metrics: dict[str, float],
    serving_model_dir: str,
    model_run_dir: str,
    tf_transform_output=None,
) -> None:
    """Exports the trained model and writes its metrics, on every replica of a job.

    The chief writes the export to ``serving_model_dir`` and the metrics to
    ``model_run_dir``. Every other replica of a multi-worker strategy exports too,
    since reading the weights of a model whose variables the strategy holds is a
    collective operation all workers join; it writes to a scratch folder that it
    deletes, then waits for the chief's export (see :func:`wait_for_chief_export`).

    Args:
        model: the model :func:`components.trainer.train.train_model` returned.
        metrics: its evaluation metrics.
        serving_model_dir, model_run_dir: the Trainer's output folders.
        tf_transform_output: the Transform output, for the tf.Example signatures.
    """
    import tensorflow as tf

    from components.trainer.export import export_model
    from components.trainer.train import is_chief

    if is_chief():
        export_model(model, serving_model_dir, tf_transform_output)
        with tf.io.gfile.GFile(os.path.join(model_run_dir, METRICS_FILE), "w") as f:
            f.write(json.dumps(metrics, indent=2))
        return
    scratch = tempfile.mkdtemp()
    try:
        export_model(model, scratch, tf_transform_output)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    wait_for_chief_export(serving_model_dir)


def wait_for_chief_export(
    serving_model_dir: str, timeout_s: float = CHIEF_EXPORT_TIMEOUT_S, poll_s: float = 5.0
) -> None:
    """Return once the chief's export exists at ``serving_model_dir``.

    On a Vertex AI training job TFX's Trainer executor runs on every replica, and
    fails a replica whose ``run_fn`` leaves nothing at ``serving_model_dir``; only the
    chief writes there, so the other replicas wait for it rather than fail the job.

    Raises:
        TimeoutError: naming the folder, when the chief has not written it in time.
    """
    import tensorflow as tf

    deadline = time.monotonic() + timeout_s
    while not tf.io.gfile.exists(serving_model_dir):
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"the chief wrote no model to {serving_model_dir} within {timeout_s:.0f} s"
            )
        time.sleep(poll_s)
