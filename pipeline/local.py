"""Runs the MARCO pipeline on this machine: LocalDagRunner, SQLite ML Metadata and
Beam's DirectRunner in multi-processing mode.

A run folder holds everything one pipeline writes, so running the same command again
finds its ML Metadata, reuses cached results and resumes an interrupted training::

    RUN_DIR/metadata.sqlite   ML Metadata (lineage, executions, blessings)
    RUN_DIR/pipeline/         component outputs (TFX pipeline root)
    RUN_DIR/serving/          pushed models, one numbered version each (TF Serving)
    RUN_DIR/trainer-backup/   the Trainer's preemption checkpoints
    RUN_DIR/run.log           the full log of every run
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.config import PipelineConfig, Preset

METADATA_FILE = "metadata.sqlite"
PIPELINE_DIR = "pipeline"
SERVING_DIR = "serving"
BACKUP_DIR = "trainer-backup"
LOG_FILE = "run.log"

_RUNNING = re.compile(r"Component (\S+) is running\.")
_FINISHED = re.compile(r"Component (\S+) is finished\.")
_CACHED = re.compile(r"A cached execution \d+ is used\.")
# Keras' epoch lines (``Epoch 12/60``, then ``42/42 - 7s - loss: 0.83 - accuracy: 0.73
# - ...``), which reach logging once interactive logging is off.
_EPOCH = re.compile(r"Epoch (\d+)/(\d+)$")
_NUMBER = r"(nan|inf|\d+(?:\.\d+)?(?:e[+-]?\d+)?)"
_EPOCH_END = re.compile(rf"\d+/\d+ - .*?\bloss: {_NUMBER}.*?\baccuracy: {_NUMBER}")
EPOCH_REPORTS = 10  # training progress lines per Trainer run, at most (plus the last)


def local_beam_args(workers: int | None = None) -> tuple[str, ...]:
    """DirectRunner arguments: one worker process per core unless told otherwise."""
    workers = workers or os.cpu_count() or 1
    return ("--direct_running_mode=multi_processing", f"--direct_num_workers={workers}")


def metadata_config(run_dir: Path):
    from tfx import v1 as tfx

    return tfx.orchestration.metadata.sqlite_metadata_connection_config(
        str(run_dir / METADATA_FILE)
    )


def local_config(
    run_dir: Path,
    preset: Preset,
    *,
    data_dir: str | None = None,
    workers: int | None = None,
    **overrides,
) -> PipelineConfig:
    """The configuration of a local run whose every output lives under ``run_dir``."""
    run_dir = Path(run_dir).resolve()
    return PipelineConfig(
        pipeline_root=str(run_dir / PIPELINE_DIR),
        preset=preset,
        data_dir=data_dir,
        serving_dir=str(run_dir / SERVING_DIR),
        backup_dir=str(run_dir / BACKUP_DIR),
        beam_pipeline_args=local_beam_args(workers),
        **overrides,
    )


@dataclasses.dataclass
class NodeProgress:
    """What the runner reported about one component."""

    name: str
    seconds: float = 0.0
    cached: bool = False


class ProgressHandler(logging.Handler):
    """Turns the local runner's log lines into one line per component for a person.

    ``echo`` receives lines such as ``[3/10] StatisticsGen running`` and
    ``[3/10] StatisticsGen done in 12 s``, and, while a model trains, about every
    tenth of the epochs, ``[6/10] Trainer epoch 12/60: loss 0.830, accuracy 0.733``;
    warnings and errors are passed on as they are.
    """

    def __init__(self, node_ids: list[str], echo: Callable[[str], None]):
        super().__init__(level=logging.INFO)
        self.node_ids = node_ids
        self.echo = echo
        self.nodes: dict[str, NodeProgress] = {}
        self._current: str | None = None
        self._started = 0.0
        self._epoch: tuple[int, int] | None = None
        self._reported_tenth = 0

    def _position(self, node: str) -> str:
        index = self.node_ids.index(node) + 1 if node in self.node_ids else 0
        return f"[{index}/{len(self.node_ids)}] {node}"

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a malformed log call must never stop a run
            return
        if match := _RUNNING.match(message):
            self._current = match.group(1)
            self._started = time.monotonic()
            self.nodes[self._current] = NodeProgress(self._current)
            self._epoch, self._reported_tenth = None, 0
            self.echo(f"{self._position(self._current)} running")
        elif match := _EPOCH.match(message):
            epoch, epochs = int(match.group(1)), int(match.group(2))
            self._epoch = (epoch, epochs) if epochs > 0 else None
        elif (match := _EPOCH_END.match(message)) and self._epoch and self._current:
            epoch, epochs = self._epoch
            tenth = epoch * EPOCH_REPORTS // epochs
            if tenth > self._reported_tenth or epoch == epochs:
                self._reported_tenth = tenth
                loss, accuracy = float(match.group(1)), float(match.group(2))
                self.echo(
                    f"{self._position(self._current)} epoch {epoch}/{epochs}: "
                    f"loss {loss:.3f}, accuracy {accuracy:.3f}"
                )
        elif _CACHED.match(message) and self._current:
            self.nodes[self._current].cached = True
        elif (match := _FINISHED.match(message)) and match.group(1) in self.nodes:
            node = self.nodes[match.group(1)]
            node.seconds = time.monotonic() - self._started
            how = "reused from cache" if node.cached else f"done in {node.seconds:.0f} s"
            self.echo(f"{self._position(node.name)} {how}")
        elif record.levelno >= logging.WARNING and "tfx" in record.pathname:
            self.echo(f"{record.levelname.lower()}: {message.splitlines()[0]}")


def run_local(
    config: PipelineConfig,
    run_dir: Path,
    *,
    through: str = "push",
    echo: Callable[[str], None] | None = None,
) -> dict[str, NodeProgress]:
    """Runs the pipeline with LocalDagRunner; returns what happened to each component.

    Raises whatever the failing component raised, after logging it to ``run.log``.
    """
    from absl import logging as absl_logging
    from tfx import v1 as tfx

    from pipeline.pipeline import create_pipeline

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    pipeline = create_pipeline(config, metadata_config(run_dir), through=through)
    node_ids = [component.id for component in pipeline.components]

    absl_logger = logging.getLogger("absl")
    absl_logging.set_verbosity(absl_logging.INFO)
    file_handler = logging.FileHandler(run_dir / LOG_FILE)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    progress = ProgressHandler(node_ids, echo or (lambda line: None))
    root_logger = logging.getLogger()
    # The project's own modules log at INFO what a person checks afterwards (the
    # Trainer's replicas and schedule, a resumed checkpoint, the decoded-image cache).
    project_logger = logging.getLogger("components")
    saved_project_level = project_logger.level
    project_logger.setLevel(logging.INFO)
    saved_propagate = absl_logger.propagate
    saved_levels = {h: h.level for h in root_logger.handlers}
    absl_logger.addHandler(file_handler)
    absl_logger.addHandler(progress)
    keras_was_interactive = None
    if echo is not None:
        # The console gets the progress lines and errors; everything else that TFX,
        # Beam and TFDV log (warnings included) goes to run.log. Keras' epoch lines
        # too: with interactive logging off it logs them instead of printing, and the
        # progress handler condenses them.
        import tensorflow as tf

        keras_was_interactive = tf.keras.utils.is_interactive_logging_enabled()
        tf.keras.utils.disable_interactive_logging()
        absl_logger.propagate = False
        root_logger.addHandler(file_handler)
        for handler in saved_levels:
            handler.setLevel(max(handler.level, logging.ERROR))
    else:
        project_logger.addHandler(file_handler)
    try:
        tfx.orchestration.LocalDagRunner().run(pipeline)
    except BaseException:
        absl_logger.exception("the pipeline stopped")
        raise
    finally:
        absl_logger.removeHandler(file_handler)
        absl_logger.removeHandler(progress)
        root_logger.removeHandler(file_handler)
        project_logger.removeHandler(file_handler)
        project_logger.setLevel(saved_project_level)
        absl_logger.propagate = saved_propagate
        for handler, level in saved_levels.items():
            handler.setLevel(level)
        if keras_was_interactive:
            tf.keras.utils.enable_interactive_logging()
        file_handler.close()
    return progress.nodes
