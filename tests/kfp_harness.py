"""Executes a compiled KFP v2 pipeline spec on this machine, task by task, as Vertex AI
Pipelines' launcher does.

What is emulated, and how:

- **Order and inputs.** Tasks run in topological order of the DAG (``dependentTasks``
  and the producers of their input artifacts). Each gets an ``ExecutorInput`` (KFP v2
  IR: ``inputs.parameterValues``, ``inputs.artifacts``, ``outputs.artifacts``,
  ``outputs.outputFile``) built from constants, the run's parameter values and its
  producers' output artifacts, with artifact URIs laid out as Vertex AI lays them out:
  ``<root>/<project number>/<job name>/<task>_<task id>/<output key>``.
- **The container's own command line**, with its ``{{$}}`` placeholder filled in. The
  image's ``python`` becomes this environment's, and the image's project folder
  (``/pipeline``) this checkout; everything else runs as written.
- **Executor outputs** are read back from ``executor_output.json`` and become the
  artifacts downstream tasks receive. A task that exits non-zero fails the run
  (:class:`TaskFailed`, with the end of its log).
- **Trigger conditions** (``triggerPolicy.condition``) on input artifact metadata are
  honoured: a task whose condition is false is skipped, and so are its dependants.
- **Caching**: a task whose cache key (its component's interface, input artifact names,
  parameter values, command, arguments and image) matches a succeeded execution of an
  earlier run reuses that execution's outputs instead of running.
- **Resolver tasks** are refused, as Kubeflow Pipelines' open-source backend refuses
  them.
- **The Vertex AI training job** the Trainer submits runs here too: the Trainer's
  process gets a stand-in for Vertex AI's ``JobServiceClient`` (see
  ``tests/vertex_local/``) that starts every replica of every worker pool as a local
  process with a Vertex-style ``TF_CONFIG`` and checks that it runs the pipeline's image.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# Where the Dockerfile puts the project inside the image.
IMAGE_PROJECT_DIR = "/pipeline"
PROJECT_NUMBER = "123456789012"
BOUNDARY_DIR = Path(__file__).resolve().parent / "vertex_local"
# Read by tests/vertex_local/sitecustomize.py in the Trainer's process.
LOCAL_TRAINING_ENV = "MARCO_LOCAL_VERTEX_TRAINING"
TASK_IMAGE_ENV = "MARCO_LOCAL_VERTEX_IMAGE"
TASK_LOG_ENV = "MARCO_LOCAL_VERTEX_LOG_DIR"
VERTEX_TRAINER = "tfx.extensions.google_cloud_ai_platform.trainer.executor.GenericExecutor"

_PLACEHOLDER = re.compile(r"\{\{\$[^}]*\}\}")
_CONDITION = re.compile(
    r"^inputs\.artifacts\['(?P<key>[^']+)'\]\.artifacts\[0\]\.metadata\['(?P<field>[^']+)'\]"
    r"\s*(?P<op>==|!=|>=|<=|>|<)\s*(?P<value>.+)$"
)


class TaskFailed(RuntimeError):
    """A task of the pipeline failed; the message names it and ends with its log."""


class UnsupportedSpec(RuntimeError):
    """The spec asks for something the emulated backend does not run."""


@dataclasses.dataclass
class TaskResult:
    name: str
    state: str  # "executed", "cached" or "skipped"
    outputs: dict[str, list[dict]]
    task_dir: Path | None = None


@dataclasses.dataclass
class RunResult:
    job_name: str
    tasks: dict[str, TaskResult]

    def state(self, task: str) -> str:
        return self.tasks[task].state

    def executed(self) -> list[str]:
        return sorted(n for n, t in self.tasks.items() if t.state == "executed")

    def cached(self) -> list[str]:
        return sorted(n for n, t in self.tasks.items() if t.state == "cached")

    def artifact(self, task: str, key: str) -> dict:
        (artifact,) = self.tasks[task].outputs[key]
        return artifact


def _topological(tasks: Mapping[str, dict]) -> list[str]:
    def upstream(spec: dict) -> set[str]:
        names = set(spec.get("dependentTasks", []))
        for value in spec.get("inputs", {}).get("artifacts", {}).values():
            if "taskOutputArtifact" in value:
                names.add(value["taskOutputArtifact"]["producerTask"])
        for value in spec.get("inputs", {}).get("parameters", {}).values():
            if "taskOutputParameter" in value:
                names.add(value["taskOutputParameter"]["producerTask"])
        return names

    order: list[str] = []
    pending = {name: upstream(spec) for name, spec in tasks.items()}
    while pending:
        ready = sorted(n for n, deps in pending.items() if not deps - set(order))
        if not ready:
            raise UnsupportedSpec(f"the DAG has a cycle among {sorted(pending)}")
        order.extend(ready)
        for name in ready:
            del pending[name]
    return order


def _typed(value: Any, parameter_type: str | None) -> Any:
    if parameter_type == "NUMBER_INTEGER":
        return int(value)
    if parameter_type == "NUMBER_DOUBLE":
        return float(value)
    if parameter_type == "STRING":
        return value if isinstance(value, str) else json.dumps(value)
    return value


def _condition_holds(condition: str, artifacts: Mapping[str, list[dict]]) -> bool:
    """Evaluates the artifact-metadata conditions TFX compiles (``a && b`` of comparisons)."""
    result = True
    for clause in condition.split("&&"):
        match = _CONDITION.match(clause.strip().strip("()").strip())
        if not match:
            raise UnsupportedSpec(f"cannot evaluate trigger condition {clause!r}")
        found = artifacts.get(match["key"]) or [{}]
        actual = found[0].get("metadata", {}).get(match["field"])
        expected = json.loads(match["value"].strip().replace("'", '"'))
        if actual is None:
            return False
        ops = {
            "==": actual == expected, "!=": actual != expected, ">=": actual >= expected,
            "<=": actual <= expected, ">": actual > expected, "<": actual < expected,
        }
        result = result and ops[match["op"]]
    return result


class LocalVertex:
    """Runs compiled jobs under one local pipeline root, keeping a cache across runs."""

    def __init__(self, work_dir: Path, *, python: str = sys.executable,
                 project: str = "my-gcp-project", region: str = "europe-west4") -> None:
        self.work_dir = Path(work_dir)
        self.python = python
        self.project = project
        self.region = region
        self._cache_file = self.work_dir / "cache.json"
        self.work_dir.mkdir(parents=True, exist_ok=True)

    # -- the cache of succeeded executions, across runs -------------------------------
    def _cache(self) -> dict:
        if self._cache_file.is_file():
            return json.loads(self._cache_file.read_text())
        return {}

    def _remember(self, key: str, outputs: dict) -> None:
        cache = self._cache()
        cache[key] = outputs
        self._cache_file.write_text(json.dumps(cache, indent=1, sort_keys=True))

    # -- one run ----------------------------------------------------------------------
    def run_job(self, job: Mapping[str, Any], parameter_values: Mapping[str, Any] | None = None,
                *, job_name: str | None = None) -> RunResult:
        """Runs a Vertex AI pipeline job (``pipelineSpec`` plus ``runtimeConfig``)."""
        runtime = job.get("runtimeConfig", {})
        values = {**runtime.get("parameterValues", {}), **(parameter_values or {})}
        return self.run_spec(
            job["pipelineSpec"], runtime["gcsOutputDirectory"], values, job_name=job_name
        )

    def run_package(self, spec: Mapping[str, Any],
                    parameter_values: Mapping[str, Any] | None = None,
                    *, job_name: str | None = None) -> RunResult:
        """Runs a Kubeflow Pipelines package: a bare spec with its own root and defaults."""
        root = spec.get("defaultPipelineRoot")
        if not root:
            raise UnsupportedSpec(
                "the package has no defaultPipelineRoot: Kubeflow Pipelines would use the "
                "cluster's default bucket"
            )
        defaults = {
            name: definition["defaultValue"]
            for name, definition in spec["root"].get("inputDefinitions", {})
            .get("parameters", {}).items()
            if "defaultValue" in definition
        }
        return self.run_spec(spec, root, {**defaults, **(parameter_values or {})},
                             job_name=job_name)

    def run_spec(self, spec: Mapping[str, Any], pipeline_root: str,
                 parameter_values: Mapping[str, Any], *, job_name: str | None = None
                 ) -> RunResult:
        job_name = job_name or f"{spec['pipelineInfo']['name']}-{uuid.uuid4().hex[:12]}"
        root_parameters = spec["root"].get("inputDefinitions", {}).get("parameters", {})
        missing = sorted(set(root_parameters) - set(parameter_values))
        if missing:
            raise UnsupportedSpec(f"no value for pipeline parameter(s) {missing}")
        tasks = spec["root"]["dag"]["tasks"]
        results: dict[str, TaskResult] = {}
        job_dir = Path(self._local(pipeline_root)) / PROJECT_NUMBER / job_name
        for name in _topological(tasks):
            results[name] = self._run_task(
                spec, name, tasks[name], results, parameter_values, root_parameters, job_dir
            )
        return RunResult(job_name=job_name, tasks=results)

    def _local(self, path: str) -> str:
        if path.startswith("gs://"):
            raise UnsupportedSpec(f"{path}: a local run needs a local pipeline root")
        return path

    def _container_path(self, value: Any) -> Any:
        """Paths inside the image's project folder, as this checkout's."""
        if isinstance(value, str) and value.startswith(IMAGE_PROJECT_DIR + "/"):
            return str(REPO) + value[len(IMAGE_PROJECT_DIR):]
        return value

    def _run_task(self, spec, name, task, results, values, root_parameters, job_dir
                  ) -> TaskResult:
        component = spec["components"][task["componentRef"]["name"]]
        executor = spec["deploymentSpec"]["executors"][component["executorLabel"]]
        if "resolver" in executor or "importer" in executor:
            kind = "resolver" if "resolver" in executor else "importer"
            raise UnsupportedSpec(
                f"{name}: {kind} tasks are not implemented by Kubeflow Pipelines' "
                "open-source backend"
            )
        inputs = task.get("inputs", {})
        upstream = set(task.get("dependentTasks", []))
        artifacts: dict[str, list[dict]] = {}
        for key, source in inputs.get("artifacts", {}).items():
            producer = source["taskOutputArtifact"]["producerTask"]
            upstream.add(producer)
            if results[producer].state == "skipped":
                return TaskResult(name, "skipped", {})
            artifacts[key] = results[producer].outputs[source["taskOutputArtifact"][
                "outputArtifactKey"]]
        if any(results[u].state == "skipped" for u in upstream):
            return TaskResult(name, "skipped", {})
        condition = task.get("triggerPolicy", {}).get("condition")
        if condition and not _condition_holds(condition, artifacts):
            return TaskResult(name, "skipped", {})

        definitions = component.get("inputDefinitions", {}).get("parameters", {})
        parameters: dict[str, Any] = {}
        for key, source in inputs.get("parameters", {}).items():
            if "runtimeValue" in source:
                value = source["runtimeValue"]["constant"]
            elif "componentInputParameter" in source:
                value = values[source["componentInputParameter"]]
            else:
                raise UnsupportedSpec(f"{name}: parameter {key} from {sorted(source)}")
            kind = definitions.get(key, {}).get("parameterType")
            parameters[key] = self._container_path(_typed(value, kind))

        container = executor["container"]
        key = hashlib.sha256(json.dumps({
            "component": {k: component.get(k) for k in ("inputDefinitions",
                                                        "outputDefinitions")},
            "artifacts": {k: [a["name"] for a in v] for k, v in artifacts.items()},
            "parameters": parameters,
            "image": container["image"],
            "command": container.get("command", []),
            "args": container.get("args", []),
        }, sort_keys=True).encode()).hexdigest()
        cacheable = task.get("cachingOptions", {}).get("enableCache", False)
        if cacheable and key in self._cache():
            return TaskResult(name, "cached", self._cache()[key])

        task_dir = job_dir / f"{name}_{uuid.uuid4().int % 10**19}"
        outputs = {
            output_key: [{
                "name": (f"projects/{self.project}/locations/{self.region}/metadataStores/"
                         f"default/artifacts/{uuid.uuid4().int % 10**19}"),
                "type": definition["artifactType"],
                "uri": str(task_dir / output_key),
                "metadata": {},
            }]
            for output_key, definition in component.get("outputDefinitions", {})
            .get("artifacts", {}).items()
        }
        executor_input = {
            "inputs": {"parameterValues": parameters, "artifacts": {
                k: {"artifacts": v} for k, v in artifacts.items()}},
            "outputs": {"artifacts": {k: {"artifacts": v} for k, v in outputs.items()},
                        "outputFile": str(task_dir / "executor_output.json")},
        }
        task_dir.mkdir(parents=True)
        command = self._command_line(name, container, executor_input)
        env = {**os.environ, **{e["name"]: e["value"] for e in container.get("env", [])},
               "TF_USE_LEGACY_KERAS": "1", TASK_IMAGE_ENV: container["image"],
               TASK_LOG_ENV: str(task_dir),
               LOCAL_TRAINING_ENV: "1" if VERTEX_TRAINER in container.get("args", []) else "0",
               "PYTHONPATH": os.pathsep.join(
                   [str(BOUNDARY_DIR), str(REPO), os.environ.get("PYTHONPATH", "")])}
        log = task_dir / "log.txt"
        with log.open("wb") as out:
            code = subprocess.call(command, cwd=REPO, env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
        if code != 0:
            tail = log.read_text(errors="replace")[-4000:]
            raise TaskFailed(f"task {name} failed (exit {code}); log {log}:\n{tail}")
        produced = json.loads((task_dir / "executor_output.json").read_text())
        # The launcher keeps each output's name and type, and takes the executor's
        # metadata (and URI, if it moved the artifact).
        for output_key, listing in produced.get("artifacts", {}).items():
            for declared, reported in zip(outputs[output_key], listing["artifacts"], strict=False):
                declared["metadata"] = reported.get("metadata", {})
                declared["uri"] = reported.get("uri") or declared["uri"]
        self._remember(key, outputs)
        return TaskResult(name, "executed", outputs, task_dir)

    def _command_line(self, name: str, container: dict, executor_input: dict) -> list[str]:
        serialized = json.dumps(executor_input)
        command = list(container.get("command", []))
        if not command:
            raise UnsupportedSpec(f"{name}: the container has no command")
        if command[0] == "python":
            command[0] = self.python
        line = []
        for arg in command + list(container.get("args", [])):
            if arg == "{{$}}":
                line.append(serialized)
                continue
            if _PLACEHOLDER.search(arg):
                raise UnsupportedSpec(f"{name}: placeholder in {arg!r}")
            line.append(self._container_path(arg))
        return line
