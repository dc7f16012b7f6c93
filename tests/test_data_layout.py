"""Data set layouts (issue 20, finding 9): one torch-free finder per task accepts the data set root and its split
folder, and a wrong or empty folder fails in one line naming what was expected and what was found."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgecv.data.layout import find_layout
from edgecv.errors import ConfigError, DataError

pytestmark = pytest.mark.stream  # OpenCV writes the synthetic images


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgecv.data.synth import generate

    root = tmp_path_factory.mktemp("layouts")
    for task in ("classify", "detect", "segment"):
        generate(task, root / task, n_train=3, n_val=4, size=32, seed=0)
    return root


@pytest.mark.parametrize(
    "task,given,kind,resolved",
    [
        ("classify", "classify", "imagefolder", "classify/val"),
        ("classify", "classify/val", "imagefolder", "classify/val"),
        ("detect", "detect", "coco", "detect/val.json"),
        ("detect", "detect/val.json", "coco", "detect/val.json"),
        ("detect", "detect/images/val", "yolo", "detect/images/val"),
        ("segment", "segment", "masks", "segment/val"),
        ("segment", "segment/val", "masks", "segment/val"),
    ],
)
def test_root_and_split_resolve_alike(synth: Path, task: str, given: str, kind: str, resolved: str) -> None:
    lay = find_layout(task, synth / given, split="val")
    assert (lay.kind, lay.path, lay.images) == (kind, synth / resolved, 4)


def test_split_and_format_choose(synth: Path) -> None:
    lay = find_layout("detect", synth / "detect", split="train", fmt="yolo")
    assert (lay.kind, lay.path, lay.labels, lay.images) == (
        "yolo",
        synth / "detect/images/train",
        synth / "detect/labels/train",
        3,
    )
    assert find_layout("detect", synth / "detect", prefer=("yolo", "coco")).kind == "yolo"
    with pytest.raises(ConfigError, match="--layout for detect: expected one of coco, yolo, found 'masks'"):
        find_layout("detect", synth / "detect", fmt="masks")


@pytest.mark.parametrize(
    "task,given,needle",
    [
        ("classify", "segment", "expected an ImageFolder tree .* found segment data \\(masks at .*segment/val"),
        ("segment", "classify", "expected image \\+ mask folders .* found classify data \\(imagefolder"),
        ("detect", "classify/val", "expected a COCO JSON .* or YOLO folders .* found classify data"),
        ("classify", "nowhere", "found no such path"),
    ],
)
def test_wrong_layout_is_one_line(synth: Path, task: str, given: str, needle: str) -> None:
    with pytest.raises(DataError, match=needle) as exc:
        find_layout(task, synth / given)
    assert "\n" not in str(exc.value) and str(exc.value).startswith(f"--val for {task}: expected ")


def test_empty_layouts_fail(tmp_path: Path) -> None:
    (tmp_path / "cls" / "val" / "cat").mkdir(parents=True)
    (tmp_path / "seg" / "val" / "images").mkdir(parents=True)
    (tmp_path / "seg" / "val" / "masks").mkdir()
    (tmp_path / "det").mkdir()
    (tmp_path / "det" / "val.json").write_text('{"images": [], "annotations": [], "categories": []}')
    for task, folder in (("classify", "cls"), ("segment", "seg"), ("detect", "det")):
        with pytest.raises(DataError, match=r"expected .* found .*\(0 images in all\)"):
            find_layout(task, tmp_path / folder)


def test_class_folders_are_checked_before_reading(synth: Path) -> None:
    names = ["circle", "cross", "hexagon", "rectangle", "ring", "square", "star", "triangle"]
    assert find_layout("classify", synth / "classify", classes=names).kind == "imagefolder"
    with pytest.raises(DataError, match="expected class folders named as the model's classes .* found folder"):
        find_layout("classify", synth / "classify", classes=["c0", "c1"])


def test_yolo_and_coco_give_the_same_boxes(synth: Path) -> None:
    """validate --val reads YOLO folders too: the synthetic detect set written both ways gives the same targets."""
    from edgecv.validate.detection import load_coco_samples

    coco = load_coco_samples(str(synth / "detect"), "val")
    yolo = load_coco_samples(str(synth / "detect" / "images" / "val"), "val")
    assert len(coco) == len(yolo) == 4
    for (img_c, boxes_c, labels_c), (img_y, boxes_y, labels_y) in zip(coco, yolo, strict=True):
        assert np.array_equal(img_c, img_y)
        assert np.array_equal(labels_c, labels_y)
        np.testing.assert_allclose(boxes_c, boxes_y, atol=0.01)  # YOLO's 6-digit normalised text


def test_open_dataset_takes_the_same_forms(synth: Path) -> None:
    pytest.importorskip("torch")
    from edgecv.data.datasets import open_dataset

    for task, given in (("classify", "classify"), ("detect", "detect"), ("segment", "segment")):
        a = open_dataset(task, synth / given, split="val")
        b = open_dataset(task, a.layout.path, split="val")
        assert len(a) == len(b) == 4 and a.layout == b.layout
