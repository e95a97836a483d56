"""TF Serving's view of a pushed MARCO model: how it loads it and how its REST API maps JSON.

Existing MARCO clients send the released model's request body to TF Serving's REST
predict endpoint (``POST /v1/models/<name>:predict``)::

    {"instances": [{"image_bytes": {"b64": "<base64 JPEG>"}}, ...]}

and read ``{"predictions": [{"classes": [...], "scores": [...]}, ...]}`` back.
:class:`ServedModel` loads a SavedModel the way TF Serving's C++ loader does (the
MetaGraph imported into one session, signatures run by their tensor names) and
:meth:`ServedModel.predict_rest` applies TF Serving's JSON mapping: the row format
(``instances``) and the columnar one (``inputs``), ``{"b64": ...}`` objects decoded
to bytes for string inputs, instances stacked into a batch, outputs sliced back into
one prediction per instance, and any failure of the model (such as an image it cannot
decode) answered with an HTTP error status and ``{"error": "<message>"}``. It lets a
test, or a lab checking a model before deploying it, see exactly what a client would
get, without a TF Serving container.

:func:`predict_request` and :func:`scores_by_class` are the client side: the body as
the released model's instructions build it (one ``{"image_bytes": {"b64": ...}}``
object per image), and each prediction read back as class name to score.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from components.names import BYTES_INPUT
from components.names import SERVING_DEFAULT as DEFAULT_SIGNATURE

SERVE_TAG = "serve"

# HTTP statuses TF Serving's REST server gives TensorFlow's error codes.
_HTTP_STATUS = {
    tf.errors.INVALID_ARGUMENT: 400,
    tf.errors.FAILED_PRECONDITION: 400,
    tf.errors.OUT_OF_RANGE: 400,
    tf.errors.NOT_FOUND: 404,
    tf.errors.ALREADY_EXISTS: 409,
    tf.errors.PERMISSION_DENIED: 403,
    tf.errors.UNAUTHENTICATED: 401,
    tf.errors.RESOURCE_EXHAUSTED: 429,
    tf.errors.UNIMPLEMENTED: 501,
    tf.errors.UNAVAILABLE: 503,
    tf.errors.DEADLINE_EXCEEDED: 504,
}

# Pieces of TensorFlow's error text that name graph nodes rather than the problem.
_NODE_NOISE = re.compile(r"\{\{[^}]*\}\}|\[\[[^\]]*\]\]|\[Op:[^\]]*\]")
_NOISE_LINES = ("Graph execution error", "Detected at node", "<stack traces unavailable>")


class RestError(ValueError):
    """A request TF Serving would refuse; ``status`` is the HTTP status it answers with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def describe_error(error: BaseException) -> str:
    """TensorFlow's message for ``error`` without the graph-node decorations.

    ``jpeg::Uncompress failed. Invalid JPEG data or crop window.`` rather than the same
    words wrapped in "Graph execution error", node names and op names.
    """
    text = getattr(error, "message", None) or str(error)
    kept = []
    for line in text.splitlines():
        line = _NODE_NOISE.sub("", line).strip()
        if line and not any(line.startswith(noise) for noise in _NOISE_LINES):
            kept.append(line)
    return " ".join(kept) or type(error).__name__


def http_status(error: tf.errors.OpError) -> int:
    """The HTTP status TF Serving's REST API answers a TensorFlow error with."""
    return _HTTP_STATUS.get(error.error_code, 500)


def predict_request(
    images: Iterable[bytes], signature_name: str | None = None
) -> dict[str, Any]:
    """The REST predict body a MARCO client sends for ``images`` (encoded JPEG/PNG bytes)."""
    body: dict[str, Any] = {
        "instances": [
            {BYTES_INPUT: {"b64": base64.b64encode(image).decode("ascii")}} for image in images
        ]
    }
    if signature_name:
        body["signature_name"] = signature_name
    return body


def scores_by_class(prediction: Mapping[str, Sequence]) -> dict[str, float]:
    """One ``{"classes": [...], "scores": [...]}`` prediction as class name -> score."""
    return dict(zip(prediction["classes"], (float(s) for s in prediction["scores"]), strict=True))


class ServedModel:
    """A SavedModel as TF Serving holds it: one session with the serving MetaGraph.

    This is also the quickest way to load an exported Keras model for inference: the
    graph is imported as it was saved, where ``tf.saved_model.load`` rebuilds a Python
    function for every traced layer call (about 25 s against 7 s for the ``paper``
    model on two busy cores). Runs may come from several threads at once.

    Args:
        model_dir: a SavedModel folder (one version of a serving folder).

    Raises:
        OSError: if the folder holds no readable SavedModel.
    """

    def __init__(self, model_dir: str) -> None:
        from tensorflow.python.util import deprecation

        self.model_dir = str(model_dir)
        graph = tf.Graph()
        self._session = tf.compat.v1.Session(graph=graph)
        try:
            with graph.as_default(), deprecation.silence():
                meta_graph = tf.compat.v1.saved_model.loader.load(
                    self._session, [SERVE_TAG], self.model_dir
                )
        except (OSError, RuntimeError, tf.errors.OpError) as exc:
            self._session.close()
            raise OSError(f"cannot load a SavedModel from {self.model_dir}: "
                          f"{describe_error(exc)}") from exc
        graph.finalize()
        self._signatures = dict(meta_graph.signature_def)

    @property
    def signature_names(self) -> list[str]:
        return sorted(self._signatures)

    def signature(self, name: str):
        """The SignatureDef ``name``; KeyError naming the ones there are otherwise."""
        try:
            return self._signatures[name]
        except KeyError:
            raise KeyError(
                f"the SavedModel at {self.model_dir} has no signature {name!r} "
                f"(it has: {', '.join(self.signature_names)})"
            ) from None

    def run(self, signature_name: str, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Runs one signature on named inputs; returns its named outputs.

        Raises:
            KeyError: for an unknown signature.
            RestError: for missing or unknown input names.
            tf.errors.OpError: when the model fails on these inputs (e.g. bad images).
        """
        signature = self.signature(signature_name)
        expected = set(signature.inputs)
        if set(inputs) != expected:
            raise RestError(
                f"signature {signature_name!r} takes inputs {sorted(expected)}, "
                f"got {sorted(inputs)}"
            )
        feeds = {signature.inputs[key].name: value for key, value in inputs.items()}
        names = sorted(signature.outputs)
        values = self._session.run([signature.outputs[key].name for key in names], feeds)
        return dict(zip(names, values, strict=True))

    def predict_rest(self, body: str | bytes | Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        """Answers a REST predict body as TF Serving would: ``(HTTP status, JSON object)``.

        Never raises for a bad request or an image the model cannot read: like TF
        Serving, it answers with an error status and ``{"error": message}``.
        """
        try:
            request = json.loads(body) if isinstance(body, str | bytes) else dict(body)
            if not isinstance(request, dict):
                raise RestError("the request body must be a JSON object")
            name = request.get("signature_name", DEFAULT_SIGNATURE)
            if not isinstance(name, str):
                raise RestError("'signature_name' must be a string")
            try:
                signature = self.signature(name)
            except KeyError as exc:
                raise RestError(exc.args[0], status=404) from None
            dtypes = {k: tf.dtypes.as_dtype(v.dtype) for k, v in signature.inputs.items()}
            row_format, inputs = _request_tensors(request, dtypes)
            outputs = self.run(name, inputs)
            return 200, _response(outputs, row_format)
        except RestError as exc:
            return exc.status, {"error": str(exc)}
        except json.JSONDecodeError as exc:
            return 400, {"error": f"the request body is not JSON: {exc}"}
        except tf.errors.OpError as exc:
            return http_status(exc), {"error": describe_error(exc)}
        except ValueError as exc:  # a value the input cannot take (e.g. its shape)
            return 400, {"error": str(exc)}

    def close(self) -> None:
        self._session.close()


def _decode_value(value: Any, dtype: tf.DType) -> Any:
    """One JSON value as TF Serving reads it for an input of ``dtype``."""
    if isinstance(value, list):
        return [_decode_value(v, dtype) for v in value]
    if isinstance(value, dict):
        if set(value) != {"b64"} or not isinstance(value["b64"], str):
            raise RestError('an object value must be {"b64": <string>}, got keys '
                            f"{sorted(value)}")
        if dtype != tf.string:
            raise RestError(f"a b64 value was given for a {dtype.name} input")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RestError(f"invalid base64 data: {exc}") from None
    if dtype == tf.string:
        if not isinstance(value, str):
            raise RestError(f"a string input needs a string or a b64 object, got {value!r}")
        return value.encode("utf-8")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RestError(f"a {dtype.name} input needs numbers, got {value!r}")
    return value


def _as_array(values: list, dtype: tf.DType, name: str) -> np.ndarray:
    try:
        array = np.array(values, dtype=object if dtype == tf.string else dtype.as_numpy_dtype)
    except ValueError as exc:
        raise RestError(f"input {name!r}: instances differ in shape ({exc})") from None
    if array.dtype == object and dtype != tf.string:
        raise RestError(f"input {name!r}: instances differ in shape")
    return array


def _request_tensors(
    request: Mapping[str, Any], dtypes: Mapping[str, tf.DType]
) -> tuple[bool, dict[str, np.ndarray]]:
    """(row format?, input name -> batched array) from a request, as TF Serving maps it."""
    if ("instances" in request) == ("inputs" in request):
        raise RestError("the request needs exactly one of 'instances' (row format) or "
                        "'inputs' (columnar format)")
    names = sorted(dtypes)
    if "instances" in request:
        instances = request["instances"]
        if not isinstance(instances, list) or not instances:
            raise RestError("'instances' must be a non-empty list")
        named = all(isinstance(i, dict) and set(i) != {"b64"} for i in instances)
        if named:
            columns: dict[str, list] = {name: [] for name in names}
            for index, instance in enumerate(instances):
                if set(instance) != set(names):
                    raise RestError(f"instance {index} has keys {sorted(instance)}; the "
                                    f"signature's inputs are {names}")
                for name in names:
                    columns[name].append(_decode_value(instance[name], dtypes[name]))
        elif len(names) == 1:
            columns = {names[0]: [_decode_value(i, dtypes[names[0]]) for i in instances]}
        else:
            raise RestError(f"the signature has inputs {names}: each instance must be an "
                            "object naming them")
        return True, {n: _as_array(v, dtypes[n], n) for n, v in columns.items()}
    inputs = request["inputs"]
    if isinstance(inputs, dict) and set(inputs) != {"b64"}:
        if set(inputs) != set(names):
            raise RestError(f"'inputs' has keys {sorted(inputs)}; the signature's inputs "
                            f"are {names}")
        values = {n: _decode_value(inputs[n], dtypes[n]) for n in names}
    elif len(names) == 1:
        values = {names[0]: _decode_value(inputs, dtypes[names[0]])}
    else:
        raise RestError(f"the signature has inputs {names}: 'inputs' must be an object")
    return False, {n: _as_array(v, dtypes[n], n) for n, v in values.items()}


def _json_value(name: str, value: np.ndarray | Any) -> Any:
    """An output value as TF Serving writes it: bytes named ``*_bytes`` as b64 objects."""
    if isinstance(value, np.ndarray):
        return [_json_value(name, v) for v in value]
    if isinstance(value, bytes):
        if name.endswith("_bytes"):
            return {"b64": base64.b64encode(value).decode("ascii")}
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


def _response(outputs: Mapping[str, np.ndarray], row_format: bool) -> dict[str, Any]:
    if not row_format:
        values = {k: _json_value(k, v) for k, v in outputs.items()}
        return {"outputs": next(iter(values.values())) if len(values) == 1 else values}
    sizes = {v.shape[0] if v.ndim else None for v in outputs.values()}
    if len(sizes) != 1 or None in sizes:
        raise RestError("the outputs do not share a batch size, so they cannot be "
                        "returned in row format; use the columnar 'inputs' format", 400)
    (batch,) = sizes
    predictions = []
    for index in range(batch):
        row = {k: _json_value(k, v[index]) for k, v in outputs.items()}
        predictions.append(next(iter(row.values())) if len(row) == 1 else row)
    return {"predictions": predictions}
