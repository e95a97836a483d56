"""Reads and writes serialised tf.Example protos without TensorFlow; reads TFRecord files.

Ingestion's Beam workers only move bytes around: they build one flat tf.Example per
image and parse the published MARCO shards. ``tf.train.Example`` would need TensorFlow
in every worker process. ``benchmarks/example_encoding.py`` measures both in one
process (``benchmarks/results/example_encoding.json``, 2 cores shared with other
work): with a 150 kB image, an example takes 270 us to encode here and 246 us with
``tf.train.Example``, and 158 and 116 us to decode, either way a few percent of the
10 ms the rest of ingestion spends on an image (105 images/s in one process,
``benchmarks/results/ingestion.json``). A worker that imports TensorFlow, however,
starts 5.1 s later and holds 444 MB more (199 MB without it), in every worker of a
multi-processing DirectRunner or a Dataflow job: the faster encoder would repay the
time after about 200,000 examples per worker, and never the memory. The protobuf
wire format of ``tensorflow.Example`` is small and frozen (field numbers of
``tensorflow/core/example/{example,feature}.proto``), so it is encoded and decoded
here; the tests compare both directions with ``tf.train.Example``. TFRecord files are
read by Beam's own reader and written by Beam's ``WriteToTFRecord``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, Sequence

from apache_beam.io.tfrecordio import _TFRecordUtil

# tensorflow.Example.features = 1; Features.feature (map<string, Feature>) = 1;
# map entry key = 1, value = 2; Feature.bytes_list = 1, float_list = 2, int64_list = 3;
# BytesList/FloatList/Int64List.value = 1.
_LEN = 2
_VARINT = 0
_FIXED32 = 5
_FIXED64 = 1

FeatureValue = bytes | str | int | float | Sequence[bytes] | Sequence[str] | Sequence[int]


class ExampleDecodeError(ValueError):
    """The bytes are not a well-formed serialised tf.Example."""


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 is encoded as its two's complement, 10 bytes
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint((number << 3) | _LEN) + _varint(len(payload)) + payload


def _feature(values: FeatureValue) -> bytes:
    if isinstance(values, (bytes, str, int, float)):
        values = [values]
    values = list(values)
    if values and all(isinstance(v, bool) for v in values):
        raise TypeError("booleans are not a tf.Example type; store 0/1 as int")
    if all(isinstance(v, int) for v in values) and values:
        packed = b"".join(_varint(v) for v in values)
        return _field(3, _field(1, packed))
    if all(isinstance(v, float) for v in values) and values:
        packed = struct.pack(f"<{len(values)}f", *values)
        return _field(2, _field(1, packed))
    items = []
    for v in values:
        if isinstance(v, str):
            v = v.encode("utf-8")
        if not isinstance(v, bytes):
            raise TypeError(f"cannot mix {type(v).__name__} with bytes in one feature")
        items.append(_field(1, v))
    return _field(1, b"".join(items))


def encode_example(features: Mapping[str, FeatureValue]) -> bytes:
    """Serialise a flat feature dict as a ``tf.train.Example``.

    ``str`` and ``bytes`` become a BytesList, ``int`` an Int64List, ``float`` a
    FloatList; a list of them gives several values. Keys are written sorted, so the
    same features always serialise to the same bytes.
    """
    entries = []
    for key in sorted(features):
        entry = _field(1, key.encode("utf-8")) + _field(2, _feature(features[key]))
        entries.append(_field(1, entry))
    return _field(1, b"".join(entries))


def _read_varint(data: memoryview, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise ExampleDecodeError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ExampleDecodeError("varint longer than 10 bytes")


def _fields(data: memoryview) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value) triples; LEN values are memoryviews."""
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _read_varint(data, pos)
        elif wire == _LEN:
            length, pos = _read_varint(data, pos)
            if pos + length > len(data):
                raise ExampleDecodeError("length-delimited field runs past the end")
            value = data[pos : pos + length]
            pos += length
        elif wire == _FIXED32:
            value = data[pos : pos + 4]
            pos += 4
        elif wire == _FIXED64:
            value = data[pos : pos + 8]
            pos += 8
        else:
            raise ExampleDecodeError(f"unsupported wire type {wire}")
        yield number, wire, value


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _decode_feature(data: memoryview) -> list:
    values: list = []
    for kind, _, payload in _fields(data):
        for number, wire, value in _fields(payload):  # type: ignore[arg-type]
            if number != 1:
                continue
            if kind == 1:
                values.append(bytes(value))  # type: ignore[arg-type]
            elif kind == 3 and wire == _LEN:
                pos = 0
                while pos < len(value):  # type: ignore[arg-type]
                    item, pos = _read_varint(value, pos)  # type: ignore[arg-type]
                    values.append(_signed(item))
            elif kind == 3:
                values.append(_signed(value))  # type: ignore[arg-type]
            elif kind == 2 and wire == _LEN:
                values.extend(struct.unpack(f"<{len(value) // 4}f", value))  # type: ignore
            elif kind == 2:
                values.append(struct.unpack("<f", value)[0])  # type: ignore[arg-type]
    return values


def decode_example(data: bytes) -> dict[str, list]:
    """Parse a serialised ``tf.train.Example`` into ``{key: [values]}``.

    Bytes features give ``bytes`` values, int64 features ``int`` and float features
    ``float``. Unknown fields are skipped, as protobuf parsers do.

    Raises:
        ExampleDecodeError: if the bytes are not a well-formed Example.
    """
    out: dict[str, list] = {}
    view = memoryview(data)
    for number, wire, features in _fields(view):
        if number != 1 or wire != _LEN:
            continue
        for entry_number, entry_wire, entry in _fields(features):  # type: ignore[arg-type]
            if entry_number != 1 or entry_wire != _LEN:
                continue
            key = ""
            values: list = []
            for part, _, value in _fields(entry):  # type: ignore[arg-type]
                if part == 1:
                    key = bytes(value).decode("utf-8")  # type: ignore[arg-type]
                elif part == 2:
                    values = _decode_feature(value)  # type: ignore[arg-type]
            out[key] = values
    return out


class TFRecordError(ValueError):
    """A TFRecord file is truncated or fails its checksums."""


def read_tfrecords(handle) -> Iterator[bytes]:
    """Yield the records of an open (already decompressed) TFRecord file.

    Records are read by Beam's own TFRecord reader, the one behind ``ReadFromTFRecord``
    (and the writer behind ``WriteToTFRecord`` frames them).

    Raises:
        TFRecordError: on a truncated record or a checksum mismatch; records before
            it have already been yielded.
    """
    while True:
        try:
            record = _TFRecordUtil.read_record(handle)
        except ValueError as exc:
            # Beam's message ends with the record's bytes in hex: keep the reason only.
            raise TFRecordError(str(exc).split(":", 1)[0]) from None
        if record is None:
            return
        yield record
