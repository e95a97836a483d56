"""Batch scoring of drop images with a pushed MARCO model, and its TF Lite export.

- :mod:`components.tools.scoring.model`: finding the model version to use, and a Beam
  RunInference model handler for the SavedModel's ``probabilities`` signature;
- :mod:`components.tools.scoring.inputs`: folders, globs and manifests to image paths, and
  plate/well parsing;
- :mod:`components.tools.scoring.results`: result rows, their streaming sort, the CSV and
  the hits folder;
- :mod:`components.tools.scoring.beam`: the Beam pipeline and :func:`score_images`, which
  ``marco score`` runs;
- :mod:`components.tools.scoring.tflite`: the TF Lite model for devices without TensorFlow.

Importing this package loads neither TensorFlow nor Beam; its modules do.
"""
