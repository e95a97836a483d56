"""Labels experts overrode (the catalogue's overrides files), for the report.

TFMA's results carry no label source, so the counts come from ingestion: the
Evaluator's own ``examples`` input holds the counts ingestion wrote
(``ingestion_counts.json``), among them the examples whose label an override set, per
institution and class. In a ``marco run`` folder it is found through the run's ML
Metadata lineage; under a Kubeflow V2 / Vertex AI pipeline root, it is the same
pipeline job's ImageExampleGen output (a job whose ImageExampleGen was reused from
an earlier job's cache has no such task folder, and gets no counts).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path


def _run_folder(evaluation_uri: str) -> Path | None:
    """The `marco run` folder holding an evaluation: its nearest parent with the ML
    Metadata store; None for other layouts (a pipeline root, hand-made results)."""
    from components import filesystem
    from pipeline.local import METADATA_FILE

    if not evaluation_uri or filesystem.is_remote(evaluation_uri):
        return None
    for folder in Path(evaluation_uri).resolve().parents:
        if (folder / METADATA_FILE).is_file():
            return folder
    return None


def evaluated_examples(evaluation_uri: str) -> str | None:
    """The Examples folder the Evaluator that wrote ``evaluation_uri`` read, or None."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    from pipeline.local import metadata_config

    run_dir = _run_folder(evaluation_uri)
    if run_dir is None:
        return _job_examples(evaluation_uri)
    store = metadata_store.MetadataStore(metadata_config(run_dir))
    wanted = {evaluation_uri.rstrip("/"), str(Path(evaluation_uri).resolve())}
    artifacts = [a for uri in wanted for a in store.get_artifacts_by_uri(uri)]
    if not artifacts:
        return None
    events = store.get_events_by_artifact_ids([a.id for a in artifacts])
    producers = [e.execution_id for e in events if e.type == metadata_store_pb2.Event.OUTPUT]
    for event in store.get_events_by_execution_ids(producers):
        steps = [s.key for s in event.path.steps if s.HasField("key")]
        if event.type == metadata_store_pb2.Event.INPUT and steps[:1] == ["examples"]:
            [examples] = store.get_artifacts_by_id([event.artifact_id])
            return examples.uri
    return None


def _job_examples(evaluation_uri: str) -> str | None:
    """Under a pipeline root (``<job>/Evaluator_<id>/evaluation``): the Examples output
    of the same job's finished ImageExampleGen task, or None."""
    from components import filesystem
    from pipeline.runs import EVALUATOR_TASK, INGESTION_TASK, finished_task_dirs, output_uri

    if not evaluation_uri:
        return None
    task_dir = filesystem.parent(evaluation_uri.rstrip("/"))
    if not filesystem.name(task_dir).startswith(f"{EVALUATOR_TASK}_"):
        return None
    for ingestion in finished_task_dirs(filesystem.parent(task_dir), INGESTION_TASK):
        uri = output_uri(ingestion, "examples")
        if uri:
            return uri
    return None


def by_institution(overrides: Counter) -> dict[str, dict[str, int]]:
    """``{"INSTITUTION/class": n}`` as institution -> class -> count, sorted."""
    table: dict[str, dict[str, int]] = {}
    for key, count in sorted(overrides.items()):
        institution, name = key.split("/", 1)
        table.setdefault(institution, {})[name] = int(count)
    return table


def label_overrides(evaluation_uri: str) -> dict[str, dict[str, int]] | None:
    """Overridden labels per institution and class in the evaluated run's ingestion,
    or None when the evaluation's examples cannot be found or hold no counts."""
    from components.ingestion.report import read_summary

    try:
        examples = evaluated_examples(evaluation_uri)
        if examples is None:
            return None
        return by_institution(read_summary(examples).overrides)
    except (OSError, ValueError):
        return None
