"""The tools around the pipeline: code that runs on a person's machine, never as a
pipeline step.

- :mod:`components.tools.synth`: the built-in synthetic data set (``marco synth``,
  ``marco demo``);
- :mod:`components.tools.drafting`: drafting a new institution's catalogue file
  (``marco sources add``);
- :mod:`components.tools.validation`: data checks before a run (``marco sources
  validate``), with ingestion's own record checks;
- :mod:`components.tools.scoring` and :mod:`components.tools.serving`: batch scoring,
  TF Lite, and a TF Serving stand-in (``marco score``, ``marco export-tflite``);
- :mod:`components.tools.released`: the released MARCO model, scored as it is or
  imported into this project's network (``marco import-released``);
- :mod:`components.tools.viewer`: the static plate viewer (``marco view``, ``marco
  score --html``);
- :mod:`components.tools.explain`: SmoothGrad crystal heatmaps (``marco explain``);
- :mod:`components.tools.report`: the paper's tables and figures (``marco report``);
- :mod:`components.tools.brightness_baseline`: the demo's brightness-only baseline.

What they share with the pipeline (names, formats, catalogue, readers, record checks)
they import from :mod:`components`; none of it is copied here.
"""
