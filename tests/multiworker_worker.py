"""One worker of the two-process MultiWorkerMirroredStrategy test (run as a script)."""

from __future__ import annotations

import json
import os
import sys

import components  # noqa: F401  (Keras 2 before TensorFlow)


def main(index: int, ports: list[int], data_dir: str, out_dir: str) -> None:
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"localhost:{p}" for p in ports]},
        "task": {"type": "worker", "index": index},
    })
    import numpy as np

    from components.trainer.config import TINY
    from components.trainer.train import train_model

    model, metrics = train_model(
        TINY, f"{data_dir}/train*.gz", f"{data_dir}/eval*.gz", f"{out_dir}/run{index}",
        train_steps=3, eval_steps=1, backup_dir=f"{out_dir}/backup{index}",
    )
    np.savez(f"{out_dir}/weights{index}.npz", *model.get_weights())
    with open(f"{out_dir}/metrics{index}.json", "w") as handle:
        json.dump(metrics, handle)


if __name__ == "__main__":
    main(int(sys.argv[1]), [int(p) for p in sys.argv[2].split(",")], sys.argv[3], sys.argv[4])
