"""Loaders: each layout reads correctly, and each kind of bad data raises DataError naming the file and line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgecv.errors import DataError

pytestmark = [pytest.mark.torch, pytest.mark.stream]

cv2 = pytest.importorskip("cv2")
torch = pytest.importorskip("torch")

from edgecv.data.datasets import (
    CocoDetection,
    ImageFolderDataset,
    ImageListDataset,
    ImageTransform,
    SegmentationFolder,
    TransformedDataset,
    YoloDetection,
    detection_collate,
    open_dataset,
)


def _img(path: Path, h: int = 20, w: int = 30, value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.full((h, w, 3), value, np.uint8)
    a[0, 0] = (1, 2, 3)  # B, G, R
    cv2.imwrite(str(path), a)
    return path


# --------------------------------------------------------------------------------------------- classify


def test_imagefolder(tmp_path: Path) -> None:
    _img(tmp_path / "dog/a.png")
    _img(tmp_path / "cat/b.png")
    _img(tmp_path / "cat/c.jpg")
    (tmp_path / "cat/notes.txt").write_text("x")
    ds = ImageFolderDataset(tmp_path)
    assert ds.classes == ["cat", "dog"] and len(ds) == 3 and ds.targets == [0, 0, 1]
    img, t = ds[2]
    assert img.shape == (20, 30, 3) and t == 1 and tuple(img[0, 0]) == (1, 2, 3)


def test_unreadable_and_missing_image(tmp_path: Path) -> None:
    _img(tmp_path / "a/ok.png")
    (tmp_path / "a/broken.png").write_bytes(b"\x89PNG not really")
    ds = ImageFolderDataset(tmp_path)
    bad = next(i for i, (p, _) in enumerate(ds.samples) if p.name == "broken.png")
    with pytest.raises(DataError, match=r"broken\.png: unreadable image"):
        ds[bad]
    (tmp_path / "a/ok.png").unlink()
    good = next(i for i, (p, _) in enumerate(ds.samples) if p.name == "ok.png")
    with pytest.raises(DataError, match=r"ok\.png: missing image file"):
        ds[good]
    with pytest.raises(DataError, match="data folder not found"):
        ImageFolderDataset(tmp_path / "nope")


# --------------------------------------------------------------------------------------------- COCO


def _coco(tmp_path: Path, anns: list[dict], images: list[dict] | None = None) -> Path:
    _img(tmp_path / "images/x.png", 20, 30)
    coco = {
        "images": images or [{"id": 1, "file_name": "images/x.png", "width": 30, "height": 20}],
        "annotations": anns,
        "categories": [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}],
    }
    f = tmp_path / "ann.json"
    f.write_text(json.dumps(coco))
    return f


def test_coco_reads_boxes_xyxy_and_maps_categories(tmp_path: Path) -> None:
    f = _coco(
        tmp_path,
        [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [2, 3, 10, 5]},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [0, 0, 30, 20]},
        ],
    )
    ds = CocoDetection(f)
    assert ds.classes == ["three", "seven"]  # sorted category ids 3, 7 → 0, 1
    img, t = ds[0]
    assert img.shape == (20, 30, 3)
    np.testing.assert_allclose(t["boxes"], [[2, 3, 12, 8], [0, 0, 30, 20]])
    assert t["labels"].tolist() == [1, 0]
    # given the classes (a val split read for a trained model), categories map by name, whatever their ids
    named = CocoDetection(f, classes=["seven", "three"])
    assert named.classes == ["seven", "three"] and named[0][1]["labels"].tolist() == [0, 1]
    with pytest.raises(DataError, match=r"ann\.json: expected categories named as the model's classes"):
        CocoDetection(f, classes=["seven", "eight"])


@pytest.mark.parametrize(
    "ann, pattern",
    [
        (
            {"id": 5, "image_id": 1, "category_id": 9, "bbox": [1, 1, 2, 2]},
            r"annotations\[0\] \(id 5\): unknown category_id 9",
        ),
        (
            {"id": 6, "image_id": 1, "category_id": 7, "bbox": [25, 1, 10, 2]},
            r"annotations\[0\] \(id 6\): box .* outside",
        ),
        ({"id": 7, "image_id": 1, "category_id": 7, "bbox": [1, 1, 0, 2]}, r"annotations\[0\] \(id 7\): box .* empty"),
        ({"id": 8, "image_id": 1, "category_id": 7}, r"annotations\[0\] \(id 8\): malformed annotation"),
        (
            {"id": 9, "image_id": 4, "category_id": 7, "bbox": [1, 1, 2, 2]},
            r"annotations\[0\] \(id 9\): unknown image_id 4",
        ),
    ],
)
def test_coco_bad_annotations(tmp_path: Path, ann: dict, pattern: str) -> None:
    f = _coco(tmp_path, [ann])
    with pytest.raises(DataError, match=r"ann\.json: " + pattern):
        CocoDetection(f)


def test_coco_missing_image_and_bad_json(tmp_path: Path) -> None:
    f = _coco(tmp_path, [], images=[{"id": 1, "file_name": "images/gone.png", "width": 30, "height": 20}])
    with pytest.raises(DataError, match=r"ann\.json: missing image file .*gone\.png"):
        CocoDetection(f)
    f.write_text('{"images": [\n  1,\n  oops]}')
    with pytest.raises(DataError, match=r"ann\.json:3: not valid JSON"):
        CocoDetection(f)


# --------------------------------------------------------------------------------------------- YOLO


def _yolo(tmp_path: Path, lines: str) -> Path:
    _img(tmp_path / "images/train/a.png", 20, 40)
    _img(tmp_path / "images/train/b.png", 20, 40)  # no label file: no objects
    (tmp_path / "labels/train").mkdir(parents=True)
    (tmp_path / "labels/train/a.txt").write_text(lines)
    (tmp_path / "classes.txt").write_text("ant\nbee\n")
    return tmp_path / "images/train"


def test_yolo_reads_pixels_xyxy(tmp_path: Path) -> None:
    ds = YoloDetection(_yolo(tmp_path, "1 0.5 0.5 0.5 0.5\n\n0 0.25 0.25 0.5 0.5\n"))
    assert ds.classes == ["ant", "bee"] and len(ds) == 2
    _, t = ds[0]
    np.testing.assert_allclose(t["boxes"], [[10, 5, 30, 15], [0, 0, 20, 10]], atol=1e-4)
    assert t["labels"].tolist() == [1, 0]
    assert ds[1][1]["boxes"].shape == (0, 4)


@pytest.mark.parametrize(
    "lines, pattern",
    [
        ("0 0.5 0.5 0.2 0.2\n2 0.5 0.5 0.2 0.2\n", r"a\.txt:2: unknown class id 2; expected 0\.\.1"),
        ("0 0.9 0.5 0.4 0.2\n", r"a\.txt:1: box out of bounds"),
        ("0 0.5 0.5 0.2\n", r"a\.txt:1: malformed line"),
        ("0 0.5 0.5 0.2 0.2\nbee 0.5 0.5 0.2 0.2\n", r"a\.txt:2: malformed line 'bee"),
    ],
)
def test_yolo_bad_lines(tmp_path: Path, lines: str, pattern: str) -> None:
    with pytest.raises(DataError, match=pattern):
        YoloDetection(_yolo(tmp_path, lines))


def test_detection_collate_variable_boxes(tmp_path: Path) -> None:
    ds = YoloDetection(_yolo(tmp_path, "1 0.5 0.5 0.5 0.5\n0 0.25 0.25 0.5 0.5\n"))
    tf = ImageTransform((16, 32), (0, 0, 0), (1, 1, 1), task="detect")
    wrapped = TransformedDataset(ds, tf)
    x, targets = detection_collate([wrapped[0], wrapped[1]])
    assert x.shape == (2, 3, 16, 32) and x.dtype == torch.float32
    assert targets[0]["boxes"].shape == (2, 4) and targets[1]["boxes"].shape == (0, 4)
    # boxes follow the resize: 40x20 → 32x16
    np.testing.assert_allclose(targets[0]["boxes"][0].numpy(), [8, 4, 24, 12], atol=1e-4)


# --------------------------------------------------------------------------------------------- segmentation


def _seg(tmp_path: Path, mask: np.ndarray) -> Path:
    _img(tmp_path / "images/m.png", 20, 30)
    (tmp_path / "masks").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(tmp_path / "masks/m.png"), mask)
    (tmp_path / "classes.txt").write_text("bg\nfg\nother\n")
    return tmp_path


def test_segmentation_reads_mask(tmp_path: Path) -> None:
    m = np.zeros((20, 30), np.uint8)
    m[5:10, 5:10] = 2
    m[0, 0] = 255  # ignore
    ds = SegmentationFolder(_seg(tmp_path, m))
    _img, mask = ds[0]
    assert ds.num_classes == 3 and mask.shape == (20, 30) and int(mask[6, 6]) == 2
    tf = ImageTransform((10, 15), (0, 0, 0), (1, 1, 1), task="segment")
    x, t = TransformedDataset(ds, tf)[0]
    assert x.shape == (3, 10, 15) and t.shape == (10, 15) and t.dtype == torch.int64
    assert set(torch.unique(t).tolist()) <= {0, 2, 255}


def test_segmentation_bad_masks(tmp_path: Path) -> None:
    m = np.zeros((20, 30), np.uint8)
    m[1, 1] = 5
    ds = SegmentationFolder(_seg(tmp_path, m))
    with pytest.raises(DataError, match=r"masks/m\.png: unknown class id 5; expected 0\.\.2"):
        ds[0]
    cv2.imwrite(str(tmp_path / "masks/m.png"), np.zeros((10, 10), np.uint8))
    with pytest.raises(DataError, match=r"m\.png: mask is 10x10 but image m\.png is 30x20"):
        ds[0]
    (tmp_path / "masks/m.png").unlink()
    with pytest.raises(DataError, match=r"masks/m\.png: missing mask file"):
        SegmentationFolder(tmp_path)


# --------------------------------------------------------------------------------------------- transforms


def test_transform_normalises_rgb(tmp_path: Path) -> None:
    _img(tmp_path / "a/x.png", 4, 4, value=0)
    ds = ImageFolderDataset(tmp_path)
    tf = ImageTransform((4, 4), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    x, t = TransformedDataset(ds, tf)[0]
    # pixel (0,0) is BGR (1,2,3) → RGB (3,2,1); (v/255 - 0.5)/0.25
    np.testing.assert_allclose(x[:, 0, 0].numpy(), [(c / 255 - 0.5) / 0.25 for c in (3, 2, 1)], rtol=1e-5)
    np.testing.assert_allclose(x[:, 1, 1].numpy(), [-2.0] * 3, rtol=1e-5)
    assert t == 0


def test_augmentation_depends_on_seed_epoch_index_only(tmp_path: Path) -> None:
    from edgecv.config import AugmentConfig
    from edgecv.data.synth import generate

    generate("classify", tmp_path / "s", n_train=4, n_val=0, size=32, seed=0)
    base = open_dataset("classify", tmp_path / "s")
    aug = AugmentConfig(hflip=True, brightness=0.3, contrast=0.3, translate=0.1)
    tf = ImageTransform((32, 32), (0.5,) * 3, (0.5,) * 3, augment=aug)
    a = TransformedDataset(base, tf, seed=1, train=True)
    b = TransformedDataset(base, tf, seed=1, train=True)
    assert torch.equal(a[2][0], b[2][0])
    b.set_epoch(1)
    assert not torch.equal(a[2][0], b[2][0])
    plain = TransformedDataset(base, tf, seed=1, train=False)
    assert not torch.equal(a[2][0], plain[2][0])


def test_open_dataset_on_synth_roots(tmp_path: Path) -> None:
    from edgecv.data.synth import generate

    generate("detect", tmp_path / "d", n_train=3, n_val=2, size=32, seed=0)
    y = open_dataset("detect", tmp_path / "d", split="val")
    c = open_dataset("detect", tmp_path / "d/val.json")
    assert len(y) == len(c) == 2
    for i in range(2):
        np.testing.assert_allclose(y[i][1]["boxes"], c[i][1]["boxes"], atol=1e-3)
        assert y[i][1]["labels"].tolist() == c[i][1]["labels"].tolist()
    assert len(ImageListDataset(tmp_path / "d/images")) == 5
