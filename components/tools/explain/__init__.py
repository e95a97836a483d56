"""Crystal heatmaps: SmoothGrad saliency of a pushed MARCO model (``marco explain``).

- :mod:`.smoothgrad`: the heatmap of one image for one class;
- :mod:`.locate`: the hottest region of a heatmap, in the image file's pixels;
- :mod:`.overlay`: the heatmap drawn over the image in grey, as a PNG;
- :mod:`.run`: many images to overlay and array files and one CSV file.
"""

# Settings shared by the command line and the code (importing this package loads no
# TensorFlow, so `marco --help` stays quick).
DEFAULT_CLASS = "crystals"
DEFAULT_SAMPLES = 24
DEFAULT_NOISE = 0.15
DEFAULT_BATCH_SIZE = 8
DEFAULT_SEED = 0
# What the output folder holds besides the heatmaps.
CSV_NAME = "heatmaps.csv"
LOG_NAME = "explain.log"
# The class choice meaning "each image's most probable class".
PREDICTED = "predicted"
