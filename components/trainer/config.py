"""Training hyperparameters: the paper's schedule and smaller presets for CPUs.

A :class:`TrainingConfig` travels to the Trainer as plain JSON in TFX's
``custom_config`` so that the same values reach a local run, a Kubeflow pod and a
Vertex AI worker pool unchanged. The presets below are the ``training`` of the
pipeline presets (:data:`pipeline.config.PRESETS`); like the network shapes they
name, they load without TensorFlow.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

from components.model.inception import PRESETS as MODEL_PRESETS

CUSTOM_CONFIG_KEY = "marco_training"
# Largest in-memory cache of decoded training images (``cache_decoded``).
DECODED_CACHE_LIMIT_MB = 4096
OPTIMIZERS = ("rmsprop", "adam")
# What the ``finetune`` preset trains: the last three Inception blocks and the logits.
FINETUNE_TRAINABLE_LAYERS = "Mixed_7*,Logits/*"


def _json_types(hint: Any) -> tuple[type, ...]:
    """JSON value types accepted for a field annotated ``hint`` (``float | None``...)."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    members = typing.get_args(hint) if union else (hint,)
    accepted: list[type] = []
    for member in members:
        accepted.append(member)
        if member is float:
            accepted.append(int)
    return tuple(accepted)


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """How to train the modified Inception-v3.

    Attributes:
        model: name of a model preset in ``components.model.inception.PRESETS``.
        batch_size: examples per replica per step (the paper: 64 on one K80); the
            global batch is this times the number of replicas.
        optimizer: ``rmsprop`` (the paper's) or ``adam``. The ``demo`` preset uses Adam:
            from scratch, in the few hundred CPU seconds it has, RMSProp left the demo
            network at the majority-class rate (50.3% eval after 600 steps at 0.01),
            while Adam at 0.002 reached 71.6% after 1,000 steps and 79.9% after 2,500
            (``marco demo``, evaluated at 195 pixels; 81.7% at its serving size, 224).
        learning_rate: initial learning rate for one replica's batch (0.045).
        scale_learning_rate: multiply the learning rate by the number of replicas, the
            linear-scaling rule that keeps the per-example step when the global batch
            grows with the replicas.
        rmsprop_decay: RMSProp's moving-average decay of squared gradients (rho).
        momentum: RMSProp momentum.
        epsilon: the optimiser's epsilon (RMSProp 0.1 as in the paper, larger than
            Keras' default for stability early in training; Adam wants a small one).
        lr_decay_rate: learning rate multiplier applied every ``lr_decay_epochs``.
        lr_decay_epochs: epochs between decays (2 in the paper).
        ema_decay: decay of the moving average of the weights used for evaluation and
            export (slim's 0.9999); ``None`` trains and exports the raw weights.
            Short runs need a smaller value, or the average stays near the random
            initial weights.
        class_weights: weight the loss by inverse class frequency. Off in the paper:
            with it, the rarer classes (crystals, other) gain recall at the cost of
            precision, and accuracy on the natural class mix drops a little.
        crop_scale: scale of the random training crop (see
            ``components.model.preprocessing.random_patch``): ``None`` cuts the paper's
            patches at the image's own resolution; a number resizes the short side to
            that multiple of the input size first, which small presets need so that a
            crop still shows the drop. It also sets :attr:`serving_size`.
        cache_decoded: decode each training image once, at the patch scale of
            ``crop_scale``, keep the 8-bit result in memory and redo only the random
            patch, flips and colour distortion each epoch. Decoding full-size
            photographs takes over a third of a ``demo`` training step on 2 CPU cores.
            Needs ``crop_scale``; skipped, with a warning, when the training set would
            not fit in ``DECODED_CACHE_LIMIT_MB``.
        shuffle_buffer: examples in the training shuffle buffer.
        checkpoint_every: steps between preemption checkpoints.
        batch_norm_decay: overrides the model preset's batch-norm moving-average
            decay; runs of a few hundred steps need a fast one (0.9) or evaluation
            uses statistics that are still near their initial values.
        seed: makes shuffling and augmentation deterministic when set.
        trainable_layers: which layers training changes, as comma-separated glob
            patterns over the network's layer names (slim's scopes, see
            :mod:`components.model.inception`): ``"Mixed_7*,Logits/*"`` trains the
            last three Inception blocks and the logits and freezes everything below,
            batch-norm statistics included. None trains every layer. Meant for a warm
            start (``init_from``); see :mod:`components.trainer.warm_start`.
    """

    model: str = "paper"
    optimizer: str = "rmsprop"
    batch_size: int = 64
    learning_rate: float = 0.045
    scale_learning_rate: bool = True
    rmsprop_decay: float = 0.9
    momentum: float = 0.9
    epsilon: float = 0.1
    lr_decay_rate: float = 0.94
    lr_decay_epochs: float = 2.0
    ema_decay: float | None = 0.9999
    class_weights: bool = False
    crop_scale: float | None = None
    cache_decoded: bool = False
    shuffle_buffer: int = 2048
    checkpoint_every: int = 500
    batch_norm_decay: float | None = None
    seed: int | None = None
    trainable_layers: str | None = None

    def __post_init__(self) -> None:
        if self.model not in MODEL_PRESETS:
            raise ValueError(
                f"model preset {self.model!r} is unknown (one of {sorted(MODEL_PRESETS)})"
            )
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer {self.optimizer!r} is unknown (one of {list(OPTIMIZERS)})"
            )
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if not 0 < self.lr_decay_rate <= 1:
            raise ValueError(f"lr_decay_rate must be in (0, 1], got {self.lr_decay_rate}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in (0, 1) or None, got {self.ema_decay}")
        if self.crop_scale is not None and self.crop_scale < 1.0:
            raise ValueError(f"crop_scale must be >= 1 or None, got {self.crop_scale}")
        if self.cache_decoded and self.crop_scale is None:
            raise ValueError(
                "cache_decoded needs crop_scale: native-resolution patches (crop_scale "
                "None) are cut from the full image, which is too large to cache"
            )
        if self.trainable_layers is not None and not any(
            p.strip() for p in self.trainable_layers.split(",")
        ):
            raise ValueError(
                f"trainable_layers must name at least one layer pattern (or be None for "
                f"every layer), got {self.trainable_layers!r}"
            )

    @property
    def model_config(self):
        preset = MODEL_PRESETS[self.model]
        if self.batch_norm_decay is None:
            return preset
        return dataclasses.replace(preset, batch_norm_decay=self.batch_norm_decay)

    @property
    def serving_size(self) -> int:
        """Side of the square that evaluation and the exported model resize images to.

        The network always sees the whole centre square of a photograph at evaluation
        and serving time. Trained on patches cut at the image's own resolution
        (``crop_scale`` None, the paper) it sees that square at ``input_size``, as the
        released model does. Trained on patches of an image whose short side was
        resized to ``input_size * crop_scale``, it sees the square at that side
        instead, so that crystals, drops and grain have the size in pixels they had
        in training; at ``input_size`` they would be ``crop_scale`` times smaller.
        The network is fully convolutional up to its final average pool, which is
        rebuilt for the larger map, so the trained weights apply unchanged. For the
        ``demo`` model (195-pixel patches, crop scale 1.15) serving at 224 pixels
        raised eval accuracy from 79.9% to 84.0% and from 78.1% to 79.9% for two
        trained models; the ``paper`` preset keeps the released model's 599.
        """
        from components.model.preprocessing import training_scale_side

        size = self.model_config.input_size
        if self.crop_scale is None:
            return size
        return training_scale_side(size, self.crop_scale)

    def to_json_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> TrainingConfig:
        """Reads settings written by :meth:`to_json_dict` (or by hand), checking types.

        JSON has no schema here, so a hand-edited ``"false"`` for a flag or ``"64"``
        for a batch size would otherwise pass: a non-empty string is true, and the
        number would fail deep inside training. Each value must have its field's type
        (an integer is accepted where a float is expected; a bool never counts as a
        number).

        Raises:
            ValueError: when ``data`` is not an object, naming each unknown setting,
                or the first value of the wrong type with the type expected.
        """
        if not isinstance(data, Mapping):
            raise ValueError(
                f"training settings must be a JSON object of name: value, got {data!r}"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training settings {unknown} (known: {sorted(known)})")
        hints = typing.get_type_hints(cls)
        for name, value in data.items():
            expected = _json_types(hints[name])
            # bool is a subclass of int: a flag is no number and a number no flag.
            if (isinstance(value, bool) and bool not in expected) or not isinstance(
                value, expected
            ):
                names = " or ".join("null" if t is type(None) else t.__name__ for t in expected)
                raise ValueError(f"training setting {name!r} must be {names}, got {value!r}")
        return cls(**data)

    @classmethod
    def from_custom_config(cls, custom_config: Mapping[str, Any] | None) -> TrainingConfig:
        """Reads the settings the pipeline put in the Trainer's ``custom_config``."""
        return cls.from_json_dict((custom_config or {}).get(CUSTOM_CONFIG_KEY, {}))


PAPER = TrainingConfig()
DEMO = TrainingConfig(
    model="demo", optimizer="adam", batch_size=32, learning_rate=0.002, epsilon=1e-7,
    lr_decay_epochs=4.0, ema_decay=0.99,
    crop_scale=1.15, cache_decoded=True, shuffle_buffer=1024, checkpoint_every=100,
)
TINY = TrainingConfig(
    model="tiny", batch_size=8, learning_rate=0.01, ema_decay=None, crop_scale=1.15,
    cache_decoded=True,
    shuffle_buffer=64, batch_norm_decay=0.9,
    checkpoint_every=5, seed=7,
)
# Fine-tuning an earlier paper-preset model (``--init-from``, e.g. the imported
# released MARCO model) on a lab's own images, on a CPU: the paper network at 599
# pixels with the paper's augmentation (patches at the photograph's own resolution,
# flips, colour), only Mixed_7a-7c and the logits trained. The frozen layers run in
# inference mode and need no gradients, which makes a step cheaper than one of full
# training (``benchmarks/finetune_throughput.py``). RMSProp as in the paper at a
# tenth of its learning rate, since the weights start trained; a fast batch-norm
# decay so that the trainable blocks' statistics follow the lab's images within a
# few hundred steps; no moving average of the weights, which after so few steps
# would still be close to the initial ones.
FINETUNE = TrainingConfig(
    model="paper", batch_size=8, learning_rate=0.0045, scale_learning_rate=True,
    lr_decay_epochs=2.0, ema_decay=None, batch_norm_decay=0.99,
    shuffle_buffer=512, checkpoint_every=50,
    trainable_layers=FINETUNE_TRAINABLE_LAYERS,
)
