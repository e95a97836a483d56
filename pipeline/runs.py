"""What a local run folder holds, read through its ML Metadata store.

The report and the run summary find the latest evaluation, blessing and push of a
run folder here, by lineage rather than by guessing folder names.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pipeline.local import METADATA_FILE, metadata_config


class RunFolderError(ValueError):
    """The folder is not a pipeline run, or lacks what was asked for."""


@dataclasses.dataclass(frozen=True)
class RunOutcome:
    """The latest evaluation of a run folder and what became of its model."""

    evaluation_uri: str
    blessed: bool | None
    pushed: bool
    pushed_to: str | None
    model_uri: str | None
    # Why a blessed model was not pushed (e.g. "already served: ..."), when the Pusher
    # said so.
    not_pushed_reason: str | None = None


def _store(run_dir: Path):
    from ml_metadata.metadata_store import metadata_store

    if not (run_dir / METADATA_FILE).is_file():
        raise RunFolderError(
            f"{run_dir}: no {METADATA_FILE}; is this the --out folder of `marco run`?"
        )
    return metadata_store.MetadataStore(metadata_config(run_dir))


def _latest(store, type_name: str):
    from ml_metadata.proto import metadata_store_pb2

    live = [a for a in store.get_artifacts_by_type(type_name)
            if a.state == metadata_store_pb2.Artifact.LIVE]
    return max(live, key=lambda a: (a.create_time_since_epoch, a.id)) if live else None


def _produced_with(store, artifact, type_name: str):
    """The artifact of ``type_name`` output by the execution that produced ``artifact``."""
    from ml_metadata.proto import metadata_store_pb2

    outputs = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
    producers = {e.execution_id for e in store.get_events_by_artifact_ids([artifact.id])
                 if e.type in outputs}
    siblings = [e.artifact_id for e in store.get_events_by_execution_ids(list(producers))
                if e.type in outputs]
    wanted = [a for a in store.get_artifacts_by_id(siblings) if a.type == type_name]
    return wanted[0] if wanted else None


def _consumers_output(store, artifact, type_name: str):
    """The newest ``type_name`` artifact output by an execution that read ``artifact``."""
    from ml_metadata.proto import metadata_store_pb2

    readers = {e.execution_id for e in store.get_events_by_artifact_ids([artifact.id])
               if e.type == metadata_store_pb2.Event.INPUT}
    if not readers:
        return None
    outputs = [e.artifact_id for e in store.get_events_by_execution_ids(list(readers))
               if e.type == metadata_store_pb2.Event.OUTPUT]
    found = [a for a in store.get_artifacts_by_id(outputs) if a.type == type_name]
    return max(found, key=lambda a: a.id) if found else None


def _model_of(store, evaluation) -> str | None:
    from ml_metadata.proto import metadata_store_pb2

    producers = {e.execution_id for e in store.get_events_by_artifact_ids([evaluation.id])
                 if e.type == metadata_store_pb2.Event.OUTPUT}
    inputs = [e for e in store.get_events_by_execution_ids(list(producers))
              if e.type == metadata_store_pb2.Event.INPUT]
    for event in inputs:
        steps = [s.key for s in event.path.steps if s.HasField("key")]
        if steps and steps[0] == "model":
            [model] = store.get_artifacts_by_id([event.artifact_id])
            return model.uri
    return None


def latest_outcome(run_dir: str | Path) -> RunOutcome:
    """The newest ModelEvaluation of the run folder, its blessing and its push."""
    run_dir = Path(run_dir)
    store = _store(run_dir)
    evaluation = _latest(store, "ModelEvaluation")
    if evaluation is None:
        raise RunFolderError(
            f"{run_dir}: no model evaluation yet; the Evaluator has not run in this folder"
        )
    blessing = _produced_with(store, evaluation, "ModelBlessing")
    blessed = None
    if blessing is not None and "blessed" in blessing.custom_properties:
        blessed = bool(blessing.custom_properties["blessed"].int_value)
    push = _consumers_output(store, blessing, "PushedModel") if blessing else None
    pushed = bool(push and push.custom_properties["pushed"].int_value) if push else False
    pushed_to = None
    if pushed and "pushed_destination" in push.custom_properties:
        pushed_to = push.custom_properties["pushed_destination"].string_value
    reason = None
    if push is not None and NOT_PUSHED_REASON in push.custom_properties:
        reason = push.custom_properties[NOT_PUSHED_REASON].string_value or None
    return RunOutcome(evaluation.uri, blessed, pushed, pushed_to, _model_of(store, evaluation),
                      reason)


# --- A Kubeflow V2 / Vertex AI pipeline root, without ML Metadata -------------------
#
# Vertex AI Pipelines (and tests/kfp_harness.py, which lays runs out the same way)
# writes each task's outputs under
#   <pipeline_root>/<project number>/<pipeline job name>/<Task>_<task id>/<output key>
# beside the task's executor_output.json, written when the task has succeeded.

EXECUTOR_OUTPUT = "executor_output.json"
EVALUATOR_TASK = "Evaluator"
PUSHER_TASK = "Pusher"
TRAINER_TASK = "Trainer"
INGESTION_TASK = "ImageExampleGen"
BLESSED_FILE = "BLESSED"
# The Pusher's property (components.pusher.NOT_PUSHED_REASON_PROPERTY; not imported,
# since that module needs TFX).
NOT_PUSHED_REASON = "not_pushed_reason"
NOT_BLESSED_FILE = "NOT_BLESSED"


@dataclasses.dataclass(frozen=True)
class RootEvaluation:
    """One finished Evaluator task under a pipeline root."""

    job_name: str
    task_dir: str
    finished_ns: int


def finished_task_dirs(job_dir: str, task: str) -> list[str]:
    from components import filesystem

    return [d for d in filesystem.glob(filesystem.join(job_dir, f"{task}_*"))
            if filesystem.exists(filesystem.join(d, EXECUTOR_OUTPUT))]


def root_evaluations(pipeline_root: str, job_name: str | None = None) -> list[RootEvaluation]:
    """Finished Evaluator tasks under a pipeline root, oldest first.

    A task counts once its ``executor_output.json`` exists (written when it
    succeeded), and its time is that file's modification time: object stores keep no
    folder times, and the evaluation's own files are written while the task runs.
    """
    from components import filesystem

    job = job_name or "*"
    pattern = filesystem.join(pipeline_root, f"*/{job}/{EVALUATOR_TASK}_*/{EXECUTOR_OUTPUT}")
    found = []
    for marker in filesystem.glob(pattern):
        task_dir = filesystem.parent(marker)
        if not filesystem.isdir(filesystem.join(task_dir, "evaluation")):
            continue
        found.append(RootEvaluation(
            filesystem.name(filesystem.parent(task_dir)), task_dir, filesystem.stat(marker)[1]
        ))
    return sorted(found, key=lambda e: (e.finished_ns, e.task_dir))


def _output_artifact(task_dir: str, key: str) -> dict:
    """The first output artifact of ``key`` in a task's executor_output.json ({} if none)."""
    import json

    from components import filesystem

    try:
        output = json.loads(filesystem.read_bytes(filesystem.join(task_dir, EXECUTOR_OUTPUT)))
        artifact = output["artifacts"][key]["artifacts"][0]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return {}
    return artifact if isinstance(artifact, dict) else {}


def _output_metadata(task_dir: str, key: str) -> dict:
    """The first output artifact's metadata ({} if none)."""
    return dict(_output_artifact(task_dir, key).get("metadata") or {})


def output_uri(task_dir: str, key: str) -> str | None:
    """The first output artifact's URI (None if none)."""
    return _output_artifact(task_dir, key).get("uri") or None


def root_outcome(pipeline_root: str, job_name: str | None = None) -> RunOutcome:
    """The newest finished evaluation under a Vertex AI pipeline root, its blessing and push.

    ``job_name`` picks one pipeline job's run (the folder below the project number).
    The blessing is the Evaluator's ``blessing`` output (a BLESSED or NOT_BLESSED
    file); the push is the same job's Pusher's ``pushed_model`` (whether it pushed,
    and where, from its executor_output.json); the model is the same job's Trainer's.
    """
    from components import filesystem

    evaluations = root_evaluations(pipeline_root, job_name)
    if not evaluations:
        if job_name:
            jobs = sorted({e.job_name for e in root_evaluations(pipeline_root)})
            raise RunFolderError(
                f"{pipeline_root}: no finished Evaluator in pipeline job {job_name!r}"
                + (f" (jobs with one: {', '.join(jobs)})" if jobs else "")
            )
        raise RunFolderError(
            f"{pipeline_root}: no {METADATA_FILE} and no finished Evaluator in the Vertex AI "
            f"layout (<root>/<project number>/<job>/{EVALUATOR_TASK}_<id>/evaluation)"
        )
    newest = evaluations[-1]
    job_dir = filesystem.parent(newest.task_dir)
    blessing = filesystem.join(newest.task_dir, "blessing")
    blessed = None
    if filesystem.exists(filesystem.join(blessing, BLESSED_FILE)):
        blessed = True
    elif filesystem.exists(filesystem.join(blessing, NOT_BLESSED_FILE)):
        blessed = False
    pushed, pushed_to, reason = False, None, None
    for pusher in finished_task_dirs(job_dir, PUSHER_TASK):
        push = _output_metadata(pusher, "pushed_model")
        if push.get("pushed"):
            pushed = True
            pushed_to = push.get("pushed_destination") or None
        elif push.get(NOT_PUSHED_REASON):
            reason = str(push[NOT_PUSHED_REASON])
    trainers = finished_task_dirs(job_dir, TRAINER_TASK)
    model_uri = filesystem.join(trainers[0], "model") if trainers else None
    return RunOutcome(
        filesystem.join(newest.task_dir, "evaluation"), blessed, pushed, pushed_to, model_uri,
        None if pushed else reason,
    )


def outcome(folder: str | Path, job_name: str | None = None) -> RunOutcome:
    """The latest outcome of a `marco run` folder (ML Metadata) or a pipeline root.

    A folder with ``metadata.sqlite`` is read through its lineage; any other folder
    (local or gs://) as a Kubeflow V2 / Vertex AI pipeline root.
    """
    from components import filesystem

    local = not filesystem.is_remote(str(folder))
    if local and (Path(folder) / METADATA_FILE).is_file():
        if job_name:
            raise RunFolderError(
                f"{folder}: a `marco run` folder has no pipeline jobs; --job-name is for "
                "a Vertex AI pipeline root"
            )
        return latest_outcome(folder)
    return root_outcome(str(folder), job_name)
