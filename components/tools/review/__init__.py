"""The expert-review loop (``marco review``): the labelled images a pushed model
disagrees with most, on a page where an expert relabels them.

- :mod:`.selection`: cross-entropy of the model's probabilities on the stored label,
  and the share of images with the highest;
- :mod:`.examples`: a run's ingested examples (every split), its pushed model, and
  each example's stored label (the catalogue's class, or an earlier override's);
- :mod:`.page`: the review page, a static site in the plate viewer's style whose
  decisions download as overrides files (``overrides/<CODE>.csv`` of the catalogue,
  read by :func:`components.catalogue.load_overrides`).
"""

DEFAULT_FRACTION = 0.05
DATA_VARIABLE = "MARCO_REVIEW_DATA"
DATA_FORMAT = 1
