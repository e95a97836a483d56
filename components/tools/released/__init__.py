"""The model the MARCO initiative released (a TF1 SavedModel): read it, score with it, import it.

- :mod:`~components.tools.released.graph`: recognises the released serving graph and
  reads what the other tools need from it (class order, input size, tensor names);
- :mod:`~components.tools.released.model`: the released model run as it is, its
  probabilities in MARCO's class order, any image format scored;
- :mod:`~components.tools.released.importer`: ``marco import-released``, the released
  checkpoint loaded into the ``paper`` network and exported with this project's
  signatures;
- :mod:`~components.tools.released.randomised`: the released graph saved again with
  random weights, for tests and benchmarks on machines without the real weights.

``marco score`` picks the released model's scorer when its ``--model`` holds the
released graph (:mod:`components.tools.scoring.model`).
"""
