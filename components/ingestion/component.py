"""ImageExampleGen: the TFX component that turns drop images into the project's tf.Examples."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import ClassVar

from tfx import types
from tfx import v1 as tfx
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components import imagecheck
from components.ingestion import driver, executor
from components.ingestion.report import DEFAULT_QUARANTINE_BUDGET
from components.names import DEFAULT_EVAL_PERCENT, require_data_source


class ImageExampleGenSpec(types.ComponentSpec):
    """Parameters and output of :class:`ImageExampleGen`."""

    PARAMETERS: ClassVar[dict] = {
        executor.DATA_DIR_KEY: ExecutionParameter(type=str, optional=True),
        executor.CATALOGUE_DIR_KEY: ExecutionParameter(type=str, optional=True),
        executor.MARCO_SHARDS_KEY: ExecutionParameter(type=str, optional=True),
        # JSON list of institution codes, as TFX's own components store lists.
        executor.INSTITUTIONS_KEY: ExecutionParameter(type=str, optional=True),
        executor.EVAL_PERCENT_KEY: ExecutionParameter(type=int),
        executor.QUARANTINE_BUDGET_KEY: ExecutionParameter(type=float),
        executor.MAX_PIXELS_KEY: ExecutionParameter(type=int),
        executor.STOP_REPORT_DIR_KEY: ExecutionParameter(type=str, optional=True),
        # Digest of the input files (see driver.py): computed by the driver where
        # drivers run, passed as a runtime parameter where they do not (Vertex, KFP).
        driver.FINGERPRINT_KEY: ExecutionParameter(type=str, optional=True),
    }
    INPUTS: ClassVar[dict] = {}
    OUTPUTS: ClassVar[dict] = {
        executor.EXAMPLES_KEY: ChannelParameter(type=tfx.types.standard_artifacts.Examples),
    }


class ImageExampleGen(base_beam_component.BaseBeamComponent):
    """Reads raw institution folders and/or published MARCO shards into an Examples artifact.

    Output: splits ``train`` and ``eval`` (a stable hash of the image id decides), as
    gzipped TFRecords of tf.Examples in the project's format, plus
    ``quarantine/quarantine-*.csv`` inside the artifact for every refused input. The
    run fails only when the quarantined share exceeds ``quarantine_budget``; the full
    quarantine report is then copied to ``stop_report_dir`` (as
    ``<run stamp>-quarantine.csv``), since the failed step's own folder is removed.
    Beam work runs where the pipeline's ``beam_pipeline_args`` say.
    """

    SPEC_CLASS = ImageExampleGenSpec
    DRIVER_CLASS = driver.Driver
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(
        self,
        data_dir: str | None = None,
        *,
        catalogue_dir: str | None = None,
        marco_shards: str | None = None,
        institutions: Sequence[str] | None = None,
        eval_percent: int = DEFAULT_EVAL_PERCENT,
        quarantine_budget: float = DEFAULT_QUARANTINE_BUDGET,
        max_pixels: int = imagecheck.DEFAULT_MAX_PIXELS,
        input_fingerprint: str | None = None,
        stop_report_dir: str | None = None,
    ) -> None:
        """Configure ingestion.

        Args:
            data_dir: root of the raw institution folders, laid out as each catalogue
                file's ``layout`` says.
            catalogue_dir: folder of institution YAML files (default: the project's).
            marco_shards: glob of published MARCO TFRecord shards to read as well.
            institutions: read only these institutions from ``data_dir`` (default: all;
                an institution without data is then an error).
            eval_percent: percent of image ids in the eval split (0-100).
            quarantine_budget: largest acceptable quarantined share (0-1).
            max_pixels: larger declared image sizes are quarantined as decompression
                bombs before any decoding.
            input_fingerprint: digest of the input files when computed outside the
                component (a runtime parameter on Kubeflow and Vertex, where TFX runs
                no custom drivers); the local driver computes it itself.
            stop_report_dir: folder (local or any Beam file system) that receives the
                full quarantine report when the budget stops the run.
        """
        require_data_source(data_dir, marco_shards)
        if not 0 <= eval_percent <= 100:
            raise ValueError(f"eval_percent must be within 0-100, got {eval_percent}")
        if not 0 <= quarantine_budget <= 1:
            raise ValueError(f"quarantine_budget is a fraction (0-1), got {quarantine_budget}")
        spec = ImageExampleGenSpec(
            data_dir=data_dir,
            catalogue_dir=catalogue_dir,
            marco_shards=marco_shards,
            institutions=json.dumps(list(institutions)) if institutions else None,
            eval_percent=eval_percent,
            quarantine_budget=float(quarantine_budget),
            max_pixels=max_pixels,
            input_fingerprint=input_fingerprint,
            stop_report_dir=stop_report_dir,
            examples=types.Channel(type=tfx.types.standard_artifacts.Examples),
        )
        super().__init__(spec=spec)
