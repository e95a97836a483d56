"""Data sets for the ingestion tests: synthetic institutions plus planted bad and odd inputs."""

from __future__ import annotations

import csv
import io
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from apache_beam.io.tfrecordio import _TFRecordUtil
from PIL import Image

from components import imagecheck
from components.catalogue import Catalogue, load_catalogue
from components.ingestion import beam_stages, tfexample
from components.names import (
    MARCO_ENCODED,
    MARCO_FILENAME,
    MARCO_ID,
    MARCO_LABEL,
    MARCO_RAW,
    MARCO_SOURCE,
)
from components.records import DUPLICATE_ID, UNMAPPED_LABEL
from components.tools.synth.writer import generate


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def drop_pixels(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """A small RGB image with some structure, so JPEG has something to encode."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 3 % 256, y * 5 % 256, (x + y) % 256], axis=-1)
    return (base + rng.integers(0, 30, size=base.shape)).clip(0, 255).astype(np.uint8)


def odd_images() -> dict[str, bytes]:
    """Real but unusual images that must be kept as read: name -> bytes."""
    rgb = Image.fromarray(drop_pixels())
    sixteen = (np.linspace(0, 65535, 64)[None, :].repeat(48, 0)).astype(np.uint16)
    return {
        "cmyk.jpg": encode(rgb.convert("CMYK"), "JPEG", quality=95),
        "grey.png": encode(rgb.convert("L"), "PNG"),
        "rgba.png": encode(rgb.convert("RGBA"), "PNG"),
        "sixteen.png": encode(Image.fromarray(sixteen), "PNG"),
        "palette.png": encode(rgb.convert("P"), "PNG"),
    }


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` (a decompression bomb)."""
    data = bytearray(encode(Image.new("L", (1, 1)), "PNG"))
    # IHDR chunk: 8-byte signature, 4 length, 4 type, then width and height.
    data[16:24] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF
    data[29:33] = struct.pack(">I", crc)
    return bytes(data)


def bad_images() -> dict[str, tuple[bytes, str]]:
    """Unusable image files: name -> (bytes, expected quarantine reason)."""
    good = encode(Image.fromarray(drop_pixels(seed=3)), "JPEG", quality=90)
    corrupt = bytearray(good)
    # A Huffman table of 0xff bytes: the header parses, decoding fails.
    table = good.index(b"\xff\xc4")
    corrupt[table + 4 : table + 21] = b"\xff" * 17
    return {
        "empty.jpg": (b"", imagecheck.EMPTY),
        "truncated.jpg": (good[: len(good) // 2], imagecheck.TRUNCATED),
        "corrupt.jpg": (bytes(corrupt), imagecheck.CORRUPT),
        "notes.jpg": (b"plate notes, not an image\n" * 20, imagecheck.NOT_AN_IMAGE),
        # 64 megapixels: above the default limit, below PIL's own bomb threshold.
        "bomb.png": (bomb_png(8_000, 8_000), imagecheck.TOO_LARGE),
    }


@dataclass
class PlantedSet:
    """A synthetic data set with planted inputs and what ingestion must make of them."""

    data_dir: Path
    catalogue: Catalogue
    synth_images: int
    # path (as written in quarantine) -> reason, for every planted refusal
    expected_quarantine: dict[str, str] = field(default_factory=dict)
    # file name -> bytes of the odd-but-valid images planted into GSK
    odd: dict[str, bytes] = field(default_factory=dict)

    @property
    def expected_examples(self) -> int:
        return self.synth_images + len(self.odd)


def _append_rows(manifest: Path, rows: list[dict[str, str]]) -> None:
    with manifest.open(newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle))
    with manifest.open("a", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, lineterminator="\n")
        for row in rows:
            writer.writerow(row)


def make_synthetic(out: Path, images: int, seed: int = 7, **options) -> dict:
    """A small synthetic data set in every institution's layout (quarter-size images)."""
    return generate(out, images, seed, scale=0.25, workers=1, **options)


def make_planted_set(out: Path, images: int = 40) -> PlantedSet:
    """Synthetic folders for every institution, plus planted inputs in GSK and HWMRI.

    GSK (CSV manifest): every unusable image kind, a missing file, an unmapped label,
    an empty label and a duplicated row, plus the odd-but-valid images. HWMRI (folder
    per label): the same file under two labels, which gives one image id twice.
    """
    summary = make_synthetic(out, images)
    catalogue = load_catalogue()
    planted = PlantedSet(out, catalogue, summary["images"])
    gsk_images = out / "GSK" / "images"
    gsk_images.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, (data, reason) in bad_images().items():
        (gsk_images / name).write_bytes(data)
        rows.append({"filename": name, "label": "clear"})
        planted.expected_quarantine[str(gsk_images / name)] = reason
    for name, data in odd_images().items():
        (gsk_images / name).write_bytes(data)
        rows.append({"filename": name, "label": "crystals"})
    planted.odd = odd_images()
    rows.append({"filename": "vanished.jpg", "label": "clear"})
    planted.expected_quarantine[str(gsk_images / "vanished.jpg")] = imagecheck.MISSING
    (gsk_images / "odd_label.jpg").write_bytes(odd_images()["cmyk.jpg"])
    rows.append({"filename": "odd_label.jpg", "label": "needles"})
    planted.expected_quarantine[str(gsk_images / "odd_label.jpg")] = UNMAPPED_LABEL
    (gsk_images / "no_label.jpg").write_bytes(odd_images()["cmyk.jpg"])
    rows.append({"filename": "no_label.jpg", "label": ""})
    planted.expected_quarantine[str(gsk_images / "no_label.jpg")] = beam_stages.MISSING_FIELD
    # The same row twice: one copy is kept, the later manifest line is quarantined.
    rows.append({"filename": "grey.png", "label": "crystals"})
    planted.expected_quarantine[str(gsk_images / "grey.png")] = DUPLICATE_ID
    _append_rows(out / "GSK" / "labels.csv", rows)

    hwmri = out / "HWMRI"
    first = next(p for p in sorted(hwmri.rglob("*")) if p.is_file())
    relative = first.relative_to(hwmri / first.relative_to(hwmri).parts[0])
    other_label = next(
        lab.native for lab in catalogue.get("HWMRI").labels
        if lab.native != first.relative_to(hwmri).parts[0]
    )
    copy = hwmri / other_label / relative
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_bytes(first.read_bytes())
    # Sorted locators: the copy under the label folder that sorts later is dropped.
    dropped = max(str(first), str(copy))
    planted.expected_quarantine[dropped] = DUPLICATE_ID
    return planted


def marco_record(
    data: bytes,
    source_id: int | None,
    raw_id: int | None,
    label: int | None = None,
    image_id: str = "",
    filename: str = "",
) -> bytes:
    """A record in the published MARCO shard format, written without TensorFlow."""
    features: dict = {MARCO_ENCODED: data}
    if source_id is not None:
        features[MARCO_SOURCE] = source_id
    if raw_id is not None:
        features[MARCO_RAW] = raw_id
    if label is not None:
        features[MARCO_LABEL] = label
    if image_id:
        features[MARCO_ID] = image_id
    if filename:
        features[MARCO_FILENAME] = filename
    return tfexample.encode_example(features)


def write_shard(path: Path, records: list[bytes], tail: bytes = b"") -> None:
    """A TFRecord file framed by Beam's TFRecord writer (WriteToTFRecord's), then ``tail``."""
    with path.open("wb") as handle:
        for record in records:
            _TFRecordUtil.write_record(handle, record)
        handle.write(tail)


def add_institution(catalogue_dir: Path, code: str = "NEWLAB") -> Path:
    """A sixth institution, laid out like GSK, with a label word no one else uses."""
    data = yaml.safe_load((catalogue_dir / "GSK.yaml").read_text())
    data.update(code=code, name="A new laboratory")
    data.pop("marco_source_id", None)
    data["layout"]["manifest"] = f"{code}/labels.csv"
    data["layout"]["image_root"] = f"{code}/images"
    data["labels"] = [
        {"native": "clear", "class": "clear"},
        {"native": "xtal", "class": "crystals"},
    ]
    path = catalogue_dir / f"{code}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path
