"""Every entry point of the project runs TensorFlow with Keras 2 (tf-keras)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

PROBE = (
    "import os, tensorflow as tf, tf_keras; "
    "print(tf_keras.__version__, tf.keras.Model.__module__.split('.')[0], "
    "os.environ['TF_USE_LEGACY_KERAS'])"
)


def _run(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    "entry_module",
    [
        "pipeline.cli",  # the `marco` console script
        "components",  # TFX executors, Beam workers and module code import this package
    ],
)
def test_entry_points_get_keras_2(entry_module):
    result = _run(f"import {entry_module}; {PROBE}")
    assert result.returncode == 0, result.stderr[-2000:]
    version, package, flag = result.stdout.split()[-3:]
    assert version.startswith("2."), version
    assert package == "tf_keras"
    assert flag == "1"


def test_keras_3_loaded_first_without_the_flag_is_refused():
    result = _run("import tensorflow as tf; tf.keras.Model; import components")
    assert result.returncode != 0
    assert "TF_USE_LEGACY_KERAS" in result.stderr
