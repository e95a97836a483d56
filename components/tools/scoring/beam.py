"""The scoring pipeline: image inputs to a sorted results file, on Apache Beam.

Graph (:class:`ScoreImages`)::

    inputs (the few command-line arguments)
      -> ListImages: folders walked, globs matched, manifests read   [stage 1]
      -> Distinct: each path once; the shuffle hands paths to the workers
      -> ReadImage: the file's bytes (a TIFF's pixels as PNG), or an error row if
         it cannot be read
      -> RunInference (batches of image bytes through the SavedModel's
         ``probabilities`` signature: decoding, centre crop and the network; or
         through the released MARCO model's graph, its classes mapped by name)
      -> ToRow: class probabilities, predicted class, plate and well
      -> JSON-lines shards, unsorted                                 [stage 2]

Only paths cross the shuffle; image bytes live from ReadImage to RunInference inside
one fused stage, and rows go straight to their shard files, so memory holds a model,
a batch per worker and the list of paths (about 100 bytes an image), however many
images there are. The driver then sorts the shards into the CSV file
(:mod:`components.tools.scoring.results`).

Locally the DirectRunner runs stage 2 in ``workers`` threads of one process (its
``multi_threading`` mode) sharing one loaded model. TensorFlow releases the GIL, so
one thread's files are read and its images decoded while another's batch is in the
network, and no second interpreter has to start, load TensorFlow and the model, or
hold another copy of it. On two cores the network alone keeps both busy (decoding is
about 6% of the work), so the overlap gains little there; it pays where reading an
image waits on a network file system. Other runners (``--runner=DataflowRunner`` and
its options) take their workers from the Beam arguments.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.ml.inference.base import KeyedModelHandler, PredictionResult, RunInference
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

from components import filesystem, imagecheck
from components.tools.scoring import results
from components.tools.scoring.inputs import (
    DEFAULT_PLATE_WELL_PATTERN,
    ImageSource,
    PlateWellParser,
    check_inputs,
    list_images,
)
from components.tools.scoring.model import (
    DEFAULT_BATCH_SIZE,
    METRICS_NAMESPACE,
    PROJECT_MODEL,
    ProbabilitiesModelHandler,
    check_signature,
    probabilities_or_error,
    resolve_model,
)
from components.tools.scoring.results import ResultRow

UNREADABLE_TAG = "unreadable"
SCORED_PREFIX = "scored"
UNREADABLE_PREFIX = "unreadable"
SHARD_SUFFIX = ".jsonl"
IMAGES_COUNTER = "images_read"


# ----------------------------------------------------------------------------- progress

_PROGRESS: dict[str, ScoringProgress] = {}


class ScoringProgress:
    """A progress bar the pipeline's steps update when they run in this process.

    Steps find it by a token (see :func:`report_listed`, :func:`report_scored`); in a
    worker process of another runner there is none and they only count Beam metrics.
    """

    def __init__(self, enabled: bool = True) -> None:
        from tqdm import tqdm

        self.token = uuid.uuid4().hex
        self._lock = threading.Lock()
        self._bar = tqdm(total=0, unit="img", desc="scoring", disable=not enabled,
                         dynamic_ncols=True, mininterval=0.5)

    def __enter__(self) -> ScoringProgress:
        _PROGRESS[self.token] = self
        return self

    def __exit__(self, *exc) -> None:
        _PROGRESS.pop(self.token, None)
        with self._lock:
            if exc[0] is None:
                self._bar.total = self._bar.n
                self._bar.refresh()
            self._bar.close()

    def listed(self, count: int) -> None:
        with self._lock:
            self._bar.total += count
            self._bar.refresh()

    def scored(self, count: int) -> None:
        with self._lock:
            self._bar.update(count)


def report_listed(token: str | None, count: int) -> None:
    progress = _PROGRESS.get(token) if token else None
    if progress is not None:
        progress.listed(count)


def report_scored(token: str | None, count: int) -> None:
    progress = _PROGRESS.get(token) if token else None
    if progress is not None:
        progress.scored(count)


# ----------------------------------------------------------------------------- Beam steps


class ListImages(beam.DoFn):
    """One input (folder, glob, manifest or file) to its image paths."""

    def __init__(self, exclude: Sequence[str] = (), progress_token: str | None = None) -> None:
        super().__init__()
        self._exclude = tuple(exclude)
        self._token = progress_token
        self._listed = Metrics.counter(METRICS_NAMESPACE, "images_listed")

    def process(self, source: ImageSource) -> Iterator[str]:
        count = 0
        for path in list_images(source, self._exclude):
            count += 1
            yield path
        self._listed.inc(count)
        report_listed(self._token, count)


def error_row(path: str, error: str, parser: PlateWellParser) -> str:
    plate, well = parser.parse(path)
    return ResultRow(path, None, plate, well, error).to_json()


class ReadImage(beam.DoFn):
    """A path to ``(path, encoded image)``; an unreadable file to an error row instead.

    The model decodes what TensorFlow decodes (:data:`imagecheck.TENSORFLOW_FORMATS`);
    a TIFF file is decoded here and handed on as PNG (:func:`imagecheck.tiff_to_png`).
    """

    def __init__(self, plate_well_pattern: str, progress_token: str | None = None) -> None:
        super().__init__()
        self._pattern = plate_well_pattern
        self._token = progress_token
        self._read = Metrics.counter(METRICS_NAMESPACE, IMAGES_COUNTER)
        self._unreadable = Metrics.counter(METRICS_NAMESPACE, "images_unreadable")

    def setup(self) -> None:
        self._parser = PlateWellParser(self._pattern)

    def process(self, path: str) -> Iterator:
        self._read.inc()
        try:
            data = filesystem.read_bytes(path)
            if imagecheck.is_tiff(data):
                data = imagecheck.tiff_to_png(data)
        except OSError as exc:
            problem = f"cannot read the file: {exc.strerror or exc}"
        except imagecheck.BadImage as exc:
            problem = f"cannot decode the TIFF image: {exc.detail}"
        else:
            if data:
                yield path, data
                return
            problem = "empty file"
        self._unreadable.inc()
        report_scored(self._token, 1)
        yield beam.pvalue.TaggedOutput(UNREADABLE_TAG, error_row(path, problem, self._parser))


class ToRow(beam.DoFn):
    """``(path, PredictionResult)`` to a JSON result row, with plate and well."""

    def __init__(self, plate_well_pattern: str, progress_token: str | None = None) -> None:
        super().__init__()
        self._pattern = plate_well_pattern
        self._token = progress_token
        self._failed = Metrics.counter(METRICS_NAMESPACE, "images_failed")

    def setup(self) -> None:
        self._parser = PlateWellParser(self._pattern)

    def process(self, element: tuple[str, PredictionResult]) -> Iterator[str]:
        path, result = element
        probabilities, error = probabilities_or_error(result.inference)
        if error:
            self._failed.inc()
        plate, well = self._parser.parse(path)
        report_scored(self._token, 1)
        yield ResultRow(path, probabilities, plate, well, error).to_json()


class ScoreImages(beam.PTransform):
    """Inputs to result rows in JSON-lines shards under ``shard_dir`` (see the module doc).

    Args:
        sources: the classified inputs (:func:`components.tools.scoring.inputs.check_inputs`).
        model_dir: the SavedModel folder.
        shard_dir: folder (local or remote) for the unsorted row shards.
        batch_size: images per model call.
        plate_well_pattern: regular expression with ``plate``/``well`` groups.
        exclude: local folders not to search for images.
        progress_token: of a :class:`ScoringProgress` in this process, if any.
        model_kind: what :func:`~components.tools.scoring.model.model_kind` found
            (None: found when the model loads).
    """

    def __init__(
        self,
        sources: Sequence[ImageSource],
        model_dir: str,
        shard_dir: str,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        plate_well_pattern: str = DEFAULT_PLATE_WELL_PATTERN,
        exclude: Sequence[str] = (),
        progress_token: str | None = None,
        model_kind: str | None = None,
    ) -> None:
        super().__init__()
        PlateWellParser(plate_well_pattern)  # fail here, not on a worker
        self._sources = list(sources)
        self._handler = KeyedModelHandler(
            ProbabilitiesModelHandler(model_dir, batch_size, model_kind)
        )
        self._shard_dir = shard_dir
        self._pattern = plate_well_pattern
        self._exclude = tuple(exclude)
        self._token = progress_token

    def expand(self, pipeline: beam.Pipeline) -> dict[str, beam.pvalue.PDone]:
        paths = (
            pipeline
            | "Inputs" >> beam.Create(self._sources)
            | "ListImages" >> beam.ParDo(ListImages(self._exclude, self._token))
            | "EachPathOnce" >> beam.Distinct()
        )
        read = paths | "ReadImage" >> beam.ParDo(
            ReadImage(self._pattern, self._token)
        ).with_outputs(UNREADABLE_TAG, main="images")
        scored = (
            read.images
            | "RunInference" >> RunInference(self._handler)
            | "ToRow" >> beam.ParDo(ToRow(self._pattern, self._token))
        )
        return {
            SCORED_PREFIX: scored | "WriteScored" >> beam.io.WriteToText(
                FileSystems.join(self._shard_dir, SCORED_PREFIX), file_name_suffix=SHARD_SUFFIX
            ),
            UNREADABLE_PREFIX: read[UNREADABLE_TAG] | "WriteUnreadable" >> beam.io.WriteToText(
                FileSystems.join(self._shard_dir, UNREADABLE_PREFIX),
                file_name_suffix=SHARD_SUFFIX,
            ),
        }


# ----------------------------------------------------------------------------- the run


@dataclasses.dataclass(frozen=True)
class ScoreOptions:
    """Settings of a scoring run beyond its inputs, model and output file.

    Attributes:
        hits_dir: local folder to copy hits into (created; must be empty), or None.
        hits_threshold: crystal probability above which an image is a hit.
        plate_well_pattern: regular expression for plate and well (see
            :class:`components.tools.scoring.inputs.PlateWellParser`).
        path_column: CSV manifests' path column, when not found by name.
        batch_size: images per model call.
        workers: DirectRunner threads (default: all cores).
        beam_args: further Beam options (e.g. ``--runner=DataflowRunner``, with
            ``--temp_location=gs://...`` for the row shards).
        chunk_rows: most rows the final sort holds in memory.
        progress: show a progress bar.
    """

    hits_dir: str | None = None
    hits_threshold: float = results.DEFAULT_HITS_THRESHOLD
    plate_well_pattern: str = DEFAULT_PLATE_WELL_PATTERN
    path_column: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    workers: int | None = None
    beam_args: tuple[str, ...] = ()
    chunk_rows: int = results.DEFAULT_CHUNK_ROWS
    progress: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.hits_threshold <= 1.0:
            raise ValueError(f"hits_threshold must be in [0, 1], got {self.hits_threshold}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")


@dataclasses.dataclass
class ScoreSummary:
    """What :func:`score_images` did."""

    out: str
    model_dir: str
    model_version: int | None
    results: results.ResultsSummary
    seconds: float
    model_load_seconds: float | None = None
    model_kind: str = PROJECT_MODEL

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["results"] = self.results.to_dict()
        return data


def beam_options(options: ScoreOptions) -> PipelineOptions:
    """Local defaults (threads sharing one model) followed by the caller's Beam args."""
    workers = options.workers or os.cpu_count() or 1
    return PipelineOptions([
        "--direct_running_mode=multi_threading",
        f"--direct_num_workers={workers}",
        *options.beam_args,
    ])


def _check_hits_dir(hits_dir: str | None) -> None:
    if hits_dir is None:
        return
    if os.path.isfile(hits_dir):
        raise ValueError(f"--hits {hits_dir}: is a file, not a folder")
    if os.path.isdir(hits_dir) and os.listdir(hits_dir):
        raise ValueError(f"--hits {hits_dir}: the folder is not empty; give a new or "
                         "empty folder, so that it holds this run's hits only")


def _counter(result, name: str) -> int | None:
    query = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE)
                                   .with_name(name))
    values = [c.committed if c.committed is not None else c.attempted
              for c in query["counters"]]
    return sum(values) if values else None


def _model_load_seconds(result) -> float | None:
    query = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE)
                                   .with_name("load_model_latency_milli_secs"))
    values = []
    for metric in query["distributions"]:
        data = metric.committed or metric.attempted
        if data is not None and data.count:
            values.append(data.max / 1000.0)
    return max(values) if values else None


def _shards(shard_dir: str) -> list[str]:
    pattern = FileSystems.join(shard_dir, f"*{SHARD_SUFFIX}")
    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)


def score_images(
    inputs: Sequence[str],
    model: str,
    out: str,
    options: ScoreOptions | None = None,
) -> ScoreSummary:
    """Scores every image the inputs name and writes the sorted CSV file ``out``.

    Args:
        inputs: folders, globs, manifests or image files.
        model: a serving folder (highest version used) or a SavedModel folder.
        out: the CSV file to write (replaced if it exists).
        options: everything else (:class:`ScoreOptions`).

    Returns:
        The summary: counts per class, errors, hits, timings.

    Raises:
        components.tools.scoring.inputs.InputError: for an input that cannot be used.
        components.tools.scoring.model.ModelNotFound: when ``model`` holds no usable model.
        ValueError: for a bad option (a non-empty hits folder, a bad pattern...).
    """
    options = options or ScoreOptions()
    started = time.perf_counter()
    version = resolve_model(model)
    kind = check_signature(version.path)
    PlateWellParser(options.plate_well_pattern)
    _check_hits_dir(options.hits_dir)
    sources = check_inputs(inputs, options.path_column)
    out = os.path.abspath(out)
    if os.path.isdir(out):
        raise ValueError(f"--out {out}: is a folder; give the CSV file's name")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    exclude = [os.path.abspath(options.hits_dir)] if options.hits_dir else []
    pipeline_options = beam_options(options)
    temp_location = pipeline_options.view_as(GoogleCloudOptions).temp_location
    local_scratch = tempfile.mkdtemp(prefix="marco-score-")
    shard_dir = (FileSystems.join(temp_location, f"marco-score-{uuid.uuid4().hex}")
                 if temp_location else os.path.join(local_scratch, "shards"))
    try:
        with ScoringProgress(options.progress) as progress:
            pipeline = beam.Pipeline(options=pipeline_options)
            _ = pipeline | "ScoreImages" >> ScoreImages(
                sources, version.path, shard_dir,
                batch_size=options.batch_size,
                plate_well_pattern=options.plate_well_pattern,
                exclude=exclude,
                progress_token=progress.token,
                model_kind=kind,
            )
            result = pipeline.run()
            result.wait_until_finish()
        shards = _shards(shard_dir)
        with results.sorted_rows(results.read_rows(shards), local_scratch,
                                 options.chunk_rows) as (count, rows):
            summary = results.write_results(
                rows, count, out, hits_dir=options.hits_dir,
                hits_threshold=options.hits_threshold,
            )
        read = _counter(result, IMAGES_COUNTER)
        if read is not None and read != summary.images:
            raise RuntimeError(f"{read} images were read but {summary.images} rows were "
                               f"written to {out}; the results are incomplete")
        load_seconds = _model_load_seconds(result)
    finally:
        shutil.rmtree(local_scratch, ignore_errors=True)
        if temp_location and FileSystems.exists(shard_dir):
            FileSystems.delete([shard_dir])
    return ScoreSummary(out, version.path, version.version, summary,
                        time.perf_counter() - started, load_seconds, kind)
