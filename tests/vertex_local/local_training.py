"""A local stand-in for Vertex AI's ``JobServiceClient``, for the KFP harness.

TFX's Vertex AI Trainer submits a CustomJob through
``google.cloud.aiplatform.gapic.JobServiceClient`` and polls it. This client runs the
job instead: every replica of every worker pool is a local process running the
pool's own container command, with the ``TF_CONFIG`` and ``CLUSTER_SPEC`` Vertex AI
gives replicas (pools ``workerpool0`` ... in CLUSTER_SPEC; task types ``chief``,
``worker`` in TF_CONFIG). It refuses a pool whose image is not the pipeline task's
own image. ``create_custom_job`` returns once every replica has exited; the job
succeeds only if all of them did.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import types
from pathlib import Path

POOL_TASK_TYPES = ("chief", "worker", "ps", "evaluator")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalJobServiceClient:
    """What TFX's VertexJobClient calls: create_custom_job and get_custom_job."""

    def __init__(self, *args, **kwargs) -> None:
        self._jobs: dict[str, object] = {}

    def create_custom_job(self, parent: str, custom_job: dict):
        from google.cloud.aiplatform_v1.types.job_state import JobState

        image = os.environ["MARCO_LOCAL_VERTEX_IMAGE"]
        log_dir = Path(os.environ["MARCO_LOCAL_VERTEX_LOG_DIR"])
        pools = custom_job["job_spec"]["worker_pool_specs"]
        cluster: dict[str, list[str]] = {}
        for index, pool in enumerate(pools):
            if pool["container_spec"]["image_uri"] != image:
                raise ValueError(
                    f"worker pool {index} runs {pool['container_spec']['image_uri']}, "
                    f"not the pipeline's image {image}"
                )
            cluster[f"workerpool{index}"] = [
                f"localhost:{_free_port()}" for _ in range(int(pool.get("replica_count", 1)))
            ]
        tf_cluster = {POOL_TASK_TYPES[i]: cluster[f"workerpool{i}"] for i in range(len(pools))}
        processes = []
        for index, pool in enumerate(pools):
            spec = pool["container_spec"]
            command = list(spec["command"]) + list(spec.get("args", []))
            if command[0] == "python":
                command[0] = sys.executable
            for replica in range(len(cluster[f"workerpool{index}"])):
                env = {
                    **os.environ,
                    "MARCO_LOCAL_VERTEX_TRAINING": "0",
                    "CLUSTER_SPEC": json.dumps({
                        "cluster": cluster,
                        "task": {"type": f"workerpool{index}", "index": replica},
                    }),
                    "TF_CONFIG": json.dumps({
                        "cluster": tf_cluster,
                        "task": {"type": POOL_TASK_TYPES[index], "index": replica},
                        "environment": "cloud",
                    }),
                }
                for variable in spec.get("env", []):
                    env[variable["name"]] = variable["value"]
                log = (log_dir / f"replica-workerpool{index}-{replica}.log").open("wb")
                processes.append((subprocess.Popen(
                    command, env=env, stdout=log, stderr=subprocess.STDOUT), log))
        codes = []
        for process, log in processes:
            codes.append(process.wait())
            log.close()
        name = f"{parent}/customJobs/{len(self._jobs) + 1}"
        state = (JobState.JOB_STATE_SUCCEEDED if all(c == 0 for c in codes)
                 else JobState.JOB_STATE_FAILED)
        self._jobs[name] = types.SimpleNamespace(
            name=name, state=state, replica_exit_codes=codes
        )
        return self._jobs[name]

    def get_custom_job(self, name: str, retry=None):
        return self._jobs[name]


def install() -> None:
    """Puts LocalJobServiceClient where TFX's training client looks it up."""
    from google.cloud.aiplatform import gapic

    gapic.JobServiceClient = LocalJobServiceClient
