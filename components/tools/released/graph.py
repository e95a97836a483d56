"""The released MARCO serving graph, read from its ``saved_model.pb`` without running it.

The released model is a TF1 SavedModel (tag ``serve``) whose signatures
``serving_default`` and ``predict_images`` take ``image_bytes`` (JPEG images, fed
straight into the output of its ``ParseExample`` node) and return ``classes`` and
``scores``, four per image, sorted by score. Inside, a ``map_fn`` decodes each JPEG,
crops the central square, resizes it to 599 x 599 (legacy bilinear grid) and scales it
to [-1, 1]; the stacked batch (:data:`NETWORK_INPUT`) enters the slim Inception
network, whose softmax goes through ``TopKV2`` and an index-to-name table.

:func:`read_released` checks that a folder holds that graph and returns what scoring
and importing need: the class name of each logit (the table's initial values), the
network's input size, and the tensor names to feed and fetch.
"""

from __future__ import annotations

import dataclasses

from components import filesystem
from components.names import BYTES_INPUT, CLASS_NAMES, CLASSES_OUTPUT, SCORES_OUTPUT

SAVED_MODEL_PB = "saved_model.pb"
SERVE_TAG = "serve"
SIGNATURE = "serving_default"
CHECKPOINT_PREFIX = ("variables", "variables")
# The stacked, preprocessed batch the network reads (float32 [N, 599, 599, 3] in
# [-1, 1]); feeding it skips the graph's JPEG decoding and preprocessing.
NETWORK_INPUT = "map/TensorArrayStack/TensorArrayGatherV3:0"
CLASS_TABLE_INIT = "index_to_string/table_init"
RESIZE_SIZE = "map/while/ResizeBilinear/size"
SCOPE = "Inception"


class NotReleasedModel(ValueError):
    """The folder does not hold the released MARCO serving graph; the message says why."""


@dataclasses.dataclass(frozen=True)
class ReleasedGraph:
    """What the tools need to know about a released-format SavedModel.

    Attributes:
        model_dir: the SavedModel folder.
        class_names: the released class name of each logit, in logit order
            (``Clear``, ``Crystals``, ``Other``, ``Precipitate`` in the release).
        class_order: for each logit, the index of its class in
            :data:`components.names.CLASS_NAMES`.
        input_size: side of the square images the network takes (599).
        image_input, classes_output, scores_output: tensor names of the signature.
    """

    model_dir: str
    class_names: tuple[str, ...]
    class_order: tuple[int, ...]
    input_size: int
    image_input: str
    classes_output: str
    scores_output: str
    network_input: str = NETWORK_INPUT

    @property
    def checkpoint_prefix(self) -> str:
        return filesystem.join(filesystem.join(self.model_dir, CHECKPOINT_PREFIX[0]),
                               CHECKPOINT_PREFIX[1])


def read_saved_model(model_dir: str):
    """The parsed ``saved_model.pb`` of ``model_dir`` (a SavedModel protocol buffer)."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString(filesystem.read_bytes(filesystem.join(model_dir, SAVED_MODEL_PB)))
    return saved


def serve_meta_graph(saved):
    """The MetaGraphDef tagged ``serve``, or None."""
    for meta_graph in saved.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            return meta_graph
    return None


def _class_names(nodes: dict, model_dir: str) -> tuple[str, ...]:
    init = nodes.get(CLASS_TABLE_INIT)
    if init is None or len(init.input) < 3:
        raise NotReleasedModel(f"{model_dir}: no class-name table ({CLASS_TABLE_INIT})")
    values = nodes.get(init.input[2].split(":")[0])
    if values is None or values.op != "Const":
        raise NotReleasedModel(f"{model_dir}: the class-name table is not initialised "
                               "from a constant")
    names = tuple(v.decode("utf-8") for v in values.attr["value"].tensor.string_val)
    wanted = {name.lower() for name in CLASS_NAMES}
    if len(names) != len(CLASS_NAMES) or {n.lower() for n in names} != wanted:
        raise NotReleasedModel(f"{model_dir}: the graph's classes are {list(names)}; "
                               f"MARCO's are {[n.capitalize() for n in CLASS_NAMES]}")
    return names


def _input_size(nodes: dict, model_dir: str) -> int:
    import numpy as np
    from tensorflow.python.framework import tensor_util

    node = nodes.get(RESIZE_SIZE)
    if node is None or node.op != "Const":
        raise NotReleasedModel(f"{model_dir}: no resize to the network's size ({RESIZE_SIZE})")
    height, width = (int(v) for v in np.asarray(tensor_util.MakeNdarray(node.attr["value"].tensor)))
    if height != width:
        raise NotReleasedModel(f"{model_dir}: the graph resizes to {height}x{width}, not a square")
    return height


def released_graph(saved, model_dir: str) -> ReleasedGraph:
    """Reads a parsed SavedModel as the released graph.

    Raises:
        NotReleasedModel: naming what is missing (signature, inputs, outputs, the class
            table or the network's input tensor).
    """
    meta_graph = serve_meta_graph(saved)
    if meta_graph is None:
        raise NotReleasedModel(f"{model_dir}: no MetaGraph tagged {SERVE_TAG!r}")
    signature = meta_graph.signature_def.get(SIGNATURE)
    if signature is None:
        raise NotReleasedModel(f"{model_dir}: no {SIGNATURE!r} signature")
    if (BYTES_INPUT not in signature.inputs or CLASSES_OUTPUT not in signature.outputs
            or SCORES_OUTPUT not in signature.outputs):
        raise NotReleasedModel(
            f"{model_dir}: signature {SIGNATURE!r} takes {sorted(signature.inputs)} and gives "
            f"{sorted(signature.outputs)}; the released model's takes {BYTES_INPUT!r} and "
            f"gives {CLASSES_OUTPUT!r} and {SCORES_OUTPUT!r}"
        )
    nodes = {node.name: node for node in meta_graph.graph_def.node}
    if NETWORK_INPUT.split(":")[0] not in nodes:
        raise NotReleasedModel(f"{model_dir}: no {NETWORK_INPUT.split(':')[0]} node (the "
                               "released graph's preprocessed batch)")
    names = _class_names(nodes, model_dir)
    order = tuple(CLASS_NAMES.index(name.lower()) for name in names)
    return ReleasedGraph(
        model_dir=model_dir,
        class_names=names,
        class_order=order,
        input_size=_input_size(nodes, model_dir),
        image_input=signature.inputs[BYTES_INPUT].name,
        classes_output=signature.outputs[CLASSES_OUTPUT].name,
        scores_output=signature.outputs[SCORES_OUTPUT].name,
    )


def read_released(model_dir: str) -> ReleasedGraph:
    """:func:`released_graph` of the SavedModel in ``model_dir``.

    Raises:
        NotReleasedModel: when the folder has no ``saved_model.pb`` or it is not the
            released graph.
    """
    model_dir = str(model_dir)
    if not filesystem.exists(filesystem.join(model_dir, SAVED_MODEL_PB)):
        raise NotReleasedModel(f"{model_dir}: no {SAVED_MODEL_PB}")
    return released_graph(read_saved_model(model_dir), model_dir)
