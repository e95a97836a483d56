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
    return RunOutcome(evaluation.uri, blessed, pushed, pushed_to, _model_of(store, evaluation))
