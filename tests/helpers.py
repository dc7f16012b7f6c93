"""Test helpers: tiny bundles made without the export module, so backend/validate/bench/stream tests stand alone.

``make_tiny_bundle`` exports a small CNN with the TorchScript ONNX exporter (fast), writes the reference outputs
and a manifest whose provenance names this file's ``tiny_cnn`` factory, so the torch runner can rebuild it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgecv.bundle import CONTRACT_KEY, ONNX_FILE, REFERENCE_FILE, Bundle, Contract, Manifest, save_reference

HERE = Path(__file__).resolve().parent


def tiny_cnn(num_classes: int = 10, task: str = "classify"):
    import torch
    from torch import nn

    torch.manual_seed(0)
    if task == "segment":
        model = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, num_classes, 1),
        )
    else:
        model = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(16, num_classes),
        )
    # non-trivial BN statistics so folding/precision differences show; part of the factory so the torch runner
    # rebuilt from the manifest matches reference.npz
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _several_classes(model, x, num_classes: int):
    """Noise nudged (a few signed-gradient steps) towards different classes: a random tiny classifier gives every
    noise sample the same class, and validate reports a one-class reference as "not checked" (issue 18)."""
    import torch

    x = x.clone().requires_grad_(True)
    target = torch.arange(x.shape[0]) % num_classes
    for _ in range(150):
        out = model(x)
        if len(set(out.argmax(1).tolist())) >= 2:
            break
        loss = torch.nn.functional.cross_entropy(out, target)
        (g,) = torch.autograd.grad(loss, x)
        with torch.no_grad():
            x -= 0.02 * g.sign()
    return x.detach()


def make_tiny_bundle(
    root: Path,
    task: str = "classify",
    size: int = 64,
    num_classes: int = 10,
    dynamic_batch: bool = True,
    n_ref: int = 4,
) -> Bundle:
    import onnx
    import torch

    model = tiny_cnn(num_classes, task)
    contract = Contract(
        task=task,
        input_shape=[1, 3, size, size],
        class_names=[f"c{i}" for i in range(num_classes)],
        output_names=["output"],
        batch_range=[1, 1, 8] if dynamic_batch else [1, 1, 1],
        decode={"activation": "softmax"} if task == "classify" else {"activation": "argmax"},
    )
    work = root.parent / f".{root.name}.work"
    work.mkdir(parents=True, exist_ok=True)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((n_ref, 3, size, size)).astype(np.float32))
    if task == "classify" and n_ref > 1:
        x = _several_classes(model, x, num_classes)
    onnx_path = work / ONNX_FILE
    torch.onnx.export(
        model,
        (x[:1],),
        str(onnx_path),
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None,
        opset_version=17,
        dynamo=False,
    )
    m = onnx.load(str(onnx_path))
    prop = m.metadata_props.add()
    prop.key, prop.value = CONTRACT_KEY, contract.to_json()
    onnx.save(m, str(onnx_path))
    with torch.no_grad():
        y = model(x).numpy()
    ref = work / REFERENCE_FILE
    save_reference(ref, {"input": x.numpy()}, {"output": y})
    manifest = Manifest(
        name="tiny",
        contract=contract,
        provenance={
            "source": {
                "spec": f"{HERE / 'helpers.py'}:tiny_cnn",
                "kind": "file",
                "kwargs": {"num_classes": num_classes, "task": task},
                "weights": None,
            },
            "opset": 17,
            "exporter": "torchscript",
        },
    )
    bundle = Bundle.create(root, manifest, {ONNX_FILE: onnx_path, REFERENCE_FILE: ref}, force=True)
    work.rmdir()
    json.loads((root / "manifest.json").read_text())
    return bundle


def openvino_precision_ran(requested: str, device: str = "CPU") -> str:
    """What OpenVINO honestly runs for an inference-precision hint on this machine's ``device``, asked of the
    device (DESIGN rule 16): an Intel CPU with AMX/AVX512-FP16 runs fp16, an AMD EPYC with bf16 but no fp16 runs
    bf16 for an fp16 hint, a CPU with neither runs fp32."""
    import openvino as ov

    caps = set(ov.Core().get_property(device, "OPTIMIZATION_CAPABILITIES"))
    if requested == "fp16":
        return "fp16" if "FP16" in caps else "bf16" if "BF16" in caps else "fp32"
    if requested == "bf16":
        return "bf16" if "BF16" in caps else "fp32"
    return requested
