"""One worker of the two-process MultiWorkerMirroredStrategy test (run as a script).

Arguments: this worker's index, the comma-separated ports of all workers, the data
folder, the output folder (shared by the workers, as a Vertex AI job's replicas share
the Trainer's output folders) and the training settings as JSON.
"""

from __future__ import annotations

import json
import os
import sys

import components  # noqa: F401  (Keras 2 before TensorFlow)


def main(index: int, ports: list[int], data_dir: str, out_dir: str, settings: str) -> None:
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"localhost:{p}" for p in ports]},
        "task": {"type": "worker", "index": index},
    })
    import numpy as np

    from components.trainer import save_outputs
    from components.trainer.config import TrainingConfig
    from components.trainer.train import train_model

    config = TrainingConfig.from_json_dict(json.loads(settings))
    model, metrics = train_model(
        config, f"{data_dir}/train*.gz", f"{data_dir}/eval*.gz", f"{out_dir}/run",
        train_steps=3, eval_steps=1, backup_dir=f"{out_dir}/backup",
    )
    np.savez(f"{out_dir}/weights{index}.npz", *model.get_weights())
    with open(f"{out_dir}/metrics{index}.json", "w") as handle:
        json.dump(metrics, handle)
    # What the Trainer's run_fn does next on every replica.
    save_outputs(model, metrics, f"{out_dir}/serving", f"{out_dir}/run")


if __name__ == "__main__":
    main(int(sys.argv[1]), [int(p) for p in sys.argv[2].split(",")], *sys.argv[3:6])
