"""One image reader (issue 18): run, validate, calibration and export decode a photo with its EXIF orientation
applied, exactly as ``cv2.imread(IMREAD_COLOR)``; nothing in edgecv decodes image files any other way."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

ROOT = Path(__file__).resolve().parents[1]


def _jpeg_with_orientation(path: Path, orientation: int = 6) -> np.ndarray:
    """Write a 24x40 (HxW) JPEG carrying an EXIF Orientation tag; return the pixels as stored (not rotated)."""
    img = np.zeros((24, 40, 3), np.uint8)
    img[:, :20] = (0, 0, 255)  # left half red, right half blue: any rotation is visible
    img[:, 20:] = (255, 0, 0)
    img[:6, :] = (0, 255, 0)  # a green top band: tells a rotation from a flip
    ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 100])
    assert ok
    tiff = (
        b"II*\x00"
        + struct.pack("<I", 8)
        + struct.pack("<H", 1)
        + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0)
        + struct.pack("<I", 0)
    )
    app1 = b"Exif\x00\x00" + tiff
    raw = enc.tobytes()
    path.write_bytes(raw[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + raw[2:])
    return img


@pytest.fixture()
def photo(tmp_path: Path) -> tuple[Path, np.ndarray]:
    (tmp_path / "imgs").mkdir()
    p = tmp_path / "imgs" / "phone.jpg"
    _jpeg_with_orientation(p)
    upright = cv2.imread(str(p), cv2.IMREAD_COLOR)
    assert upright.shape == (40, 24, 3)  # the tag was honoured: stored 24x40, shown 40x24
    return p, upright


def _contract():
    from edgecv.bundle import Contract

    return Contract(
        task="classify", input_shape=[1, 3, 40, 24], class_names=["a", "b"], mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0]
    )


def test_the_reader_applies_exif_orientation(photo) -> None:
    from edgecv.data.readers import read_image

    p, upright = photo
    np.testing.assert_array_equal(read_image(p), upright)


def test_run_folder_source_applies_exif_orientation(photo) -> None:
    from edgecv.stream.sources import open_source, parse_source

    p, upright = photo
    src = open_source(parse_source(str(p.parent)))
    src.open(5.0)
    status, frame = src.read()
    assert status == "ok" and frame is not None
    np.testing.assert_array_equal(frame, upright)


def test_validate_and_calibration_apply_exif_orientation(photo, tmp_path: Path) -> None:
    from edgecv.quant.calib import ImageFolderSource
    from edgecv.tasks.preprocess import preprocess
    from edgecv.validate.detection import load_coco_samples
    from edgecv.validate.metrics import read_imagefolder

    p, upright = photo
    contract = _contract()
    want = preprocess(upright, contract)[0]
    # validate, classification: an ImageFolder tree
    (tmp_path / "val" / "a").mkdir(parents=True)
    (tmp_path / "val" / "a" / "phone.jpg").write_bytes(p.read_bytes())
    feed, _ = next(iter(read_imagefolder(tmp_path / "val", contract)))
    np.testing.assert_array_equal(feed[contract.input_name], want)
    # validate, detection: a COCO JSON beside the image
    (p.parent / "val.json").write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": p.name, "width": 24, "height": 40}],
                "annotations": [],
                "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
            }
        )
    )
    img, _, _ = load_coco_samples(str(p.parent / "val.json"))[0]
    np.testing.assert_array_equal(img, upright)
    # calibration
    np.testing.assert_array_equal(next(iter(ImageFolderSource(p.parent, contract)))[contract.input_name], want)


def test_export_reference_photos_apply_exif_orientation(photo) -> None:
    pytest.importorskip("torch")
    from edgecv.export.onnx import _load_photos

    p, upright = photo
    np.testing.assert_array_equal(_load_photos([p])[0][1], upright)


def test_no_other_image_decoder_in_the_package() -> None:
    """Every image file is decoded by edgecv.data.readers (one place owns EXIF, bit depth and errors)."""
    bad = []
    for f in sorted((ROOT / "edgecv").rglob("*.py")):
        if f.name == "readers.py" and f.parent.name == "data":
            continue
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"\bimread\(", line):
                bad.append(f"{f.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not bad, "\n".join(bad)
