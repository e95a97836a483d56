"""Process set-up that must happen before TensorFlow is first imported.

TF 2.16 defaults to Keras 3, which TFX 1.16, TFT and TFMA do not support. Setting
``TF_USE_LEGACY_KERAS=1`` makes ``tf.keras`` resolve to tf-keras (Keras 2). This is
the only code in the project that sets it (the container image sets it in its
environment too, for TFX's entry points); ``components/__init__.py`` calls
:func:`configure` so that every process that imports project code (the CLI, Beam
workers, TFX executors, the Trainer's module code) gets it before TensorFlow.
"""

from __future__ import annotations

import os
import sys
import warnings

LEGACY_KERAS_VARIABLE = "TF_USE_LEGACY_KERAS"


def configure() -> None:
    """Select Keras 2 and TensorFlow's C++ log level; must run before TensorFlow loads.

    Raises:
        RuntimeError: if Keras 3 was already loaded (``tf.keras`` touched without the
            flag), since the choice cannot be changed once ``tf.keras`` is bound.
    """
    if "keras" in sys.modules and os.environ.get(LEGACY_KERAS_VARIABLE) != "1":
        raise RuntimeError(
            "Keras 3 was loaded before the MARCO packages, without "
            f"{LEGACY_KERAS_VARIABLE}=1; import `components` (or `pipeline`) first, or "
            f"export {LEGACY_KERAS_VARIABLE}=1."
        )
    os.environ[LEGACY_KERAS_VARIABLE] = "1"
    # TensorFlow's C++ logging reads this as it loads, here and in the processes this
    # one starts (Beam's multi-processing workers, TFX executors), which inherit it:
    # 2 drops INFO and WARNING lines and keeps errors, which `marco run`, `demo` and
    # `score` send to their log with the rest of stderr (pipeline.local); 3 would
    # drop errors too.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # google-api-core warns on every import under Python 3.10, which TFX 1.16 requires.
    warnings.filterwarnings(
        "ignore", message=r".*non-supported Python version.*", category=FutureWarning
    )
    warnings.filterwarnings(
        "ignore", message=r".*google-cloud-storage < 3\.0\.0.*", category=FutureWarning
    )


def skip_autograph_for_tf_keras() -> None:
    """Stop autograph from rewriting tf-keras' own code whenever a model is traced.

    TF 2.16's autograph skips the ``keras`` package but not ``tf_keras``, so every
    ``fit`` or ``save`` converts all of tf-keras' internals first: about two minutes
    for the first training step of Inception-v3 on a CPU, against about 17 s with
    this rule. Call it from modules that already import TensorFlow.
    """
    from tensorflow.python.autograph.core import config as autograph_config

    rule = autograph_config.DoNotConvert("tf_keras")
    if not any(
        isinstance(r, autograph_config.DoNotConvert) and r.matches("tf_keras.x")
        for r in autograph_config.CONVERSION_RULES
    ):
        autograph_config.CONVERSION_RULES = (rule, *autograph_config.CONVERSION_RULES)
