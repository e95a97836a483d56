"""Kubeflow V2 / Vertex AI: the compiled spec of the same graph, settings checks, the image.

One compile (through ``marco compile``, with flags over a settings file) is shared by
the spec tests; they read the JSON the command wrote, as Vertex AI would.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from kubeflow.runner import (
    ACCELERATOR_MACHINES,
    CONTAINER_PROJECT_DIR,
    CONTAINER_SCHEMA_FILE,
    DATA_DIR_PARAMETER,
    MARCO_SHARDS_PARAMETER,
    TRAIN_ARGS_PARAMETER,
    SettingsError,
    parse_settings,
)
from pipeline.cli import main as marco

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = yaml.safe_load((REPO / "kubeflow" / "pipeline.example.yaml").read_text())
IMAGE = EXAMPLE["image"]
ROOT = EXAMPLE["pipeline_root"]
# The shared compile: the example file with one worker, then flags for the rest.
FILE_SETTINGS = {
    **EXAMPLE,
    "training_workers": 1,
    "marco_shards": "gs://my-bucket/marco/shards/train-*",
}
FLAGS = [
    "--training-workers", "4",
    "--accelerator-type", "NVIDIA_TESLA_V100",
    "--accelerator-count", "2",
    "--endpoint-name", "marco-classifier",
    "--service-account", "marco@my-gcp-project.iam.gserviceaccount.com",
]
REPLICAS = 4 * 2
BEAM_COMPONENTS = ("ImageExampleGen", "StatisticsGen", "Transform", "Evaluator")
RESOLVER = "latest_blessed_model_resolver"
VERTEX_TRAINER = "tfx.extensions.google_cloud_ai_platform.trainer.executor.GenericExecutor"
VERTEX_PUSHER = "tfx.extensions.google_cloud_ai_platform.pusher.executor.Executor"


def _write_settings(folder: Path, data: dict) -> Path:
    path = folder / "settings.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict:
    """``marco compile`` once: the Vertex AI job and the Kubeflow Pipelines package."""
    folder = tmp_path_factory.mktemp("compile")
    settings = _write_settings(folder, FILE_SETTINGS)
    result = CliRunner().invoke(
        marco,
        ["compile", "--config", str(settings), "--out", str(folder / "job.json"),
         "--kfp-package", str(folder / "package.yaml"), *FLAGS],
    )
    assert result.exit_code == 0, result.output
    return {
        "job": json.loads((folder / "job.json").read_text()),
        "package": yaml.safe_load((folder / "package.yaml").read_text()),
        "output": result.output,
    }


def _tasks(job: dict) -> dict:
    return job["pipelineSpec"]["root"]["dag"]["tasks"]


def _executor(job: dict, task: str) -> dict:
    spec = job["pipelineSpec"]
    component = spec["components"][_tasks(job)[task]["componentRef"]["name"]]
    return spec["deploymentSpec"]["executors"][component["executorLabel"]]


def _constant(job: dict, task: str, name: str):
    return _tasks(job)[task]["inputs"]["parameters"][name]["runtimeValue"]["constant"]


def _producer(job: dict, task: str, artifact: str) -> str:
    return _tasks(job)[task]["inputs"]["artifacts"][artifact]["taskOutputArtifact"][
        "producerTask"
    ]


def test_every_component_is_there_with_its_dependencies(compiled):
    job = compiled["job"]
    tasks = _tasks(job)
    assert set(tasks) == {
        "ImageExampleGen", "ImportSchemaGen", "StatisticsGen", "ExampleValidator",
        "AnomalyGate", "Transform", "Trainer", f"{RESOLVER}-model-blessing-resolver",
        f"{RESOLVER}-model-resolver", "Evaluator", "Pusher", "EndpointPusher",
    }
    # Nothing downstream of validation runs on data with anomalies.
    assert "AnomalyGate" in tasks["Transform"]["dependentTasks"]
    assert _producer(job, "AnomalyGate", "anomalies") == "ExampleValidator"
    assert _producer(job, "ExampleValidator", "statistics") == "StatisticsGen"
    assert _producer(job, "Transform", "examples") == "ImageExampleGen"
    assert _producer(job, "Trainer", "examples") == "Transform"
    assert _producer(job, "Trainer", "transform_graph") == "Transform"
    # The Evaluator compares the new model with the last blessed one.
    assert _producer(job, "Evaluator", "model") == "Trainer"
    assert _producer(job, "Evaluator", "baseline_model") == f"{RESOLVER}-model-resolver"
    assert _producer(job, f"{RESOLVER}-model-resolver", "input") == (
        f"{RESOLVER}-model-blessing-resolver"
    )
    # Both pushers push the trained model, and only with the Evaluator's blessing.
    for pusher in ("Pusher", "EndpointPusher"):
        assert _producer(job, pusher, "model") == "Trainer"
        assert _producer(job, pusher, "model_blessing") == "Evaluator"
    assert job["pipelineSpec"]["pipelineInfo"]["name"] == "marco"
    assert job["pipelineSpec"]["schemaVersion"] == "2.1.0"
    assert job["runtimeConfig"]["gcsOutputDirectory"] == ROOT


def test_every_container_runs_the_configured_image(compiled):
    executors = compiled["job"]["pipelineSpec"]["deploymentSpec"]["executors"]
    containers = {name: e["container"] for name, e in executors.items() if "container" in e}
    # Everything but the two resolver queries runs in a container.
    assert len(containers) == len(executors) - 2 == 10
    assert {c["image"] for c in containers.values()} == {IMAGE}
    # Files the containers read are paths inside the image, not on this machine.
    assert _constant(compiled["job"], "ImportSchemaGen", "schema_file") == CONTAINER_SCHEMA_FILE


def test_beam_components_run_on_dataflow(compiled):
    expected = {
        "--runner=DataflowRunner",
        "--project=my-gcp-project",
        "--region=europe-west4",
        f"--temp_location={ROOT}/tmp",
        "--machine_type=n1-standard-4",
        "--max_num_workers=10",
        f"--sdk_container_image={IMAGE}",
        "--experiments=use_runner_v2",
        "--service_account_email=marco@my-gcp-project.iam.gserviceaccount.com",
    }
    for task in BEAM_COMPONENTS:
        args = _executor(compiled["job"], task)["container"]["args"]
        assert expected <= set(args), task


def test_trainer_is_a_vertex_job_on_the_configured_worker_pool(compiled):
    job = compiled["job"]
    assert _executor(job, "Trainer")["container"]["args"][:2] == [
        "--executor_class_path", VERTEX_TRAINER]
    config = json.loads(_constant(job, "Trainer", "custom_config"))
    assert config["ai_platform_enable_vertex"] is True
    assert config["ai_platform_vertex_region"] == "europe-west4"
    training = config["ai_platform_training_args"]
    assert training["project"] == "my-gcp-project"
    spec = training["job_spec"]
    machine = {
        "machine_type": "n1-standard-16",
        "accelerator_type": "NVIDIA_TESLA_V100",
        "accelerator_count": 2,
    }
    # One chief, then the other three workers: Vertex AI names them in TF_CONFIG.
    assert spec["worker_pool_specs"] == [
        {"machine_spec": machine, "replica_count": 1, "container_spec": {"image_uri": IMAGE}},
        {"machine_spec": machine, "replica_count": 3, "container_spec": {"image_uri": IMAGE}},
    ]
    assert spec["service_account"] == "marco@my-gcp-project.iam.gserviceaccount.com"
    assert spec["scheduling"] == {"restart_job_on_worker_restart": True}
    # The module code and its settings travel with the job.
    assert _constant(job, "Trainer", "run_fn") == "components.trainer.run_fn"
    assert config["backup_dir"] == f"{ROOT}/trainer-backup"
    assert config["marco_training"]["model"] == "paper"


def test_paper_preset_scales_batch_steps_and_learning_rate_with_replicas(compiled):
    from components.trainer.config import TrainingConfig
    from components.trainer.train import learning_rate_schedule

    job = compiled["job"]
    training = TrainingConfig.from_custom_config(
        json.loads(_constant(job, "Trainer", "custom_config"))
    )
    assert training.batch_size == 64 and training.scale_learning_rate
    # 8 replicas in sync: a global batch of 512, so 1.7M / 8 steps see the paper's
    # 109M images, at 8 x 0.045, decayed every 2 epochs of 512-image steps.
    steps = json.loads(job["runtimeConfig"]["parameterValues"][TRAIN_ARGS_PARAMETER])
    assert steps == {"num_steps": 1_700_000 // REPLICAS}
    schedule = learning_rate_schedule(training, steps_per_epoch=1000, replicas=REPLICAS)
    assert schedule.initial_learning_rate == pytest.approx(0.045 * REPLICAS)
    assert schedule.decay_steps == 2000
    assert f"{1_700_000 // REPLICAS} steps" in compiled["output"]


def test_blessed_models_go_to_the_serving_folder_and_the_endpoint(compiled):
    job = compiled["job"]
    destination = json.loads(_constant(job, "Pusher", "push_destination"))
    assert destination == {"filesystem": {"base_directory": f"{ROOT}/serving"}}
    assert _executor(job, "EndpointPusher")["container"]["args"][:2] == [
        "--executor_class_path", VERTEX_PUSHER]
    config = json.loads(_constant(job, "EndpointPusher", "custom_config"))
    assert config["ai_platform_enable_vertex"] is True
    assert config["ai_platform_vertex_region"] == "europe-west4"
    assert config["ai_platform_serving_args"] == {
        "project_id": "my-gcp-project",
        "endpoint_name": "marco-classifier",
        "machine_type": "n1-standard-4",
    }
    assert config["ai_platform_vertex_container_image_uri"] == (
        "europe-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest"
    )


def test_runtime_parameters_have_defaults_and_reach_their_components(compiled):
    job = compiled["job"]
    declared = job["pipelineSpec"]["root"]["inputDefinitions"]["parameters"]
    assert declared == {
        name: {"parameterType": "STRING"}
        for name in (DATA_DIR_PARAMETER, MARCO_SHARDS_PARAMETER, TRAIN_ARGS_PARAMETER)
    }
    values = job["runtimeConfig"]["parameterValues"]
    assert values[DATA_DIR_PARAMETER] == EXAMPLE["data_dir"]
    assert values[MARCO_SHARDS_PARAMETER] == FILE_SETTINGS["marco_shards"]
    wiring = {
        ("ImageExampleGen", "data_dir"): DATA_DIR_PARAMETER,
        ("ImageExampleGen", "marco_shards"): MARCO_SHARDS_PARAMETER,
        ("Trainer", "train_args"): TRAIN_ARGS_PARAMETER,
    }
    for (task, name), parameter in wiring.items():
        bound = _tasks(job)[task]["inputs"]["parameters"][name]
        assert bound == {"componentInputParameter": parameter}, (task, name)
    # The accuracy floor and the rest of the blessing rule are the preset's.
    eval_config = json.loads(_constant(job, "Evaluator", "eval_config"))
    assert "metrics_specs" in eval_config


def test_kubeflow_package_is_the_bare_spec_with_parameter_defaults(compiled):
    package, job = compiled["package"], compiled["job"]
    assert package["schemaVersion"] == "2.1.0"
    assert package["root"]["dag"] == job["pipelineSpec"]["root"]["dag"]
    parameters = package["root"]["inputDefinitions"]["parameters"]
    assert {n: p["defaultValue"] for n, p in parameters.items()} == (
        job["runtimeConfig"]["parameterValues"]
    )


def test_cpu_only_single_machine_without_endpoint():
    """Unset accelerator and endpoint: one CPU replica, the paper's 1.7M steps, one pusher."""
    from kubeflow.runner import build, runtime_parameters

    settings = parse_settings({**EXAMPLE, "accelerator_type": None, "training_workers": 1})
    assert settings.replicas == 1
    assert json.loads(runtime_parameters(settings)[TRAIN_ARGS_PARAMETER]) == {
        "num_steps": 1_700_000}
    spec = settings.training_job()["job_spec"]
    assert spec == {"worker_pool_specs": [{
        "machine_spec": {"machine_type": "n1-standard-16"},
        "replica_count": 1,
        "container_spec": {"image_uri": IMAGE},
    }]}
    ids = {component.id for component in build(settings).components}
    assert "Pusher" in ids and "EndpointPusher" not in ids


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"project": None}, "project"),
        ({"project": "My Project"}, "project"),
        ({"region": "europe west"}, "region"),
        ({"pipeline_root": "/local/root"}, "pipeline_root"),
        ({"pipeline_root": "gs://"}, "pipeline_root"),
        ({"image": None}, "image"),
        ({"data_dir": None}, "data_dir"),
        ({"data_dir": "s3://bucket/data"}, "data_dir"),
        ({"serving_dir": "/srv/models"}, "serving_dir"),
        ({"preset": "huge"}, "preset"),
        ({"dataflow_max_workers": 0}, "dataflow_max_workers"),
        ({"accelerator_type": "NVIDIA_TESLA_K9"}, "accelerator_type"),
        ({"accelerator_type": "TPU_V3"}, "accelerator_type"),
        ({"accelerator_type": "NVIDIA_TESLA_K80"}, "accelerator_type"),
        ({"accelerator_type": "NVIDIA_L4"}, "training_machine_type"),
        ({"accelerator_count": 3}, "accelerator_count"),
        ({"training_machine_type": "a2-highgpu-4g", "accelerator_type": "NVIDIA_TESLA_A100",
          "accelerator_count": 2}, "accelerator_count"),
        ({"training_workers": 0}, "training_workers"),
        ({"training_workers": -2}, "training_workers"),
        ({"training_workers": "two"}, "training_workers"),
        ({"training_workers": True}, "training_workers"),
        ({"service_account": "marco"}, "service_account"),
        ({"enable_cache": "yes"}, "enable_cache"),
        ({"acclerator": "x"}, "acclerator"),
    ],
)
def test_bad_settings_name_the_field(change, field):
    data = {k: v for k, v in {**EXAMPLE, **change}.items() if v is not None}
    with pytest.raises(SettingsError, match=f"^settings: {field}: "):
        parse_settings(data)


def test_good_accelerator_machines_pass():
    for accelerator, machine, count in [
        ("NVIDIA_TESLA_T4", "n1-standard-16", 4),
        ("NVIDIA_L4", "g2-standard-24", 2),
        ("NVIDIA_TESLA_A100", "a2-highgpu-4g", 4),
        ("NVIDIA_H100_80GB", "a3-highgpu-8g", 8),
    ]:
        settings = parse_settings({**EXAMPLE, "accelerator_type": accelerator,
                                   "training_machine_type": machine,
                                   "accelerator_count": count})
        assert settings.replicas == EXAMPLE["training_workers"] * count


def test_accelerator_names_are_vertex_ai_gpus():
    from google.cloud.aiplatform_v1.types.accelerator_type import AcceleratorType

    vertex = {a.name for a in AcceleratorType}
    assert set(ACCELERATOR_MACHINES) <= vertex
    assert all(name.startswith("NVIDIA_") for name in ACCELERATOR_MACHINES)


def test_compile_flags_are_checked_like_the_file(tmp_path):
    settings = _write_settings(tmp_path, EXAMPLE)
    out = tmp_path / "job.json"
    for flags, field in [
        (["--accelerator-type", "NVIDIA_TESLA_K9"], "accelerator_type"),
        (["--training-workers", "0"], "training_workers"),
        (["--pipeline-root", "/tmp/root"], "pipeline_root"),
    ]:
        result = CliRunner().invoke(
            marco, ["compile", "--config", str(settings), "--out", str(out), *flags]
        )
        assert result.exit_code == 1, result.output
        assert f"with command-line overrides: {field}: " in result.output
    result = CliRunner().invoke(marco, ["compile", "--out", str(out), "--project", "my-project"])
    assert result.exit_code == 1 and "flags: region: missing required setting" in result.output
    assert not out.exists()


def test_bad_settings_file_is_named(tmp_path):
    from kubeflow.runner import load_settings

    path = tmp_path / "settings.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(SettingsError, match="settings.yaml: must be a mapping"):
        load_settings(path)
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings(tmp_path / "absent.yaml")


@pytest.mark.slow
def test_tfx_cli_compiles_the_runner(tmp_path):
    """`tfx pipeline compile --engine vertex` runs kubeflow/runner.py as the TFX CLI does."""
    settings = _write_settings(tmp_path, EXAMPLE)
    bin_dir = Path(sys.executable).parent
    # As in an activated environment: the CLI checks for kfp with the `pip` on PATH.
    env = {**os.environ, "MARCO_KUBEFLOW_CONFIG": str(settings),
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(
        [str(bin_dir / "tfx"), "pipeline", "compile", "--engine", "vertex",
         "--pipeline_path", str(REPO / "kubeflow" / "runner.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "Pipeline marco compiled successfully" in result.stdout
    job = json.loads((tmp_path / "marco_pipeline.json").read_text())
    assert {e["container"]["image"] for e in
            job["pipelineSpec"]["deploymentSpec"]["executors"].values()
            if "container" in e} == {IMAGE}
    assert json.loads(job["runtimeConfig"]["parameterValues"][TRAIN_ARGS_PARAMETER]) == {
        "num_steps": 1_700_000 // (EXAMPLE["training_workers"] * EXAMPLE["accelerator_count"])
    }


# --- The container -------------------------------------------------------------------


def _dockerfile() -> str:
    return (REPO / "Dockerfile").read_text()


def _locked_versions() -> dict[str, str]:
    """name -> version of every package in uv.lock."""
    text = (REPO / "uv.lock").read_text()
    return dict(re.findall(r'\[\[package\]\]\nname = "([^"]+)"\nversion = "([^"]+)"', text))


def _uv() -> str:
    for candidate in (REPO / ".cache" / "bootstrap" / "bin" / "uv", shutil.which("uv")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.skip("uv not found: run ./bootstrap.sh, which installs the pinned uv")


def test_dockerfile_installs_exactly_the_lock():
    dockerfile = _dockerfile()
    locked = _locked_versions()
    # Base image: the TFX release the lock pins.
    assert re.search(r"^FROM gcr\.io/tfx-oss-public/tfx:(\S+)$", dockerfile, re.M).group(1) == (
        locked["tfx"]
    )
    # uv: the release bootstrap.sh pins.
    bootstrap_uv = re.search(r'^UV_VERSION="([^"]+)"', (REPO / "bootstrap.sh").read_text(),
                             re.M).group(1)
    assert f"ghcr.io/astral-sh/uv:{bootstrap_uv} " in dockerfile
    assert re.search(r"^COPY pyproject\.toml uv\.lock \./$", dockerfile, re.M)
    # Every install goes through uv without resolving; the only requirements are the
    # exported lock and the project itself.
    commands = " ".join(dockerfile.replace("\\\n", " ").split())
    installs = re.findall(r"(?:uv )?pip install [^&]*", commands)
    assert len(installs) == 2, installs
    assert all("--no-deps" in i and i.startswith("uv pip install") for i in installs)
    assert "--requirement /tmp/requirements.txt" in installs[0]
    assert installs[1].rstrip().endswith("--editable .")
    export = re.search(r"uv export ([^&]*?)--output-file /tmp/requirements\.txt", commands)
    assert export and "--frozen" in export.group(1).split()

    # The export, run here the same way, pins every package at its locked version.
    result = subprocess.run(
        [_uv(), "export", *export.group(1).split(), "--quiet"],
        cwd=REPO, capture_output=True, text=True, check=True, timeout=120,
    )
    pins = dict(
        re.match(r"^([A-Za-z0-9_.-]+)==([^ ;]+)", line).groups()
        for line in result.stdout.splitlines()
        if line and not line.startswith((" ", "#"))
    )
    normalise = {name.lower().replace("_", "-"): v for name, v in locked.items()}
    assert {name.lower().replace("_", "-"): v for name, v in pins.items()}.items() <= (
        normalise.items()
    )
    for package in ("tfx", "tensorflow", "tf-keras", "apache-beam", "tensorflow-transform",
                    "tensorflow-model-analysis", "ml-metadata", "google-cloud-aiplatform"):
        assert pins[package] == locked[package], package
    assert "marco-tfx" not in pins  # installed from the source, editable, afterwards
    assert not {"pytest", "ruff"} & set(pins)  # the dev extra stays out of the image


def test_container_layout_matches_the_runner():
    dockerfile = _dockerfile()
    assert re.search(rf"^WORKDIR {re.escape(CONTAINER_PROJECT_DIR)}$", dockerfile, re.M)
    assert re.search(r"^COPY \. \.$", dockerfile, re.M)
    # `COPY . .` puts the repository at the project folder: the schema path the spec
    # hands to ImportSchemaGen is this repository's schema there.
    assert (REPO / Path(CONTAINER_SCHEMA_FILE).relative_to(CONTAINER_PROJECT_DIR)).is_file()
    # TFX's entry points import TensorFlow first: Keras 2 must be chosen by the image.
    assert re.search(r"^ENV TF_USE_LEGACY_KERAS=1", dockerfile, re.M)
    ignored = {
        line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", ".git", ".cache", "kubeflow/pipeline.yaml"} <= ignored
    needed = {"pyproject.toml", "uv.lock", "README.md", "components", "pipeline", "kubeflow",
              "schemas"}
    assert not needed & ignored


# --- Vertex AI's cluster description, as the trainer reads it ------------------------


def test_vertex_tf_config_gives_a_multi_worker_cluster(monkeypatch):
    from components.trainer import train

    cluster = {"chief": ["c-0:2222"], "worker": ["w-0:2222", "w-1:2222"]}
    monkeypatch.delenv("CLUSTER_SPEC", raising=False)
    monkeypatch.setenv("TF_CONFIG", json.dumps({
        "cluster": cluster, "task": {"type": "chief", "index": 0}, "environment": "cloud"}))
    assert train._cluster_tasks() == 3 and train.is_chief()
    monkeypatch.setenv("TF_CONFIG", json.dumps({
        "cluster": cluster, "task": {"type": "worker", "index": 0}, "environment": "cloud"}))
    assert not train.is_chief()
    assert train.cluster_config()["environment"] == "cloud"


def test_cluster_spec_and_legacy_master_are_translated():
    from components.trainer.train import cluster_config

    spec = {
        "cluster": {"workerpool0": ["c-0:2222"], "workerpool1": ["w-0:2222"],
                    "workerpool3": ["e-0:2222"]},
        "environment": "cloud",
        "task": {"type": "workerpool1", "index": "0"},
    }
    assert cluster_config({"CLUSTER_SPEC": json.dumps(spec)}) == {
        "cluster": {"chief": ["c-0:2222"], "worker": ["w-0:2222"]},
        "task": {"type": "worker", "index": 0},
    }
    legacy = {"cluster": {"master": ["m-0:2222"], "worker": ["w-0:2222"]},
              "task": {"type": "master", "index": 0}}
    assert cluster_config({"TF_CONFIG": json.dumps(legacy)})["cluster"] == {
        "chief": ["m-0:2222"], "worker": ["w-0:2222"]}
    assert cluster_config({"TF_CONFIG": json.dumps(legacy)})["task"]["type"] == "chief"
    assert cluster_config({}) == {}


def test_non_chief_replicas_wait_for_the_chief_export(tmp_path):
    from components.trainer import wait_for_chief_export

    target = tmp_path / "serving_model_dir"
    writer = threading.Timer(0.3, target.mkdir)
    writer.start()
    started = time.monotonic()
    wait_for_chief_export(str(target), timeout_s=30, poll_s=0.05)
    assert target.is_dir() and time.monotonic() - started >= 0.25
    with pytest.raises(TimeoutError, match="absent"):
        wait_for_chief_export(str(tmp_path / "absent"), timeout_s=0.1, poll_s=0.02)
