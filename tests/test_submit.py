"""``marco submit`` and :mod:`kubeflow.submit`: a run's parameters, computed at submission.

Vertex AI is replaced at its client class: ``aiplatform.PipelineJob`` becomes a
subclass whose constructor is the real one (it reads the compiled template and checks
the parameter values against it, offline) and whose ``submit`` and ``wait``, the
calls that would reach Google Cloud, only record what they were given.
"""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from kubeflow.runner import (
    DATA_DIR_PARAMETER,
    INPUT_FINGERPRINT_PARAMETER,
    SERVED_VERSION_PARAMETER,
    TRAIN_ARGS_PARAMETER,
    parse_settings,
)
from pipeline.cli import main as marco
from tests.ingestion_fixtures import make_synthetic

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = yaml.safe_load((REPO / "kubeflow" / "pipeline.example.yaml").read_text())
SERVICE_ACCOUNT = "marco@my-gcp-project.iam.gserviceaccount.com"
JOB_ID = "marco-20240601120000"
PROJECT_NUMBER = "123456789012"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """A real data folder, settings for running the compiled spec here, and the job."""
    folder = tmp_path_factory.mktemp("submit")
    make_synthetic(folder / "data", images=20)
    settings = {
        **{k: v for k, v in EXAMPLE.items() if k in ("project", "region", "image")},
        "pipeline_root": str(folder / "root"),
        "data_dir": str(folder / "data"),
        "serving_dir": str(folder / "serving"),
        "beam_runner": "DirectRunner",
        "preset": "tiny",
        "service_account": SERVICE_ACCOUNT,
    }
    path = folder / "settings.yaml"
    path.write_text(yaml.safe_dump(settings))
    result = CliRunner().invoke(
        marco, ["compile", "--config", str(path), "--out", str(folder / "job.json")])
    assert result.exit_code == 0, result.output
    return {"folder": folder, "settings": settings, "config": path,
            "job": folder / "job.json"}


@pytest.fixture
def vertex(monkeypatch) -> list:
    """``aiplatform.PipelineJob`` with its network calls recorded: the jobs made."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform
    from google.cloud.aiplatform.compat.types import pipeline_state

    made = []

    class RecordedPipelineJob(
        aiplatform.PipelineJob,
        experiment_loggable_schemas=(),  # registers nothing in the SDK
    ):
        def __init__(self, **kwargs):
            self.kwargs = kwargs
            self.submitted = self.waited = None
            super().__init__(**kwargs, job_id=JOB_ID, credentials=AnonymousCredentials())
            made.append(self)

        def submit(self, **kwargs):
            self.submitted = kwargs
            self._gca_resource.name = (
                f"projects/{PROJECT_NUMBER}/locations/{self.location}/pipelineJobs/{self.job_id}"
            )

        def wait(self):
            self.waited = True

        @property
        def state(self):
            return pipeline_state.PipelineState.PIPELINE_STATE_SUCCEEDED

    monkeypatch.setattr(aiplatform, "PipelineJob", RecordedPipelineJob)
    return made



def _fingerprint(data_dir: Path) -> str:
    """What ImageExampleGen's local driver computes for this folder."""
    from components.ingestion.driver import fingerprint_from_properties

    return fingerprint_from_properties({"data_dir": str(data_dir)})


def _submit(world: dict, *args: str):
    return CliRunner().invoke(
        marco, ["submit", "--config", str(world["config"]), "--job", str(world["job"]), *args])


def test_submit_starts_a_vertex_run_with_the_fingerprint_of_the_data(world, vertex, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(world["folder"] / "data", data)
    result = _submit(world, "--runtime-parameter", f"{DATA_DIR_PARAMETER}={data}")
    assert result.exit_code == 0, result.output
    [job] = vertex
    parameters = {
        DATA_DIR_PARAMETER: str(data),
        TRAIN_ARGS_PARAMETER: json.dumps({"num_steps": 12}),
        INPUT_FINGERPRINT_PARAMETER: _fingerprint(data),
        SERVED_VERSION_PARAMETER: "",
    }
    assert job.kwargs == {
        "display_name": "marco",
        "template_path": str(world["job"]),
        "pipeline_root": world["settings"]["pipeline_root"],
        "parameter_values": parameters,
        "enable_caching": True,
        "project": "my-gcp-project",
        "location": "europe-west4",
    }
    assert job.submitted == {"service_account": SERVICE_ACCOUNT} and not job.waited
    # The run Vertex AI would receive, as the real client built it from the template.
    assert dict(job.runtime_config.parameter_values) == parameters
    assert job.runtime_config.gcs_output_directory == world["settings"]["pipeline_root"]
    assert ("console: https://console.cloud.google.com/vertex-ai/locations/europe-west4/"
            f"pipelines/runs/{JOB_ID}?project={PROJECT_NUMBER}") in result.output
    for name, value in parameters.items():
        assert f"  {name} = {value}\n" in result.output

    # An unchanged folder gives the same fingerprint (cached steps stay cached)...
    assert _submit(world, "--runtime-parameter", f"data_dir={data}").exit_code == 0
    assert vertex[1].kwargs["parameter_values"] == parameters
    # ...a changed file a new one (an image of a folder-per-label layout, walked file
    # by file; manifest layouts are fingerprinted by their manifests).
    image = next(p for p in sorted((data / "HWMRI").rglob("*")) if p.is_file())
    image.write_bytes(image.read_bytes() + b"\0")
    assert _submit(world, "--runtime-parameter", f"data_dir={data}", "--wait").exit_code == 0
    changed = vertex[2].kwargs["parameter_values"][INPUT_FINGERPRINT_PARAMETER]
    assert changed != parameters[INPUT_FINGERPRINT_PARAMETER]
    assert changed == _fingerprint(data)
    assert vertex[2].waited


def test_print_parameters_gives_lines_for_tfx_run_create(world, vertex):
    from components.baseline import newest_served_version

    serving = Path(world["settings"]["serving_dir"])
    for version in ("1717000000", "1717000500"):
        (serving / version).mkdir(parents=True, exist_ok=True)
        (serving / version / "saved_model.pb").write_bytes(b"model")
    try:
        result = _submit(world, "--print-parameters",
                         "--runtime-parameter", 'train_args={"num_steps": 5}')
    finally:
        shutil.rmtree(serving)
    assert result.exit_code == 0, result.output
    assert not vertex  # nothing submitted
    lines = result.output.splitlines()
    assert all(line.startswith("--runtime-parameter ") for line in lines)
    values = dict(shlex.split(line)[1].split("=", 1) for line in lines)
    assert values == {
        DATA_DIR_PARAMETER: world["settings"]["data_dir"],
        TRAIN_ARGS_PARAMETER: '{"num_steps": 5}',
        INPUT_FINGERPRINT_PARAMETER: _fingerprint(Path(world["settings"]["data_dir"])),
        SERVED_VERSION_PARAMETER: "1717000500",
    }
    assert newest_served_version(str(serving)) == ""  # the folder is gone again


def test_submission_parameters_follow_the_serving_folder_and_the_overrides(world, tmp_path):
    """The function a harness calls: settings (and overrides) in, every parameter out."""
    from kubeflow.submit import SubmissionError, submission_parameters

    serving = tmp_path / "serving"
    settings = parse_settings({**world["settings"], "serving_dir": str(serving)})
    assert submission_parameters(settings)[SERVED_VERSION_PARAMETER] == ""
    (serving / "7").mkdir(parents=True)
    (serving / "7" / "saved_model.pb").write_bytes(b"model")
    assert submission_parameters(settings)[SERVED_VERSION_PARAMETER] == "7"
    (serving / "12" / "variables").mkdir(parents=True)  # not a model yet
    assert submission_parameters(settings)[SERVED_VERSION_PARAMETER] == "7"
    (serving / "12" / "saved_model.pb").write_bytes(b"model")
    assert submission_parameters(settings)[SERVED_VERSION_PARAMETER] == "12"
    # Without serving_dir: <pipeline_root>/serving.
    bare = parse_settings({k: v for k, v in world["settings"].items() if k != "serving_dir"})
    assert bare.serving_root == f"{world['settings']['pipeline_root']}/serving"

    given = submission_parameters(settings, {INPUT_FINGERPRINT_PARAMETER: "chosen"})
    assert given[INPUT_FINGERPRINT_PARAMETER] == "chosen"
    for overrides, message in [
        ({"marco_shard": "x"}, "^marco_shard: not a runtime parameter of the pipeline"),
        ({"data_dir": "relative/data"}, "^data_dir: must be a gs:// path or an absolute"),
        ({"train_args": "5000"}, "^train_args: not the JSON of TFX TrainArgs"),
        ({"data_dir": str(tmp_path / "empty")}, "^input_fingerprint: cannot list the inputs"),
    ]:
        with pytest.raises(SubmissionError, match=message):
            submission_parameters(settings, overrides)


def test_while_nothing_is_served_the_init_models_version_is_the_baseline_key(world, tmp_path):
    """A fine-tune's baseline is its init model until a push: a new version there (a
    re-import) must change the key, as the local driver's does, or Vertex would reuse
    the baseline of the old init model."""
    from components.baseline.driver import Driver
    from kubeflow.submit import SubmissionError, submission_parameters

    serving, init = tmp_path / "serving", tmp_path / "imported"
    settings = parse_settings({**world["settings"], "serving_dir": str(serving),
                               "preset": "finetune", "init_from": str(init)})

    def local_key() -> str:
        return Driver.compute(None, {"serving_dir": str(serving), "init_from": str(init)})

    with pytest.raises(SubmissionError, match=f"^init_from: init model {init}: no SavedModel"):
        submission_parameters(settings)
    for version in ("1700000000", "1800000000"):
        (init / version).mkdir(parents=True)
        (init / version / "saved_model.pb").write_bytes(b"model")
        assert submission_parameters(settings)[SERVED_VERSION_PARAMETER] == f"init:{version}"
        assert local_key() == f"init:{version}"
    (serving / "5").mkdir(parents=True)
    (serving / "5" / "saved_model.pb").write_bytes(b"model")
    assert submission_parameters(settings)[SERVED_VERSION_PARAMETER] == "5" == local_key()


def test_parameters_the_job_lacks_are_refused(world, vertex):
    result = _submit(world, "--runtime-parameter", "marco_shards=/data/shards-*")
    assert result.exit_code == 1
    assert "marco_shards: the compiled job has no such runtime parameter" in result.output
    result = _submit(world, "--runtime-parameter", "train_args")
    assert result.exit_code == 2 and "is not NAME=VALUE" in result.output
    assert not vertex


def test_a_job_with_a_tagged_image_is_refused(world, vertex, tmp_path):
    tagged = tmp_path / "job.json"
    digest_image = world["settings"]["image"]
    tagged.write_text(world["job"].read_text().replace(
        digest_image, digest_image.split("@")[0] + ":latest"))
    result = CliRunner().invoke(
        marco, ["submit", "--config", str(world["config"]), "--job", str(tagged)])
    assert result.exit_code == 1 and "without a digest" in result.output
    assert not vertex


def test_submit_compiles_the_job_when_none_is_given(world, vertex):
    result = CliRunner().invoke(marco, ["submit", "--config", str(world["config"])])
    assert result.exit_code == 0, result.output
    [job] = vertex
    # The compiled template was read when the job was made; it is the same pipeline.
    compiled = json.loads(world["job"].read_text())
    assert job.pipeline_spec["root"] == compiled["pipelineSpec"]["root"]
    assert job.kwargs["parameter_values"][INPUT_FINGERPRINT_PARAMETER] == _fingerprint(
        Path(world["settings"]["data_dir"]))
    # A tag is refused before anything is compiled or submitted.
    result = CliRunner().invoke(
        marco, ["submit", "--config", str(world["config"]), "--image", "eu.gcr.io/p/marco:v1"])
    assert result.exit_code == 1 and "image: 'eu.gcr.io/p/marco:v1' names no digest" in (
        result.output)
    assert len(vertex) == 1


def test_the_fingerprint_covers_what_the_compiled_job_reads(world, tmp_path):
    """Settings that name more data than the job reads: only the job's inputs count."""
    from kubeflow.runner import MARCO_SHARDS_PARAMETER
    from kubeflow.submit import SubmissionError, submission_parameters

    job = json.loads(world["job"].read_text())  # compiled with data_dir only
    wider = parse_settings({**world["settings"],
                            "marco_shards": str(tmp_path / "shards" / "*.tfrecord")})
    values = submission_parameters(wider, job=job)
    assert MARCO_SHARDS_PARAMETER not in values
    assert values[INPUT_FINGERPRINT_PARAMETER] == _fingerprint(
        Path(world["settings"]["data_dir"]))
    with pytest.raises(SubmissionError, match="marco_shards matches no file"):
        submission_parameters(wider)  # without the job: the shards are part of the data
    # A parameter the settings lack keeps the job's default (what the run would read).
    shards_only = parse_settings({**{k: v for k, v in world["settings"].items()
                                     if k != "data_dir"},
                                  "marco_shards": str(tmp_path / "shards" / "*.tfrecord")})
    values = submission_parameters(shards_only, job=job)
    assert values[DATA_DIR_PARAMETER] == world["settings"]["data_dir"]
    assert values[INPUT_FINGERPRINT_PARAMETER] == _fingerprint(
        Path(world["settings"]["data_dir"]))
