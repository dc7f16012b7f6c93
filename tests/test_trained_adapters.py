"""One trained model per foreign detector family (issue 11, item 7): a user's torchvision Faster R-CNN (a
``file.py:factory`` over a pre-trained CNN) fine-tuned with torchvision's own training API and an Ultralytics YOLO trained by Ultralytics' trainer, each on the synthetic shapes
data, then deployed with edgecv's CLI alone. Their mAP@0.5 on the val split (``validate --val``) is equal across
the fp32 backends within 0.5 pt, and it is a real mAP (a trained model finds the shapes), so equal cannot mean
"both zero".

Slow: each trains for about a minute on the CPU. Longer runs with INT8 figures: ``scripts/torchvision_finetune.py``
and ``scripts/vs_ultralytics.py``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.torch, pytest.mark.onnxruntime, pytest.mark.openvino]

SIZE = 128


def _shapes(root: Path, n_train: int, n_val: int) -> Path:
    from edgecv.data.synth import generate

    generate("detect", root, n_train=n_train, n_val=n_val, size=SIZE, seed=0)
    return root


def _maps(proc_stdout: str) -> dict[str, float]:
    rep = json.loads(proc_stdout)
    rows = rep["task_metric"]["rows"]  # a backend not asked for (torch, not rebuilt from a pickle) has no metric
    return {f"{r['backend']}:{r['precision']}": float(r["metric"]) for r in rows if r["metric"] is not None}


#: a user's own torchvision detector file, as ``edgecv export detector.py:build`` takes it: torchvision's FasterRCNN
#: class over a pre-trained CNN (the shipped shapes classifier cut at stride 16, as an ImageNet backbone would be)
USER_DETECTOR = """
import torch
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import MultiScaleRoIAlign

from edgecv.zoo.families.faster_rcnn import SmallBackbone


def build(num_classes=9):
    torch.manual_seed(0)
    return FasterRCNN(
        SmallBackbone(zoo="shapes_classifier"),
        num_classes=num_classes,
        min_size=128,
        max_size=128,
        rpn_anchor_generator=AnchorGenerator(((16, 32, 64),), ((0.5, 1.0, 2.0),)),
        box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2),
        box_batch_size_per_image=64,
    )
"""


def test_finetuned_torchvision_detector_map_equal_across_backends(tmp_path: Path, cli) -> None:
    import importlib.util as iu

    import torch

    from edgecv.data.synth import class_names
    from edgecv.validate.detection import load_coco_samples

    data = _shapes(tmp_path / "data", 200, 50)
    names = class_names("detect")
    samples = load_coco_samples(str(data), split="train", class_names=names)
    src = tmp_path / "detector.py"
    src.write_text(USER_DETECTOR)
    spec = iu.spec_from_file_location("user_detector", src)
    assert spec is not None and spec.loader is not None
    mod = iu.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = mod.build(1 + len(names))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=5e-4)
    rng = np.random.default_rng(0)
    for _step in range(100):  # torchvision's training API: model(images, targets) -> loss dict
        images, targets = [], []
        for i in rng.choice(len(samples), size=4, replace=False):
            img, boxes, labels = samples[int(i)]
            images.append(torch.from_numpy(np.ascontiguousarray(img[:, :, ::-1].transpose(2, 0, 1))).float() / 255)
            targets.append({"boxes": torch.from_numpy(boxes).float(), "labels": torch.from_numpy(labels).long() + 1})
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    weights = tmp_path / "ft.pth"
    torch.save(model.state_dict(), weights)
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(["__background__", *names]) + "\n")

    out = tmp_path / "bundle"
    proc = cli(
        "export",
        f"{src}:build",
        "-o",
        str(out),
        "--weights",
        str(weights),
        "--task",
        "detect",
        "--class-names",
        str(classes),
        "--input-shape",
        f"1x3x{SIZE}x{SIZE}",
        "--conf",
        "0.001",
        "--reference-data",
        str(data / "images" / "val"),
    )
    assert proc.returncode == 0, proc.stderr
    proc = cli(
        "validate",
        str(out),
        "-b",
        "torch",
        "-b",
        "onnxruntime",
        "-b",
        "openvino:fp32",
        "--val",
        str(data / "val.json"),
        "--model-source",
        f"{src}:build",
        "--weights",
        str(weights),
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    maps = _maps(proc.stdout)
    print("mAP@0.5 by backend:", maps)
    assert set(maps) == {"torch:fp32", "onnxruntime:fp32", "openvino:fp32"}, maps
    assert maps["torch:fp32"] >= 5.0, maps  # trained: it finds the shapes
    assert all(abs(m - maps["torch:fp32"]) <= 0.5 for m in maps.values()), maps


@pytest.mark.skipif(importlib.util.find_spec("ultralytics") is None, reason="ultralytics is not installed")
def test_trained_ultralytics_detector_map_equal_across_backends(tmp_path: Path, cli) -> None:
    import os

    os.environ.setdefault("YOLO_OFFLINE", "True")
    from edgecv.export.adapters.ultralytics import _ultralytics

    _ultralytics()
    from ultralytics import YOLO

    from edgecv.data.synth import class_names

    data = _shapes(tmp_path / "data", 160, 40)
    names = class_names("detect")
    yaml = tmp_path / "data.yaml"
    yaml.write_text(
        json.dumps({"path": str(data), "train": "images/train", "val": "images/val", "names": dict(enumerate(names))})
    )
    YOLO("yolov8n.yaml").train(
        data=str(yaml),
        imgsz=SIZE,
        epochs=30,
        warmup_epochs=1,
        mosaic=0.0,  # 128-px mosaics of small shapes learn slowly; a short run learns faster on whole images
        batch=16,
        device="cpu",
        workers=0,
        project=str(tmp_path),
        name="train",
        pretrained=False,
        amp=False,
        plots=False,
        verbose=False,
        seed=0,
        deterministic=True,
        val=False,
    )
    best = tmp_path / "train" / "weights" / "last.pt"
    out = tmp_path / "bundle"
    proc = cli("export", str(best), "-o", str(out), "--trust-checkpoint", "--conf", "0.001", "--static-batch")
    assert proc.returncode == 0, proc.stderr
    # YOLO folders (images/val + labels/val) as Ultralytics' own val reads them
    proc = cli(
        "validate",
        str(out),
        "-b",
        "onnxruntime",
        "-b",
        "openvino:fp32",
        "--val",
        str(data),
        "--allow-unchecked",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    maps = _maps(proc.stdout)
    print("mAP@0.5 by backend:", maps)
    fp32 = [v for k, v in maps.items() if k.endswith(":fp32") and not k.startswith("torch")]
    assert len(fp32) == 2, maps
    assert min(fp32) >= 2.0, maps
    assert max(fp32) - min(fp32) <= 0.5, maps
