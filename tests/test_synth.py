"""Synthetic data generator and calibration sampling: determinism, formats, content, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgecv._io import sha256_path
from edgecv.data import synth
from edgecv.errors import ConfigError, SourceError

pytestmark = pytest.mark.stream  # needs OpenCV

cv2 = pytest.importorskip("cv2")


@pytest.mark.parametrize("task", ["classify", "detect", "segment"])
def test_same_seed_byte_identical_other_seed_differs(tmp_path: Path, task: str) -> None:
    a = synth.generate(task, tmp_path / "a", n_train=6, n_val=3, size=32, seed=7)
    synth.generate(task, tmp_path / "b", n_train=6, n_val=3, size=32, seed=7)
    synth.generate(task, tmp_path / "c", n_train=6, n_val=3, size=32, seed=8)
    assert sha256_path(tmp_path / "a") == sha256_path(tmp_path / "b")
    assert sha256_path(tmp_path / "a") != sha256_path(tmp_path / "c")
    assert a["classes"] == synth.class_names(task)
    assert json.loads((tmp_path / "a" / "synth.json").read_text())["seed"] == 7


def test_splits_never_share_a_scene(tmp_path: Path) -> None:
    synth.generate("segment", tmp_path / "s", n_train=4, n_val=4, size=32, seed=0)
    tr = {p.read_bytes() for p in (tmp_path / "s/train/images").glob("*.png")}
    va = {p.read_bytes() for p in (tmp_path / "s/val/images").glob("*.png")}
    assert len(tr) == 4 and len(va) == 4 and not tr & va


def test_classify_tree_and_label_is_main_object(tmp_path: Path) -> None:
    synth.generate("classify", tmp_path / "c", n_train=80, n_val=0, size=48, seed=1)
    counts = {d.name: len(list(d.glob("*.png"))) for d in (tmp_path / "c/train").iterdir()}
    assert sorted(counts) == sorted(synth.SHAPES)
    assert sum(counts.values()) == 80 and min(counts.values()) >= 3  # every class drawn
    img = cv2.imread(str(next((tmp_path / "c/train/circle").glob("*.png"))))
    assert img.shape == (48, 48, 3)
    # the render function's label is the class folder: re-render one image and compare
    rng = synth.image_rng(1, "train", 0)
    img0, label0 = synth.render_classify(rng, 48)
    found = next((tmp_path / "c/train").glob("*/000000.png"))
    assert found.parent.name == synth.SHAPES[label0]
    assert np.array_equal(cv2.imread(str(found)), img0)


def test_detect_yolo_and_coco_agree_with_masks(tmp_path: Path) -> None:
    synth.generate("detect", tmp_path / "d", n_train=10, n_val=2, size=64, seed=3)
    coco = json.loads((tmp_path / "d/train.json").read_text())
    assert len(coco["images"]) == 10 and [c["name"] for c in coco["categories"]] == list(synth.SHAPES)
    n_yolo = 0
    for im in coco["images"]:
        lab = tmp_path / "d/labels/train" / (Path(im["file_name"]).stem + ".txt")
        lines = [ln.split() for ln in lab.read_text().splitlines()]
        anns = [a for a in coco["annotations"] if a["image_id"] == im["id"]]
        assert len(lines) == len(anns)
        n_yolo += len(lines)
        for ln, a in zip(lines, anns):
            c, cx, _cy, w, h = int(ln[0]), *map(float, ln[1:])
            x, y, bw, bh = a["bbox"]
            assert c + 1 == a["category_id"]
            assert abs(cx * 64 - (x + bw / 2)) < 0.01 and abs(w * 64 - bw) < 0.01 and abs(h * 64 - bh) < 0.01
            assert 0 <= x and x + bw <= 64 and 0 <= y and y + bh <= 64
    assert n_yolo >= 10
    # box = visible extent of the object in the scene's own mask
    _img, mask, boxes = synth.render_objects(synth.image_rng(3, "train", 0), 64)
    for c, (x1, y1, x2, y2) in boxes:
        ys, xs = np.nonzero(mask == c + 1)
        assert xs.min() <= x1 + 0.5 and ys.min() <= y1 + 0.5 and xs.max() + 1 >= x2 - 0.5


def test_segment_masks_hold_class_ids(tmp_path: Path) -> None:
    synth.generate("segment", tmp_path / "s", n_train=8, n_val=2, size=48, seed=4)
    vals = set()
    for m in (tmp_path / "s/train/masks").glob("*.png"):
        a = cv2.imread(str(m), cv2.IMREAD_UNCHANGED)
        assert a.shape == (48, 48) and a.dtype == np.uint8
        vals |= set(np.unique(a).tolist())
    assert 0 in vals and max(vals) <= len(synth.SHAPES) and len(vals) >= 4
    assert (tmp_path / "s/classes.txt").read_text().split()[0] == "background"


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="classify, detect, segment"):
        synth.generate("pose", "/tmp/never", n_train=1, n_val=1)
    with pytest.raises(ConfigError, match="at least 16"):
        synth.generate("classify", "/tmp/never", n_train=1, n_val=1, size=8)


def test_cli_synth(cli, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    proc = cli(
        "data",
        "synth",
        "--task",
        "segment",
        "-o",
        str(out),
        "--n-train",
        "3",
        "--n-val",
        "2",
        "--size",
        "32",
        "--seed",
        "5",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    meta = json.loads(proc.stdout)
    assert meta["splits"] == {"train": 3, "val": 2}
    synth.generate("segment", tmp_path / "lib", n_train=3, n_val=2, size=32, seed=5)
    assert sha256_path(out) == sha256_path(tmp_path / "lib")


# ----------------------------------------------------------------------------------------- calibration


def test_calib_from_folder_picks_diverse_and_skips_duplicates(tmp_path: Path) -> None:
    from edgecv.data.calib import sample_diverse

    src = tmp_path / "imgs"
    paths = synth.generate_images("classify", src, n=12, size=32, seed=9)
    for k, p in enumerate(paths[:3]):  # near-duplicates of one frame
        (src / f"dup{k}.png").write_bytes(paths[0].read_bytes())
    res = sample_diverse(src, n=100, out=tmp_path / "out")
    assert res["candidates"] == 15
    # the 4 copies of frame 0 count once: 12 distinct frames at most
    assert res["selected"] == 12
    assert len(list((tmp_path / "out").glob("*.png"))) == 12  # beside sample.json, which says who wrote them
    small = sample_diverse(src, n=5, out=tmp_path / "out5")
    assert small["selected"] == 5


def _write_video(path: Path, frames: list[np.ndarray]) -> None:
    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (w, h))
    assert vw.isOpened()
    for f in frames:
        vw.write(f)
    vw.release()


def test_calib_from_video(tmp_path: Path, cli) -> None:
    scenes = [synth.render_classify(synth.image_rng(0, "test", i), 64)[0] for i in range(4)]
    frames = [s for s in scenes for _ in range(10)]  # 4 scenes, each held for 10 frames
    vid = tmp_path / "v.avi"
    _write_video(vid, frames)
    proc = cli("calib", "sample", str(vid), "-n", "20", "-o", str(tmp_path / "cal"), "--json")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["candidates"] == 40
    assert 4 <= res["selected"] <= 8  # one per scene (+ codec jitter), not 20 near-copies
    files = sorted((tmp_path / "cal").glob("*.png"))
    assert len(files) == res["selected"]
    assert cv2.imread(str(files[0])).shape == (64, 64, 3)
    picked_scenes = {int(f.stem.split("frame")[1]) // 10 for f in files}
    assert picked_scenes == {0, 1, 2, 3}


def test_calib_bad_source(tmp_path: Path) -> None:
    from edgecv.data.calib import sample_diverse

    with pytest.raises(SourceError, match="no such"):
        sample_diverse(tmp_path / "nope", n=3)
    bad = tmp_path / "bad.avi"
    bad.write_bytes(b"not a video")
    with pytest.raises(SourceError):
        sample_diverse(bad, n=3)
