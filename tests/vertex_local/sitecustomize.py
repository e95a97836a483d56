"""Loaded by every Python process the KFP harness starts (this folder is first on
their PYTHONPATH); in the Trainer's process it puts the local Vertex AI training
service in place of the real one (see local_training.py)."""

import os

if os.environ.get("MARCO_LOCAL_VERTEX_TRAINING") == "1":
    import local_training

    local_training.install()
