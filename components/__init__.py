"""MARCO custom TFX components and module code.

Importing this package configures the process for TFX 1.16 (Keras 2 through
tf-keras) before anything imports TensorFlow; see :mod:`components.runtime`.
"""

from components import runtime as _runtime

_runtime.configure()
