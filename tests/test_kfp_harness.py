"""The KFP harness itself (tests/kfp_harness.py) on small hand-written specs: order,
parameters and artifacts reach each container, a failing task fails the run, cache
keys follow inputs, trigger conditions skip, resolver tasks are refused.

The compiled MARCO spec is executed with it in test_compiled_spec.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.kfp_harness import LocalVertex, TaskFailed, UnsupportedSpec

# A container that records what it got and writes one output artifact with metadata.
_PROGRAM = """
import json, os, sys
ei = json.loads(sys.argv[1])
out = ei["outputs"]["artifacts"]["out"]["artifacts"][0]
os.makedirs(out["uri"], exist_ok=True)
params = ei["inputs"].get("parameterValues", {})
inputs = {k: [a["uri"] for a in v["artifacts"]]
          for k, v in ei["inputs"].get("artifacts", {}).items()}
with open(os.path.join(out["uri"], "seen.json"), "w") as f:
    json.dump({"params": params, "inputs": inputs}, f)
if params.get("fail"):
    sys.exit(3)
out["metadata"] = {"blessed": int(params.get("bless", 1))}
os.makedirs(os.path.dirname(ei["outputs"]["outputFile"]), exist_ok=True)
with open(ei["outputs"]["outputFile"], "w") as f:
    json.dump({"artifacts": {"out": {"artifacts": [out]}}}, f)
"""
_TYPE = {"instanceSchema": "title: tfx.Model\ntype: object\n"}


def _component(with_input: bool) -> dict:
    component = {
        "executorLabel": "run",
        "inputDefinitions": {"parameters": {"n": {"parameterType": "NUMBER_INTEGER"},
                                            "fail": {"parameterType": "NUMBER_INTEGER"},
                                            "bless": {"parameterType": "NUMBER_INTEGER"}}},
        "outputDefinitions": {"artifacts": {"out": {"artifactType": _TYPE}}},
    }
    if with_input:
        component["inputDefinitions"]["artifacts"] = {"in": {"artifactType": _TYPE}}
    return component


def _spec(*, fail_second: bool = False, bless_first: int = 1, condition: bool = False,
          resolver: bool = False) -> dict:
    second: dict = {
        "componentRef": {"name": "second"},
        "dependentTasks": ["first"],
        "cachingOptions": {"enableCache": True},
        "inputs": {
            "artifacts": {"in": {"taskOutputArtifact": {"producerTask": "first",
                                                        "outputArtifactKey": "out"}}},
            "parameters": {"n": {"componentInputParameter": "n"},
                           "fail": {"runtimeValue": {"constant": float(fail_second)}}},
        },
    }
    if condition:
        second["triggerPolicy"] = {
            "condition": "inputs.artifacts['in'].artifacts[0].metadata['blessed'] == 1"
        }
    spec = {
        "pipelineInfo": {"name": "toy"},
        "root": {
            "inputDefinitions": {"parameters": {"n": {"parameterType": "NUMBER_INTEGER"}}},
            "dag": {"tasks": {
                # Listed out of order: the harness orders them.
                "second": second,
                "first": {
                    "componentRef": {"name": "first"},
                    "cachingOptions": {"enableCache": True},
                    "inputs": {"parameters": {
                        "n": {"componentInputParameter": "n"},
                        "bless": {"runtimeValue": {"constant": float(bless_first)}},
                    }},
                },
            }},
        },
        "components": {"first": _component(False), "second": _component(True)},
        "deploymentSpec": {"executors": {"run": {"container": {
            "image": "example.org/toy@sha256:" + "0" * 64,
            "command": ["python", "-c", _PROGRAM],
            "args": ["{{$}}"],
        }}}},
    }
    if resolver:
        spec["components"]["first"]["executorLabel"] = "resolve"
        spec["deploymentSpec"]["executors"]["resolve"] = {"resolver": {}}
    return spec


def _seen(result, task: str) -> dict:
    uri = result.artifact(task, "out")["uri"]
    return json.loads((Path(uri) / "seen.json").read_text())


def test_tasks_get_typed_parameters_and_upstream_artifacts(tmp_path):
    result = LocalVertex(tmp_path / "h").run_spec(_spec(), str(tmp_path / "root"), {"n": 3.0})
    assert result.executed() == ["first", "second"]
    first, second = _seen(result, "first"), _seen(result, "second")
    assert first["params"] == {"n": 3, "bless": 1}
    assert second["inputs"] == {"in": [result.artifact("first", "out")["uri"]]}
    # Vertex AI's layout: <root>/<project number>/<job>/<task>_<id>/<output key>.
    uri = Path(result.artifact("first", "out")["uri"])
    assert uri.name == "out" and uri.parent.name.startswith("first_")
    assert uri.parents[2] == tmp_path / "root" / "123456789012"
    assert result.artifact("first", "out")["metadata"] == {"blessed": 1}


def test_a_failing_task_fails_the_run_and_names_it(tmp_path):
    with pytest.raises(TaskFailed, match="task second failed \\(exit 3\\)"):
        LocalVertex(tmp_path / "h").run_spec(
            _spec(fail_second=True), str(tmp_path / "root"), {"n": 1})


def test_same_inputs_are_cached_and_changed_parameters_are_not(tmp_path):
    harness = LocalVertex(tmp_path / "h")
    root = str(tmp_path / "root")
    first = harness.run_spec(_spec(), root, {"n": 1})
    again = harness.run_spec(_spec(), root, {"n": 1})
    assert again.cached() == ["first", "second"]
    assert again.artifact("second", "out") == first.artifact("second", "out")
    changed = harness.run_spec(_spec(), root, {"n": 2})
    assert changed.executed() == ["first", "second"]


def test_a_failed_task_is_not_cached(tmp_path):
    harness = LocalVertex(tmp_path / "h")
    with pytest.raises(TaskFailed):
        harness.run_spec(_spec(fail_second=True), str(tmp_path / "root"), {"n": 1})
    with pytest.raises(TaskFailed):
        harness.run_spec(_spec(fail_second=True), str(tmp_path / "root"), {"n": 1})


def test_trigger_condition_on_artifact_metadata_skips_the_task(tmp_path):
    harness = LocalVertex(tmp_path / "h")
    held = harness.run_spec(_spec(condition=True, bless_first=0), str(tmp_path / "r"), {"n": 1})
    assert held.state("second") == "skipped"
    passed = harness.run_spec(_spec(condition=True, bless_first=1), str(tmp_path / "r"),
                              {"n": 1})
    assert passed.state("second") == "executed"


def test_resolver_tasks_are_refused_as_kubeflow_pipelines_refuses_them(tmp_path):
    with pytest.raises(UnsupportedSpec, match="resolver tasks are not implemented"):
        LocalVertex(tmp_path / "h").run_spec(_spec(resolver=True), str(tmp_path / "r"),
                                             {"n": 1})


def test_a_package_without_pipeline_root_is_refused(tmp_path):
    with pytest.raises(UnsupportedSpec, match="defaultPipelineRoot"):
        LocalVertex(tmp_path / "h").run_package(_spec(), {"n": 1})
    spec = {**_spec(), "defaultPipelineRoot": str(tmp_path / "root")}
    spec["root"]["inputDefinitions"]["parameters"]["n"]["defaultValue"] = 5
    result = LocalVertex(tmp_path / "h").run_package(spec)
    assert _seen(result, "first")["params"]["n"] == 5
