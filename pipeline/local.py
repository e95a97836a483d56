"""Runs the MARCO pipeline on this machine: LocalDagRunner, SQLite ML Metadata and
Beam's DirectRunner in multi-processing mode.

A run folder holds everything one pipeline writes, so running the same command again
finds its ML Metadata, reuses cached results and resumes an interrupted training::

    RUN_DIR/metadata.sqlite   ML Metadata (lineage, executions, blessings)
    RUN_DIR/pipeline/         component outputs (TFX pipeline root)
    RUN_DIR/serving/          pushed models, one numbered version each (TF Serving)
    RUN_DIR/trainer-backup/   the Trainer's preemption checkpoints
    RUN_DIR/stopped-runs/     full reports of runs a step stopped on purpose (the
                              quarantine report over budget, the anomalies)
    RUN_DIR/run.log           the full log of every run

While a command runs, :func:`console_and_log` sends everything this process and the
processes it starts write (log records, Python warnings, TensorFlow's C++ messages,
Beam workers' output) to the log file; the console gets the lines the command writes
through its :class:`Console`, the warnings the project's own code logs and progress
bars.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from components.names import (
    EPOCH_ATTRIBUTE,
    EPOCH_LOGGER,
    EPOCH_LOGS_ATTRIBUTE,
    EPOCHS_ATTRIBUTE,
)

if TYPE_CHECKING:  # imported where used: commands import this module before routing
    from pipeline.config import PipelineConfig, Preset

METADATA_FILE = "metadata.sqlite"
PIPELINE_DIR = "pipeline"
SERVING_DIR = "serving"
BACKUP_DIR = "trainer-backup"
LOG_FILE = "run.log"

# Loggers of the project's own code: their warnings and errors are shown on the
# console, and their INFO records (the Trainer's replicas and schedule, a resumed
# checkpoint, the decoded-image cache) go to the log.
PROJECT_LOGGERS = ("components", "pipeline", "kubeflow")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# LocalDagRunner (TFX 1.16) calls no hook when a component starts, is reused from the
# cache or ends: the launcher's own log lines are its only account of that, so they
# are read here.
_RUNNING = re.compile(r"Component (\S+) is running\.")
_FINISHED = re.compile(r"Component (\S+) is finished\.")
_CACHED = re.compile(r"A cached execution \d+ is used\.")
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
    from components import stop_reports
    from pipeline.config import PipelineConfig

    run_dir = Path(run_dir).resolve()
    return PipelineConfig(
        pipeline_root=str(run_dir / PIPELINE_DIR),
        preset=preset,
        data_dir=data_dir,
        serving_dir=str(run_dir / SERVING_DIR),
        backup_dir=str(run_dir / BACKUP_DIR),
        stop_report_dir=str(run_dir / stop_reports.STOPPED_RUNS_DIR),
        beam_pipeline_args=local_beam_args(workers),
        **overrides,
    )


# ----------------------------------------------------------------------------- console


@dataclasses.dataclass
class Console:
    """The terminal a command writes its own lines to while its output is routed.

    ``out`` and ``err`` are the standard output and error the command started with.
    """

    out: TextIO
    err: TextIO
    log_path: Path

    def echo(self, line: str = "") -> None:
        self.out.write(line + "\n")
        self.out.flush()


class ProjectWarnings(logging.Handler):
    """Shows warnings and errors that the project's own code logs, one line each.

    Records that carry an exception are left to the log: the command that catches
    the exception reports it.
    """

    def __init__(self, echo: Callable[[str], None]):
        super().__init__(level=logging.WARNING)
        self.echo = echo

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.split(".")[0] not in PROJECT_LOGGERS or record.exc_info:
            return
        try:
            message = record.getMessage()
        except Exception:  # a malformed log call must never stop a run
            return
        self.echo(f"{record.levelname.lower()}: {message.splitlines()[0]}")


def _terminal_copy(stream: TextIO) -> TextIO:
    """A stream to where ``stream`` writes now, unaffected when its descriptor moves.

    A stream with no descriptor of its own (a test runner's capture) is returned as
    it is: moving descriptors 1 and 2 does not reach it.
    """
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return stream
    stream.flush()
    return open(  # closed when the routing ends
        os.dup(fd), "w", buffering=1, encoding=getattr(stream, "encoding", None) or "utf-8",
        errors=getattr(stream, "errors", None) or "strict",
    )


def _log_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` while routed: the warning becomes a log record."""
    text = warnings.formatwarning(message, category, filename, lineno, line)
    logging.getLogger("py.warnings").warning("%s", text.rstrip())


_active: Console | None = None


@contextlib.contextmanager
def console_and_log(log_path: Path) -> Iterator[Console]:
    """Routes this process's output, and that of the processes it starts, to a log file.

    Inside the block, file descriptors 1 and 2 point at ``log_path`` (opened for
    appending), so C++ messages (TensorFlow's, gRPC's) and everything Beam and TFX
    worker processes print land there; ``sys.stdout`` writes there too. Log records
    of every logger go there with a time stamp (INFO and up for absl, which TFX and
    Keras log through, and for the project's loggers), and so do Python warnings,
    exceptions ignored in ``__del__`` methods and uncaught exceptions of threads.

    The console keeps what the command writes through the yielded :class:`Console`,
    one line for each warning or error the project's own code logs, and
    ``sys.stderr`` of this process (progress bars). Enter it before TensorFlow is
    imported: the messages TensorFlow prints as it loads are then routed too.

    Nested calls reuse the routing already in place.
    """
    global _active
    if _active is not None:
        yield _active
        return
    from absl import logging as absl_logging

    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    console = Console(_terminal_copy(sys.stdout), _terminal_copy(sys.stderr), log_path)
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(AttributeError, OSError, ValueError):
            stream.flush()
    saved_fds = []
    for fd in (1, 2):
        try:
            saved_fds.append((fd, os.dup(fd)))
        except OSError:  # not open in this process: nothing of ours writes to it
            continue
        os.dup2(log_fd, fd)
    log_stream = open(log_fd, "w", buffering=1, encoding="utf-8",  # noqa: SIM115
                      errors="backslashreplace")

    root = logging.getLogger()
    file_handler = logging.StreamHandler(log_stream)
    file_handler.setFormatter(logging.Formatter(LOG_FORMAT))
    warnings_handler = ProjectWarnings(console.echo)
    # Handlers already in place write to the terminal (or to a test's capture); while
    # routed, the log file has every record once, with its time.
    muted = {handler: handler.level for handler in root.handlers}
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            for handler in logger.handlers:
                if getattr(handler, "stream", None) in (
                    sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__
                ):
                    muted[handler] = handler.level
    for handler in muted:
        handler.setLevel(logging.CRITICAL + 1)
    root.addHandler(file_handler)
    root.addHandler(warnings_handler)
    levels = {}
    for name in PROJECT_LOGGERS:
        logger = logging.getLogger(name)
        levels[logger] = logger.level
        logger.setLevel(logging.INFO)
    # absl's verbosity flag, not only its logger's level: TensorFlow sets the flag and
    # back while it saves a SavedModel, which sets the logger's level from the flag.
    absl_verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.INFO)
    saved_streams = sys.stdout, sys.stderr
    saved_hooks = sys.unraisablehook, threading.excepthook, warnings.showwarning
    warnings.showwarning = _log_warning
    sys.unraisablehook = lambda unraisable: logging.getLogger("py.unraisable").warning(
        "%s: %r", unraisable.err_msg or "Exception ignored in", unraisable.object,
        exc_info=(unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback),
    )
    threading.excepthook = lambda args: logging.getLogger("py.threads").error(
        "uncaught exception in thread %s", getattr(args.thread, "name", "?"),
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )
    sys.stdout, sys.stderr = log_stream, console.err
    _active = console
    try:
        yield console
    finally:
        _active = None
        sys.stdout, sys.stderr = saved_streams
        sys.unraisablehook, threading.excepthook, warnings.showwarning = saved_hooks
        absl_logging.set_verbosity(absl_verbosity)
        for logger, level in levels.items():
            logger.setLevel(level)
        root.removeHandler(warnings_handler)
        root.removeHandler(file_handler)
        for handler, level in muted.items():
            handler.setLevel(level)
        for stream in (log_stream, console.out, console.err):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        for fd, saved in saved_fds:
            os.dup2(saved, fd)
            os.close(saved)
        log_stream.close()
        for stream in (console.out, console.err):
            if stream not in saved_streams:
                stream.close()


# ----------------------------------------------------------------------------- progress


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
    tenth of the epochs, ``[6/10] Trainer epoch 12/60: loss 0.830, accuracy 0.733``.

    Components are followed through TFX's launcher log lines (LocalDagRunner has no
    hook); epochs through the records the Trainer's
    :class:`~components.trainer.train.EpochReporter` logs on
    :data:`~components.names.EPOCH_LOGGER`, whose attributes carry the numbers.
    """

    def __init__(self, node_ids: list[str], echo: Callable[[str], None]):
        super().__init__(level=logging.INFO)
        self.node_ids = node_ids
        self.echo = echo
        self.nodes: dict[str, NodeProgress] = {}
        self._current: str | None = None
        self._started = 0.0
        self._reported_tenth = 0

    def _position(self, node: str) -> str:
        index = self.node_ids.index(node) + 1 if node in self.node_ids else 0
        return f"[{index}/{len(self.node_ids)}] {node}"

    def _report_epoch(self, record: logging.LogRecord) -> None:
        epoch = getattr(record, EPOCH_ATTRIBUTE, 0)
        epochs = getattr(record, EPOCHS_ATTRIBUTE, 0)
        logs = getattr(record, EPOCH_LOGS_ATTRIBUTE, {})
        if epochs <= 0 or not 0 < epoch <= epochs:
            return
        tenth = epoch * EPOCH_REPORTS // epochs
        if tenth > self._reported_tenth or epoch == epochs:
            self._reported_tenth = tenth
            metrics = ", ".join(f"{name} {logs[name]:.3f}" for name in ("loss", "accuracy")
                                if name in logs)
            self.echo(f"{self._position(self._current)} epoch {epoch}/{epochs}: {metrics}")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a malformed log call must never stop a run
            return
        if match := _RUNNING.match(message):
            self._current = match.group(1)
            self._started = time.monotonic()
            self.nodes[self._current] = NodeProgress(self._current)
            self._reported_tenth = 0
            self.echo(f"{self._position(self._current)} running")
        elif record.name == EPOCH_LOGGER and self._current:
            self._report_epoch(record)
        elif _CACHED.match(message) and self._current:
            self.nodes[self._current].cached = True
        elif (match := _FINISHED.match(message)) and match.group(1) in self.nodes:
            node = self.nodes[match.group(1)]
            node.seconds = time.monotonic() - self._started
            how = "reused from cache" if node.cached else f"done in {node.seconds:.0f} s"
            self.echo(f"{self._position(node.name)} {how}")


def run_local(
    config: PipelineConfig,
    run_dir: Path,
    *,
    through: str = "push",
    echo: Callable[[str], None] | None = None,
) -> dict[str, NodeProgress]:
    """Runs the pipeline with LocalDagRunner; returns what happened to each component.

    Everything the run logs and prints goes to ``run_dir/run.log`` (see
    :func:`console_and_log`); ``echo`` gets a line as each component starts and ends,
    and the Trainer's condensed epochs.

    Raises whatever the failing component raised, after logging it to ``run.log``.
    """
    run_dir = Path(run_dir)
    with console_and_log(run_dir / LOG_FILE):
        import tensorflow as tf
        from tfx import v1 as tfx

        from pipeline.pipeline import create_pipeline

        pipeline = create_pipeline(config, metadata_config(run_dir), through=through)
        node_ids = [component.id for component in pipeline.components]
        progress = ProgressHandler(node_ids, echo or (lambda line: None))
        absl_logger = logging.getLogger("absl")
        epoch_logger = logging.getLogger(EPOCH_LOGGER)
        absl_logger.addHandler(progress)
        epoch_logger.addHandler(progress)
        # With interactive logging off Keras logs its epoch lines instead of printing
        # progress bars: they reach run.log as one line per epoch.
        keras_was_interactive = tf.keras.utils.is_interactive_logging_enabled()
        tf.keras.utils.disable_interactive_logging()
        try:
            tfx.orchestration.LocalDagRunner().run(pipeline)
        except BaseException:
            absl_logger.exception("the pipeline stopped")
            raise
        finally:
            absl_logger.removeHandler(progress)
            epoch_logger.removeHandler(progress)
            if keras_was_interactive:
                tf.keras.utils.enable_interactive_logging()
    return progress.nodes
