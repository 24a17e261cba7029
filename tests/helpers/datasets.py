"""Small detection data sets written to disk, as COCO JSON and as a VOC folder, for tests of every
layer that reads them."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

from PIL import Image

# Category ids out of order and with gaps: contiguous labels follow the sorted ids 3, 7, 12.
CATEGORIES = [{"id": 12, "name": "twelve"}, {"id": 3, "name": "three"}, {"id": 7, "name": "seven"}]
W, H = 40, 30


def _ann(ann_id: int, image_id: int, cat: int, bbox: list[float], crowd: int = 0) -> dict:
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": cat,
        "bbox": bbox,
        "area": bbox[2] * bbox[3],
        "iscrowd": crowd,
    }


def make_coco(root: Path) -> tuple[Path, Path]:
    """Three images: 1 with two boxes, a crowd box and a degenerate box; 2 without boxes; 3 with one box."""
    images = root / "images"
    images.mkdir(parents=True)
    for i, colour in ((1, (200, 10, 10)), (2, (10, 200, 10)), (3, (10, 10, 200))):
        image = Image.new("RGB", (W, H), colour)
        image.putpixel((0, 0), (255, 255, 255))  # marks the top-left corner for the flip test
        image.save(images / f"{i}.png")
    annotations = [
        _ann(1, 1, 12, [4.0, 5.0, 10.0, 8.0]),
        _ann(2, 1, 3, [20.0, 2.0, 15.0, 20.0]),
        _ann(3, 1, 7, [0.0, 0.0, 30.0, 25.0], crowd=1),
        _ann(4, 1, 7, [5.0, 5.0, 0.5, 10.0]),
        _ann(5, 3, 7, [1.0, 1.0, 6.0, 6.0]),
    ]
    coco = {
        "images": [{"id": i, "file_name": f"{i}.png", "width": W, "height": H} for i in (1, 2, 3)],
        "annotations": annotations,
        "categories": CATEGORIES,
    }
    ann_file = root / "instances.json"
    ann_file.write_text(json.dumps(coco))
    return images, ann_file


def write_voc(root: Path, images: dict[str, tuple[int, int, list[tuple]]], split: str = "trainval") -> Path:
    """A VOCdevkit year folder; objects are (name, xmin, ymin, xmax, ymax, difficult)."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name, (w, h, objects) in images.items():
        Image.new("RGB", (w, h), (30, 90, 150)).save(root / "JPEGImages" / f"{name}.jpg")
        objs = "".join(
            f"<object><name>{o[0]}</name><difficult>{o[5]}</difficult><bndbox><xmin>{o[1]}</xmin><ymin>{o[2]}</ymin>"
            f"<xmax>{o[3]}</xmax><ymax>{o[4]}</ymax></bndbox></object>\n"
            for o in objects
        )
        (root / "Annotations" / f"{name}.xml").write_text(
            f"<annotation>\n<filename>{name}.jpg</filename>\n<size><width>{w}</width><height>{h}</height><depth>3</depth></size>\n"
            f"{objs}</annotation>\n"
        )
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{n}\n" for n in images))
    return root


def write_png_header(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A PNG that claims `width` x `height` grey pixels: its header is all Pillow reads before its
    decompression-bomb check (20000 x 20000 is over twice `PIL.Image.MAX_IMAGE_PIXELS`)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1)))
        + chunk(b"IEND", b"")
    )
    return path
