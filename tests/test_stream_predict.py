"""Predict mode of ``edgecv run`` (issue 20, finding 6): an image folder or a glob in, annotated images under their
own names, JSON lines that carry the file name, and one label file per image (YOLO txt, COCO results, mask PNGs),
on the shipped detector (graph NMS) and tiny classify/segment bundles; and ``run`` fetching only the outputs its
decoder reads (not the validation-only pre-NMS candidates)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecv.errors import ConfigError

pytestmark = [pytest.mark.stream, pytest.mark.onnxruntime, pytest.mark.torch]


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The shipped detector exported with graph NMS, and six images of its validation split."""
    from mutations import shipped_val

    from edgecv.export import export_model, load_model
    from edgecv.export.detection import prepare_detection_export

    out = tmp_path_factory.mktemp("det")
    val = shipped_val("detect", out, n=6)
    loaded = prepare_detection_export(load_model("shapes_detector"), nms="graph")
    export_model(loaded, out / "det", opset=17, force=True, reference_data=val, n_reference=2)
    return out / "det", val / "images" / "val"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgecv", "run", *args, "--no-record"], capture_output=True, text=True, timeout=300
    )


def events_of(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_glob_saves_annotated_images_and_yolo_labels_equal_to_the_json_lines(
    detector: tuple[Path, Path], tmp_path: Path
) -> None:
    import cv2

    bundle, images = detector
    out = tmp_path / "pred"
    p = run_cli(
        str(bundle), "--source", str(images / "*.png"), "--save", f"{out}/", "--labels", "yolo",
        "--jsonl", str(tmp_path / "r.jsonl"), "--json",
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    names = sorted(x.name for x in images.glob("*.png"))
    assert json.loads(p.stdout)["frames_processed"] == len(names) == 6
    assert sorted(x.name for x in out.iterdir() if x.is_file()) == names
    events = events_of(tmp_path / "r.jsonl")
    assert [e["file"] for e in events] == names and [e["frame"] for e in events] == list(range(6))
    n_boxes = 0
    for e in events:
        src = cv2.imread(str(images / e["file"]))
        saved = cv2.imread(str(out / e["file"]))
        h, w = src.shape[:2]
        assert saved.shape == src.shape
        dets = e["results"][0]["detections"]
        rows = [ln.split() for ln in (out / "labels" / (Path(e["file"]).stem + ".txt")).read_text().splitlines()]
        assert len(rows) == len(dets)
        n_boxes += len(dets)
        if dets:
            assert not np.array_equal(saved, src)  # the boxes are drawn
        for row, d in zip(rows, dets):
            c, cx, cy, bw, bh, score = int(row[0]), *map(float, row[1:])
            xyxy = [(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h]
            assert c == d["class_id"] and abs(score - d["score"]) < 1e-5
            np.testing.assert_allclose(xyxy, d["box"], atol=0.011)  # JSON boxes are rounded to 0.01 px
    assert n_boxes >= 6  # the shipped detector finds its shapes: the comparison above compared real boxes


def test_folder_coco_results_and_bad_predict_options(detector: tuple[Path, Path], tmp_path: Path) -> None:
    from edgecv.stream.workflow import RunOptions, run_stream

    bundle, images = detector
    out = tmp_path / "coco"
    s = run_stream(RunOptions(bundle, [str(images)], save=out, labels="coco", jsonl=tmp_path / "r.jsonl", record=False))
    assert s["frames_processed"] == 6 and s["sinks"]["LabelSink"]["format"] == "coco"
    preds = json.loads((out / "predictions.json").read_text())
    events = events_of(tmp_path / "r.jsonl")
    want = [(e["frame"], e["file"], d) for e in events for d in e["results"][0]["detections"]]
    assert len(preds) == len(want) > 0
    for p, (frame, name, d) in zip(preds, want):
        x, y, bw, bh = p["bbox"]
        assert (p["image_id"], p["file_name"], p["category_id"]) == (frame, name, d["class_id"])
        np.testing.assert_allclose([x, y, x + bw, y + bh], d["box"], atol=0.011)
        assert abs(p["score"] - d["score"]) < 1e-5
    bad = [
        ({"labels": "yolo"}, "--labels: expected --save DIR/"),
        ({"save": tmp_path / "m", "labels": "mask"}, "--labels mask: expected a segment model, found a detect model"),
        ({"save": images / "sub"}, "--save: expected a folder outside the input"),
        ({"save": out}, "already holds files; pass --force"),
        ({"save": tmp_path / "x.txt"}, "--save: expected a .mp4"),
    ]
    for kw, needle in bad:
        with pytest.raises(ConfigError) as ei:
            run_stream(RunOptions(bundle, [str(images)], record=False, **kw))  # type: ignore[arg-type]
        assert needle in str(ei.value) and "\n" not in str(ei.value)
    assert not (tmp_path / "m").exists() and not (images / "sub").exists()


def _images(folder: Path, n: int = 3) -> Path:
    import cv2

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(folder / f"p{i}.png"), rng.integers(0, 255, (40 + 4 * i, 56, 3), dtype=np.uint8))
    return folder


def test_classify_topk_and_segment_masks_per_image(tmp_path: Path) -> None:
    import cv2
    from helpers import make_tiny_bundle

    from edgecv.stream.workflow import RunOptions, run_stream

    imgs = _images(tmp_path / "imgs")
    cls = make_tiny_bundle(tmp_path / "cls", "classify", size=32).root
    run_stream(RunOptions(cls, [str(imgs / "*.png")], save=tmp_path / "c", labels="yolo", jsonl=tmp_path / "c.jsonl"))
    for e in events_of(tmp_path / "c.jsonl"):
        top = e["results"][0]["topk"]
        assert e["file"].startswith("p") and len(top) == 5 and top[0]["score"] >= top[-1]["score"]
        rows = (tmp_path / "c" / "labels" / (Path(e["file"]).stem + ".txt")).read_text().split()
        assert [int(x) for x in rows[::2]] == [t["class_id"] for t in top]
    seg = make_tiny_bundle(tmp_path / "seg", "segment", size=32, num_classes=4).root
    run_stream(RunOptions(seg, [str(imgs)], save=tmp_path / "s", labels="mask", jsonl=tmp_path / "s.jsonl"))
    events = events_of(tmp_path / "s.jsonl")
    assert [e["file"] for e in events] == ["p0.png", "p1.png", "p2.png"]
    for e in events:
        mask = cv2.imread(str(tmp_path / "s" / "masks" / e["file"]), cv2.IMREAD_UNCHANGED)
        assert mask.shape == cv2.imread(str(imgs / e["file"])).shape[:2] == tuple(e["results"][0]["shape"])
        hist = {c["class_id"]: c["fraction"] for c in e["results"][0]["classes"]}
        ids, counts = np.unique(mask, return_counts=True)
        assert {int(i): round(int(c) / mask.size, 5) for i, c in zip(ids, counts)} == hist


def test_run_fetches_only_the_decoder_outputs(detector: tuple[Path, Path], tmp_path: Path) -> None:
    from edgecv.backends import open_runner
    from edgecv.bundle import Bundle
    from edgecv.stream.workflow import RunOptions, decoder_outputs, run_stream
    from edgecv.tasks.decode import PRE_NMS_OUTPUTS

    bundle, images = detector
    b = Bundle.open(bundle)
    asked: list[list[str] | None] = []

    def opener(*a, **kw):  # type: ignore[no-untyped-def]
        runner = open_runner(*a, **kw)
        fetch = runner._infer_outputs

        def spy(feed, names):  # type: ignore[no-untyped-def]
            asked.append(list(names))
            return fetch(feed, names)

        runner._infer_outputs = spy  # type: ignore[method-assign]
        return runner

    s = run_stream(
        RunOptions(bundle, [str(images)], backend="onnxruntime", jsonl=tmp_path / "r.jsonl", record=False),
        opener=opener,
    )
    assert s["frames_processed"] == 6 and len(asked) == 6
    assert all(set(n) == {"boxes", "scores", "classes", "num_dets"} for n in asked)
    with open_runner(b, "onnxruntime") as r:
        names = decoder_outputs(r, b.contract)
        assert names is not None and not set(PRE_NMS_OUTPUTS) & set(names)
        x = np.zeros(tuple(b.contract.input_shape), np.float32)
        full = r.infer({b.contract.input_name: x})
        part = r.infer({b.contract.input_name: x}, outputs=names)
        assert list(part) == names and all(np.array_equal(part[n], full[n]) for n in names)
        # what a frame no longer copies out of the engine
        assert sum(full[n].nbytes for n in PRE_NMS_OUTPUTS) > 5 * sum(part[n].nbytes for n in names)
        with pytest.raises(Exception, match="expected outputs among"):
            r.infer({b.contract.input_name: x}, outputs=["nope"])


@pytest.mark.openvino
def test_openvino_fetches_only_the_asked_outputs_sync_and_async(detector: tuple[Path, Path]) -> None:
    from edgecv.backends import open_runner
    from edgecv.bundle import Bundle

    b = Bundle.open(detector[0])
    x = np.random.default_rng(0).random(tuple(b.contract.input_shape), dtype=np.float32)
    feed = {b.contract.input_name: x}
    names = ["num_dets", "boxes"]
    with open_runner(b, "openvino", threads=1) as r:
        full = r.infer(feed)
        part = r.infer(feed, outputs=names)
        assert list(part) == names and all(np.array_equal(part[n], full[n]) for n in names)
        got: list[dict] = []
        q = r.async_queue(2, outputs=names)
        q.submit(feed, None, lambda _u, out, err: got.append(out if err is None else {"error": err}))
        q.wait_all()
        q.close()
        assert list(got[0]) == names and all(np.array_equal(got[0][n], full[n]) for n in names)
