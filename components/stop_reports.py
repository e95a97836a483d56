"""Where a step that stops a run writes its full account, so that it outlives the step.

When a step fails, TFX removes the step's own output folder; the quarantine report of
an ingestion stopped by its budget would go with it. Steps that stop a run on purpose
(ImageExampleGen over its quarantine budget, AnomalyGate on anomalies) therefore write
their full report into a folder of the pipeline's, ``stop_report_dir``: the run folder's
``stopped-runs/`` locally, ``<pipeline root>/stopped-runs/`` on Kubeflow and Vertex AI.
Each file name starts with a stamp of the run, so reports of several runs sit side by
side.
"""

from __future__ import annotations

import datetime
import re
import uuid

STOPPED_RUNS_DIR = "stopped-runs"


def default_dir(pipeline_root: str) -> str:
    """``<pipeline_root>/stopped-runs``: beside the runs' own folders."""
    return f"{str(pipeline_root).rstrip('/')}/{STOPPED_RUNS_DIR}"


def run_stamp(run_id: str | None = None) -> str:
    """A file-name-safe stamp that tells one run's reports from another's.

    The orchestrator's pipeline run id where it gives one (LocalDagRunner does), else
    the UTC time and a short random suffix (Kubeflow and Vertex AI containers are
    told no run id).
    """
    if run_id:
        return re.sub(r"[^A-Za-z0-9._-]+", "-", run_id).strip("-")
    now = datetime.datetime.now(datetime.timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def report_path(folder: str | None, run_id: str | None, kind: str) -> str | None:
    """``<folder>/<run stamp>-<kind>``, or None when no folder was given."""
    if not folder:
        return None
    return f"{str(folder).rstrip('/')}/{run_stamp(run_id)}-{kind}"
