"""COCO validation data maps categories by name to the model's class names (issue 18 item 3): the same data
numbered differently gives the same mAP, and names that do not match the model are refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgecv.errors import DataError

cv2 = pytest.importorskip("cv2")
pytest.importorskip("faster_coco_eval")

NAMES = ["cat", "dog", "bird"]


def _contract():
    from edgecv.bundle import Contract

    return Contract(
        task="detect", input_shape=[1, 3, 64, 64], class_names=NAMES, mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0]
    )


def _write(root: Path, name: str, ids: dict[str, int], names: list[str] | None = None) -> Path:
    """Two 64x64 images with one box of each class; categories numbered by ``ids`` (name → COCO id)."""
    root.mkdir(parents=True, exist_ok=True)
    boxes = {"cat": [4, 4, 20, 16], "dog": [30, 8, 18, 24], "bird": [10, 40, 30, 12]}
    images, anns = [], []
    for i in range(2):
        cv2.imwrite(str(root / f"{i}.png"), np.full((64, 64, 3), 60 * i + 20, np.uint8))
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 64, "height": 64})
        for n, b in boxes.items():
            anns.append(
                {"id": len(anns) + 1, "image_id": i + 1, "category_id": ids[n], "bbox": b, "area": 1, "iscrowd": 0}
            )
    cats = [{"id": ids[n], "name": n} for n in (names or list(ids))]
    f = root / name
    f.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return f


def _map50(val_file: Path) -> tuple[float, list[list[int]]]:
    """mAP@0.5 of detections that say, in the model's class order, cat/dog/bird at the true places."""
    from edgecv.validate.detection import coco_map
    from edgecv.validate.metrics import open_val

    val = open_val(val_file, _contract())
    truth = {(4.0, 4.0): 0, (30.0, 8.0): 1, (10.0, 40.0): 2}  # box corner → the model's class id
    dets, gts, labels = [], [], []
    for _feed, (_tf, boxes, lab, _hw) in val:
        cls = np.array([truth[(float(b[0]), float(b[1]))] for b in boxes])
        dets.append((boxes, np.full(len(boxes), 0.9, np.float32), cls))
        gts.append((boxes, lab))
        labels.append(lab.tolist())
    return coco_map(dets, gts, len(NAMES))["map50"], labels


def test_renumbered_categories_give_the_same_map(tmp_path: Path) -> None:
    orig = _write(tmp_path / "a", "val.json", {"cat": 1, "dog": 2, "bird": 3})
    # the same names, numbered (and listed) in another order: sorted ids would read dog, bird, cat
    renum = _write(tmp_path / "b", "val.json", {"cat": 30, "dog": 10, "bird": 20}, names=["bird", "cat", "dog"])
    m0, lab0 = _map50(orig)
    m1, lab1 = _map50(renum)
    assert m0 == pytest.approx(1.0)
    assert m1 == pytest.approx(m0) and lab1 == lab0 == [[0, 1, 2], [0, 1, 2]]


@pytest.mark.parametrize(
    "ids, names, found",
    [
        ({"cat": 1, "dog": 2, "horse": 3}, None, "horse"),  # a name the model does not know
        ({"cat": 1, "dog": 2}, None, "bird"),  # a class of the model with no category
    ],
)
def test_category_names_that_do_not_match_the_model_are_refused(tmp_path: Path, ids, names, found) -> None:
    from edgecv.validate.metrics import open_val

    bad = tmp_path / "bad.json"
    bad.parent.mkdir(exist_ok=True)
    boxes = [4, 4, 20, 16]
    cv2.imwrite(str(tmp_path / "0.png"), np.zeros((64, 64, 3), np.uint8))
    bad.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "0.png", "width": 64, "height": 64}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": boxes}],
                "categories": [{"id": i, "name": n} for n, i in ids.items()],
            }
        )
    )
    with pytest.raises(DataError) as exc:
        open_val(bad, _contract())
    msg = str(exc.value)
    assert "\n" not in msg and str(bad) in msg and found in msg and "cat, dog, bird" in msg


def test_duplicate_category_names_are_refused(tmp_path: Path) -> None:
    from edgecv.data.readers import read_coco

    f = _write(tmp_path, "val.json", {"cat": 1, "dog": 2, "bird": 3})
    coco = json.loads(f.read_text())
    coco["categories"].append({"id": 4, "name": "cat"})
    f.write_text(json.dumps(coco))
    with pytest.raises(DataError, match=r"val\.json: .*'cat' names categories 1 and 4"):
        read_coco(f, class_names=NAMES)


def test_a_model_without_class_names_takes_categories_in_id_order(tmp_path: Path) -> None:
    """Export names an unnamed detector's classes 0..C-1: no name can match, so sorted ids are used (as trained)."""
    from edgecv.data.readers import read_coco

    f = _write(tmp_path, "val.json", {"cat": 30, "dog": 10, "bird": 20})
    coco = read_coco(f, class_names=["0", "1", "2", "3"])
    assert coco.cat_ids == [10, 20, 30] and coco.records[0][2].tolist() == [2, 0, 1]
    with pytest.raises(DataError, match=r"expected at most 2 categories .*found 3"):
        read_coco(f, class_names=["0", "1"])


def test_torchvision_placeholder_slots_take_no_category(tmp_path: Path) -> None:
    """A torchvision detector's label 0 is its background and its COCO list names unused ids N/A: neither needs a
    category, and an unnamed one (``__background__, 1, 2, …``) takes the categories on labels 1.., as trained."""
    from edgecv.data.readers import read_coco

    f = _write(tmp_path, "val.json", {"cat": 30, "dog": 10, "bird": 20})
    named = read_coco(f, class_names=["__background__", "dog", "N/A", "bird", "cat"])
    assert named.records[0][2].tolist() == [4, 1, 3]  # cat, dog, bird by name, whatever their ids
    unnamed = read_coco(f, class_names=["__background__", "1", "2", "3"])
    assert unnamed.cat_ids == [10, 20, 30] and unnamed.records[0][2].tolist() == [3, 1, 2]
    with pytest.raises(DataError, match=r"expected at most 2 categories .*found 3"):
        read_coco(f, class_names=["__background__", "1", "2"])
    with pytest.raises(DataError, match=r"no category for: fish"):  # a real class still needs its category
        read_coco(f, class_names=["__background__", "dog", "bird", "cat", "fish"])
