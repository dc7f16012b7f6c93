"""Shipped default weights reach their recorded metric on the regenerated held-out val split (within 0.5 points)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.torch, pytest.mark.stream]

WEIGHTS = Path(__file__).resolve().parents[1] / "edgecv" / "zoo" / "weights"
DEFAULTS = ["mobilenet_v2_tiny", "unet_dw_tiny"]


@pytest.mark.parametrize("name", DEFAULTS)
def test_default_reaches_recorded_metric(name: str) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("cv2")
    if not (WEIGHTS / f"{name}.pt").is_file():
        pytest.skip(f"no shipped weights edgecv/zoo/weights/{name}.pt in this checkout")
    from edgecv.train.defaults import check_default

    info = json.loads((WEIGHTS / f"{name}.json").read_text())
    assert info["split"] == "val" and info["data"]["generator"] == "edgecv.data.synth"
    recorded, got = check_default(name, WEIGHTS)
    assert abs(got - recorded) <= 0.5, f"{name}: recorded {info['metric']} {recorded}, measured {got}"
    # meaningful but not trivial
    assert 20.0 < got < 100.0


def test_shipped_weights_are_small() -> None:
    total = sum(p.stat().st_size for p in WEIGHTS.glob("*.pt")) if WEIGHTS.is_dir() else 0
    assert total < 15 * 2 ** 20
