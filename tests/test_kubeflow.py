"""Kubeflow V2 / Vertex AI: the compiled spec of the same graph, settings checks, the image,
and reports read from a pipeline root.

One compile (through ``marco compile``, with flags over a settings file) is shared by
the spec tests; they read the JSON the command wrote, as Vertex AI would. Registry
calls are answered by a fake HTTP transport; nothing reaches Google Cloud.
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
    DIRECT_BEAM_ARGS,
    INPUT_FINGERPRINT_PARAMETER,
    MARCO_SHARDS_PARAMETER,
    SERVED_VERSION_PARAMETER,
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
BASELINE = "ServedModelBaseline"
# The example's image as a tag, and its digest.
TAG = IMAGE.split("@")[0] + ":v1"
DIGEST = IMAGE.split("@")[1]
VERTEX_TRAINER = "tfx.extensions.google_cloud_ai_platform.trainer.executor.GenericExecutor"
VERTEX_PUSHER = "components.pusher.EndpointExecutor"


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
        "AnomalyGate", "Transform", "Trainer", BASELINE, "Evaluator", "Pusher",
        "EndpointPusher",
    }
    # Nothing downstream of validation runs on data with anomalies.
    assert "AnomalyGate" in tasks["Transform"]["dependentTasks"]
    assert _producer(job, "AnomalyGate", "anomalies") == "ExampleValidator"
    assert _producer(job, "ExampleValidator", "statistics") == "StatisticsGen"
    assert _producer(job, "Transform", "examples") == "ImageExampleGen"
    assert _producer(job, "Trainer", "examples") == "Transform"
    assert _producer(job, "Trainer", "transform_graph") == "Transform"
    # The Evaluator compares the new model with the served one.
    assert _producer(job, "Evaluator", "model") == "Trainer"
    assert _producer(job, "Evaluator", "baseline_model") == BASELINE
    # Both pushers push the trained model, and only with the Evaluator's blessing.
    for pusher in ("Pusher", "EndpointPusher"):
        assert _producer(job, pusher, "model") == "Trainer"
        assert _producer(job, pusher, "model_blessing") == "Evaluator"
    # The endpoint pusher sees the serving folder before the Pusher adds to it.
    assert "EndpointPusher" in tasks["Pusher"]["dependentTasks"]
    assert job["pipelineSpec"]["pipelineInfo"]["name"] == "marco"
    assert job["pipelineSpec"]["schemaVersion"] == "2.1.0"
    assert job["runtimeConfig"]["gcsOutputDirectory"] == ROOT


def test_every_container_runs_the_configured_image(compiled):
    executors = compiled["job"]["pipelineSpec"]["deploymentSpec"]["executors"]
    containers = {name: e["container"] for name, e in executors.items() if "container" in e}
    # Every task runs in a container (no resolver queries).
    assert len(containers) == len(executors) == len(_tasks(compiled["job"])) == 11
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
    # It skips the model already served, as the Pusher does, in the same folder.
    assert config["marco_serving_dir"] == f"{ROOT}/serving"
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
        for name in (DATA_DIR_PARAMETER, MARCO_SHARDS_PARAMETER, TRAIN_ARGS_PARAMETER,
                     INPUT_FINGERPRINT_PARAMETER, SERVED_VERSION_PARAMETER)
    }
    values = job["runtimeConfig"]["parameterValues"]
    assert values[DATA_DIR_PARAMETER] == EXAMPLE["data_dir"]
    assert values[MARCO_SHARDS_PARAMETER] == FILE_SETTINGS["marco_shards"]
    # Computed when a run is submitted (kubeflow.submit); empty in the compiled job.
    assert values[INPUT_FINGERPRINT_PARAMETER] == values[SERVED_VERSION_PARAMETER] == ""
    wiring = {
        ("ImageExampleGen", "data_dir"): DATA_DIR_PARAMETER,
        ("ImageExampleGen", "marco_shards"): MARCO_SHARDS_PARAMETER,
        ("ImageExampleGen", "input_fingerprint"): INPUT_FINGERPRINT_PARAMETER,
        (BASELINE, "served_version"): SERVED_VERSION_PARAMETER,
        ("Trainer", "train_args"): TRAIN_ARGS_PARAMETER,
    }
    for (task, name), parameter in wiring.items():
        bound = _tasks(job)[task]["inputs"]["parameters"][name]
        assert bound == {"componentInputParameter": parameter}, (task, name)
    # The accuracy floor and the rest of the blessing rule are the preset's.
    eval_config = json.loads(_constant(job, "Evaluator", "eval_config"))
    assert "metrics_specs" in eval_config


def test_kubeflow_package_is_the_bare_spec_with_parameter_defaults(compiled):
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    package, job = compiled["package"], compiled["job"]
    assert package["schemaVersion"] == "2.1.0"
    assert package["root"]["dag"] == job["pipelineSpec"]["root"]["dag"]
    parameters = package["root"]["inputDefinitions"]["parameters"]
    assert {n: p["defaultValue"] for n, p in parameters.items()} == (
        job["runtimeConfig"]["parameterValues"]
    )
    # An explicit pipeline root, read by KFP as the spec's default_pipeline_root: a run
    # writes to the settings' bucket, not to the cluster's default one.
    spec = json_format.ParseDict(package, pipeline_spec_pb2.PipelineSpec())
    assert spec.default_pipeline_root == ROOT


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


def test_init_from_reaches_the_trainer_and_the_baseline_from_a_bucket():
    """init_from: the Vertex training job and the baseline read the model from gs://."""
    from kubeflow.runner import build

    init = "gs://my-bucket/marco/released-serving"
    settings = parse_settings({**EXAMPLE, "preset": "finetune", "init_from": init})
    components = {component.id: component for component in build(settings).components}
    trainer = components["Trainer"].exec_properties["custom_config"]
    config = json.loads(trainer) if isinstance(trainer, str) else trainer
    assert config["init_from"] == init
    assert config["marco_training"]["trainable_layers"] == "Mixed_7*,Logits/*"
    assert components["ServedModelBaseline"].exec_properties["init_from"] == init
    # Without it, neither gets one.
    components = {c.id: c for c in build(parse_settings(EXAMPLE)).components}
    assert components["ServedModelBaseline"].exec_properties.get("init_from") is None


def test_direct_runner_runs_beam_in_the_task_and_takes_local_paths(tmp_path):
    """For executing the compiled spec on one machine: no Dataflow, local folders."""
    from kubeflow.runner import build

    local = {"pipeline_root": str(tmp_path / "root"), "data_dir": str(tmp_path / "data"),
             "marco_shards": str(tmp_path / "shards" / "*.tfrecord"),
             "serving_dir": str(tmp_path / "serving"),
             "catalogue_dir": str(tmp_path / "sources")}
    settings = parse_settings({**EXAMPLE, **local, "beam_runner": "DirectRunner"})
    assert settings.beam_args() == DIRECT_BEAM_ARGS
    assert settings.serving_root == local["serving_dir"]
    pipeline = build(settings)
    assert pipeline.beam_pipeline_args == list(DIRECT_BEAM_ARGS)
    components = {component.id: component for component in pipeline.components}
    ingestion = components["ImageExampleGen"].exec_properties
    assert ingestion["catalogue_dir"] == local["catalogue_dir"]
    transform = json.loads(components["Transform"].exec_properties["custom_config"])
    assert transform["catalogue_dir"] == local["catalogue_dir"]
    # The default stays Dataflow, which needs gs:// paths.
    assert parse_settings(EXAMPLE).beam_args()[0] == "--runner=DataflowRunner"
    for name, value in local.items():
        if name == "catalogue_dir":
            continue  # read inside the image, or on the submitting machine
        with pytest.raises(SettingsError, match=f"^settings: {name}: must be a gs:// path "
                                                 "with beam_runner DataflowRunner"):
            parse_settings({**EXAMPLE, name: value})


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"project": None}, "project"),
        ({"project": "My Project"}, "project"),
        ({"region": "europe west"}, "region"),
        ({"pipeline_root": "local/root"}, "pipeline_root"),
        ({"pipeline_root": "gs://"}, "pipeline_root"),
        ({"pipeline_root": "/local/root"}, "pipeline_root"),  # with Dataflow
        ({"beam_runner": "SparkRunner"}, "beam_runner"),
        ({"beam_runner": "DirectRunner", "data_dir": "data"}, "data_dir"),
        ({"catalogue_dir": "schemas/sources"}, "catalogue_dir"),
        ({"image": None}, "image"),
        ({"data_dir": None}, "data_dir"),
        ({"data_dir": "s3://bucket/data"}, "data_dir"),
        ({"serving_dir": "srv/models"}, "serving_dir"),
        ({"preset": "huge"}, "preset"),
        ({"preset": "finetune"}, "init_from"),
        ({"init_from": "models/released"}, "init_from"),
        ({"init_from": "/local/released"}, "init_from"),  # with Dataflow
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
        (["--pipeline-root", "tmp/root"], "pipeline_root"),
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


# --- One immutable image -------------------------------------------------------------


@pytest.fixture
def registry(monkeypatch) -> list:
    """A fake registry behind the HTTP transport: the example's tag names its digest.

    Artifact Registry answers only requests that carry the (fake) Application Default
    Credentials' token (others get 403, permission denied). Returns the requests made.
    """
    from urllib.parse import urlsplit

    import google.auth
    import requests
    from google.oauth2.credentials import Credentials

    host, _, path = TAG.partition("/")
    manifests = {f"/v2/{path.rsplit(':', 1)[0]}/manifests/v1": DIGEST,
                 "/v2/library/python/manifests/3.10": "sha256:" + "b" * 64}
    calls = []

    def send(adapter, request, **kwargs):
        calls.append(request)
        url = urlsplit(request.url)
        response = requests.Response()
        response.request, response.url, response._content = request, request.url, b""
        if url.hostname == host and request.headers.get("Authorization") != "Bearer adc-token":
            response.status_code = 403
        elif url.path in manifests:
            response.status_code = 200
            response.headers["Docker-Content-Digest"] = manifests[url.path]
        else:
            response.status_code = 404
        return response

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", send)
    monkeypatch.setattr(google.auth, "default",
                        lambda scopes=None, **_: (Credentials(token="adc-token"), "my-gcp-project"))
    return calls


def test_resolve_image_reads_the_tags_digest_from_the_registry(registry, monkeypatch):
    import google.auth

    from kubeflow.runner import MANIFEST_MEDIA_TYPES, RegistryError, resolve_image

    assert resolve_image(TAG) == IMAGE
    [request] = registry
    assert request.method == "HEAD"
    host, _, path = TAG.partition("/")
    assert request.url == f"https://{host}/v2/{path.replace(':v1', '')}/manifests/v1"
    accepted = [t.strip() for t in request.headers["Accept"].split(",")]
    assert accepted[:3] == [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ] and set(accepted) == set(MANIFEST_MEDIA_TYPES)
    assert request.headers["Authorization"] == "Bearer adc-token"
    # Already by digest: no request.
    assert resolve_image(IMAGE) == IMAGE and len(registry) == 1
    with pytest.raises(RegistryError, match="no tag 'v2'"):
        resolve_image(TAG.replace(":v1", ":v2"))
    # Other registries are asked anonymously, without Google credentials.
    monkeypatch.setattr(google.auth, "default", lambda **_: pytest.fail("credentials asked"))
    assert resolve_image("python:3.10") == "python@sha256:" + "b" * 64
    assert registry[-1].url == "https://registry-1.docker.io/v2/library/python/manifests/3.10"
    assert "Authorization" not in registry[-1].headers


def test_resolve_image_explains_refusals(registry, monkeypatch):
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError
    from google.oauth2.credentials import Credentials

    from kubeflow.runner import RegistryError, resolve_image

    monkeypatch.setattr(google.auth, "default",
                        lambda **_: (Credentials(token="someone-else"), None))
    with pytest.raises(RegistryError, match=r"refused .*HTTP 403.*Artifact Registry Reader"):
        resolve_image(TAG)

    def no_credentials(**_):
        raise DefaultCredentialsError("none found")

    monkeypatch.setattr(google.auth, "default", no_credentials)
    with pytest.raises(RegistryError, match="application-default login"):
        resolve_image(TAG)


def test_compile_refuses_a_tag_and_resolves_it_when_asked(tmp_path, registry):
    from kubeflow.runner import job_images

    settings = _write_settings(tmp_path, {**EXAMPLE, "image": TAG})
    out = tmp_path / "job.json"
    result = CliRunner().invoke(marco, ["compile", "--config", str(settings), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert f"settings.yaml: image: '{TAG}' names no digest" in result.output
    assert "gcloud artifacts docker images describe" in result.output
    assert "--resolve-image" in result.output
    assert not out.exists() and not registry
    result = CliRunner().invoke(
        marco, ["compile", "--config", str(settings), "--out", str(out), "--resolve-image"])
    assert result.exit_code == 0, result.output
    assert f"image {TAG} is {IMAGE}" in result.output
    assert job_images(json.loads(out.read_text())) == {IMAGE}


def _trainer_images(job: dict) -> list[str]:
    config = json.loads(_constant(job, "Trainer", "custom_config"))
    pools = config["ai_platform_training_args"]["job_spec"]["worker_pool_specs"]
    return [pool["container_spec"]["image_uri"] for pool in pools]


def _dataflow_images(job: dict) -> set[str]:
    flag = "--sdk_container_image="
    executors = job["pipelineSpec"]["deploymentSpec"]["executors"].values()
    return {arg[len(flag):] for e in executors for arg in e["container"]["args"]
            if arg.startswith(flag)}


def test_tfx_cli_built_image_runs_everywhere_in_the_job(tmp_path, monkeypatch):
    """`tfx pipeline create --build-image`: the pushed digest, not the tag, in every place.

    TFX's own patcher runs kubeflow/runner.py as the CLI does; the image build is
    replaced by a function that answers the pushed digest, as TFX's builder does.
    """
    import runpy

    from tfx.tools.cli.handler.kubeflow_v2_dag_runner_patcher import (
        KubeflowV2DagRunnerPatcher,
    )

    settings = _write_settings(tmp_path, {**FILE_SETTINGS, "image": TAG, "training_workers": 2})
    monkeypatch.setenv("MARCO_KUBEFLOW_CONFIG", str(settings))
    built = []

    def build_image(target: str) -> str:
        built.append(target)
        return f"{target.rsplit(':', 1)[0]}@{DIGEST}"

    home = tmp_path / "tfx-home"
    patcher = KubeflowV2DagRunnerPatcher(
        call_real_run=True, build_image_fn=build_image,
        prepare_dir_fn=lambda name: str(home / name))
    with patcher.patch() as context:
        runpy.run_path(str(REPO / "kubeflow" / "runner.py"), run_name="__main__")
    assert built == [TAG]
    written = Path(context[patcher.OUTPUT_FILE_PATH])
    assert written == home / "marco" / "pipeline.json"
    job = json.loads(written.read_text())
    executors = job["pipelineSpec"]["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executors.values()} == {IMAGE}
    assert _trainer_images(job) == [IMAGE, IMAGE]
    assert _dataflow_images(job) == {IMAGE}
    assert TAG not in written.read_text()

    # Without --build-image a tag is refused, and nothing is written.
    monkeypatch.chdir(tmp_path)
    with KubeflowV2DagRunnerPatcher(call_real_run=True).patch(), \
            pytest.raises(SystemExit) as refused:
        runpy.run_path(str(REPO / "kubeflow" / "runner.py"), run_name="__main__")
    assert f"settings.yaml: image: '{TAG}' names no digest" in str(refused.value.code)
    assert not (tmp_path / "marco_pipeline.json").exists()


def test_replace_image_changes_only_that_image():
    from kubeflow.runner import job_images, replace_image

    other = TAG.replace(":v1", ":v10")
    job = {"a": {"image": TAG}, "b": ["--sdk_container_image=" + TAG, "--x=" + other],
           "c": json.dumps({"container_spec": {"image_uri": TAG}, "keep": other}),
           "d": "{not json " + TAG}
    replaced = replace_image(job, TAG, IMAGE)
    assert replaced["a"] == {"image": IMAGE}
    assert replaced["b"] == ["--sdk_container_image=" + IMAGE, "--x=" + other]
    assert json.loads(replaced["c"]) == {"container_spec": {"image_uri": IMAGE}, "keep": other}
    assert replaced["d"] == job["d"]
    assert job_images(replaced) == {IMAGE}
    assert job_images(job) == {TAG}


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


# --- Reports from a pipeline root (no ML Metadata) ------------------------------------

PROJECT_NUMBER = "123456789012"


@pytest.fixture(scope="module")
def tfma_evaluation(tmp_path_factory) -> Path:
    """A real TFMA evaluation folder, of stored predictions (as tests/test_evaluation.py)."""
    import tensorflow as tf
    import tensorflow_model_analysis as tfma

    from components.evaluation import eval_config
    from tests.test_evaluation import _example, _predictions_only

    folder = tmp_path_factory.mktemp("tfma")
    examples = folder / "examples.tfrecord"
    with tf.io.TFRecordWriter(str(examples)) as writer:
        for i in range(24):
            label = i % 4
            writer.write(_example(label, label if i % 6 else (label + 1) % 4,
                                  "BIG" if i < 16 else "SMALL"))
    tfma.run_model_analysis(
        eval_shared_model=None, eval_config=_predictions_only(eval_config(0.5)),
        data_location=str(examples), output_path=str(folder / "evaluation"),
    )
    return folder / "evaluation"


def _task(job_dir: Path, task: str, outputs: dict, finished: float | None) -> Path:
    """A task folder as Vertex AI leaves it; ``finished`` None: still running."""
    folder = job_dir / task
    folder.mkdir(parents=True)
    artifacts = {}
    for key, (content, metadata) in outputs.items():
        if isinstance(content, Path):
            shutil.copytree(content, folder / key)
        else:
            (folder / key).mkdir()
            for name in content:
                (folder / key / name).write_text("")
        artifacts[key] = {"artifacts": [{"uri": str(folder / key), "metadata": metadata}]}
    if finished is not None:
        marker = folder / "executor_output.json"
        marker.write_text(json.dumps({"artifacts": artifacts}))
        os.utime(marker, (finished, finished))
    return folder


@pytest.fixture
def vertex_root(tmp_path, tfma_evaluation) -> Path:
    """Two finished runs (the newer one's job name sorts first) and one still evaluating."""
    root = tmp_path / "root"
    runs = root / PROJECT_NUMBER
    now = time.time()
    for job, finished, blessed, pushed in [("marco-0", now - 7200, True, None),
                                           ("marco-b", now - 3600, False, None),
                                           ("marco-a", now - 60, True, "/srv/serving/17")]:
        _task(runs / job, "Trainer_1", {"model": ([], {})}, finished - 600)
        _task(runs / job, "Evaluator_2", {
            "evaluation": (tfma_evaluation, {}),
            "blessing": (["BLESSED" if blessed else "NOT_BLESSED"], {"blessed": float(blessed)}),
        }, finished)
        push = {"pushed": 1.0, "pushed_destination": pushed} if pushed else {"pushed": 0.0}
        if blessed and not pushed:
            push["not_pushed_reason"] = "already served: version 16 is this model"
        _task(runs / job, "Pusher_3", {"pushed_model": ([], push)}, finished + 30)
    _task(runs / "marco-c", "Evaluator_2", {"evaluation": (tfma_evaluation, {})}, None)
    # marco-a's ingestion, with two labels an expert's override set.
    ingestion = _task(runs / "marco-a", "ImageExampleGen_0", {"examples": ([], {})}, now - 900)
    (ingestion / "examples" / "ingestion_counts.json").write_text(json.dumps({
        "example\tBIG\tclear\ttrain": 20, "override\tBIG\tcrystals\teval": 2,
        "override\tSMALL\tother\ttrain": 1}))
    return root


@pytest.mark.slow
def test_report_of_a_pipeline_root_reads_the_newest_finished_evaluation(vertex_root, tmp_path):
    from pipeline.runs import root_outcome

    runs = vertex_root / PROJECT_NUMBER
    newest = root_outcome(str(vertex_root))
    assert newest.evaluation_uri == str(runs / "marco-a" / "Evaluator_2" / "evaluation")
    assert (newest.blessed, newest.pushed, newest.pushed_to) == (True, True, "/srv/serving/17")
    assert newest.model_uri == str(runs / "marco-a" / "Trainer_1" / "model")
    older = root_outcome(str(vertex_root), "marco-b")
    assert (older.blessed, older.pushed, older.pushed_to) == (False, False, None)
    assert newest.not_pushed_reason is None and older.not_pushed_reason is None
    served = root_outcome(str(vertex_root), "marco-0")
    assert (served.blessed, served.pushed) == (True, False)
    assert served.not_pushed_reason == "already served: version 16 is this model"

    result = CliRunner().invoke(marco, ["report", str(vertex_root), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "r" / "report.json").read_text())
    assert saved["evaluation"] == newest.evaluation_uri
    assert saved["context"]["pushed_to"] == "/srv/serving/17"
    # Overrides counted by the same job's ImageExampleGen; none found for marco-0.
    assert saved["label_overrides"] == {"BIG": {"crystals": 2}, "SMALL": {"other": 1}}
    assert saved["examples"] == 24 and set(saved["institutions"]) == {"BIG", "SMALL"}
    assert "pushed to /srv/serving/17" in result.output

    result = CliRunner().invoke(
        marco, ["report", str(vertex_root), "--job-name", "marco-b"])
    assert result.exit_code == 0, result.output
    saved = json.loads((vertex_root / "report" / "report.json").read_text())
    assert saved["evaluation"] == older.evaluation_uri
    assert saved["context"]["pushed_to"] is None

    result = CliRunner().invoke(
        marco, ["report", str(vertex_root), "--job-name", "marco-0", "--out", str(tmp_path / "0")])
    assert result.exit_code == 0, result.output
    assert "blessed; not pushed (already served: version 16 is this model)" in result.output
    assert "- Not pushed: already served" in (tmp_path / "0" / "report.md").read_text()
    assert json.loads((tmp_path / "0" / "report.json").read_text())["label_overrides"] is None

    result = CliRunner().invoke(marco, ["report", str(vertex_root), "--job-name", "marco-c"])
    assert result.exit_code == 1
    assert "no finished Evaluator in pipeline job 'marco-c'" in result.output
    assert "marco-a, marco-b" in result.output
    result = CliRunner().invoke(marco, ["report", str(tmp_path)])
    assert result.exit_code == 1 and "no metadata.sqlite and no finished Evaluator" in (
        result.output)


def test_an_outside_catalogue_gets_a_schema_derived_from_it_in_the_compiled_job(tmp_path):
    """The catalogue_dir setting: the schema is built from that catalogue when the run
    starts (its cache key follows the submitted input fingerprint, which covers the
    catalogue's content); a stopped step's report goes beside the job folders."""
    catalogue = "gs://my-bucket/marco/catalogue"
    settings = _write_settings(tmp_path, {**FILE_SETTINGS, "catalogue_dir": catalogue})
    result = CliRunner().invoke(
        marco, ["compile", "--config", str(settings), "--out", str(tmp_path / "job.json"),
                "--quarantine-budget", "0.05"])
    assert result.exit_code == 0, result.output
    job = json.loads((tmp_path / "job.json").read_text())
    tasks = _tasks(job)
    assert "CatalogueSchemaGen" in tasks and "ImportSchemaGen" not in tasks
    assert _constant(job, "CatalogueSchemaGen", "catalogue_dir") == catalogue
    fingerprint = tasks["CatalogueSchemaGen"]["inputs"]["parameters"]["input_fingerprint"]
    assert fingerprint["componentInputParameter"] == INPUT_FINGERPRINT_PARAMETER
    for consumer in ("StatisticsGen", "ExampleValidator", "Transform", "Trainer"):
        assert _producer(job, consumer, "schema") == "CatalogueSchemaGen", consumer
    assert _constant(job, "ImageExampleGen", "quarantine_budget") == 0.05
    for task in ("ImageExampleGen", "AnomalyGate"):
        assert _constant(job, task, "stop_report_dir") == f"{ROOT}/stopped-runs", task
    assert _constant(job, "AnomalyGate", "catalogue_dir") == catalogue
    with pytest.raises(SettingsError, match="quarantine_budget: must be a fraction"):
        parse_settings({**EXAMPLE, "quarantine_budget": 2})
