"""Recipe schema: unknown keys, bad enums and bad types fail early with the dotted path and the allowed values."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edgecv.config import Recipe, load_recipe, parse_recipe
from edgecv.errors import ConfigError

BASE = {
    "model": {"name": "mobilenet_v2_tiny"},
    "data": {"task": "classify", "synth": {"n_train": 10, "n_val": 5, "size": 32}},
}


def _with(path: str, value: object) -> dict:
    import copy

    d = copy.deepcopy(BASE)
    cur = d
    keys = path.split(".")
    for k in keys[:-1]:
        cur = cur.setdefault(k, {})
    cur[keys[-1]] = value
    return d


def test_defaults_fill_in() -> None:
    r = parse_recipe(BASE)
    assert isinstance(r, Recipe)
    assert r.train.optimizer.name == "adamw" and r.train.schedule.name == "cosine"
    assert r.data is not None and r.data.synth is not None and r.data.synth.size == 32
    assert r.validate_.backends == ["onnxruntime"]
    assert r.to_dict()["validate"]["backends"] == ["onnxruntime"]


def test_unknown_key_names_dotted_path_and_allowed_keys() -> None:
    with pytest.raises(ConfigError) as ei:
        parse_recipe(_with("train.optimizer.lrate", 0.1))
    msg = str(ei.value)
    assert "train.optimizer.lrate" in msg
    assert "lr" in msg and "weight_decay" in msg  # lists the allowed keys of that section
    with pytest.raises(ConfigError, match=r"unknown key 'trian'"):
        parse_recipe({**BASE, "trian": {}})


def test_bad_enum_lists_allowed_values() -> None:
    with pytest.raises(ConfigError) as ei:
        parse_recipe(_with("train.optimizer.name", "adamx"))
    msg = str(ei.value)
    assert "train.optimizer.name" in msg and "'adamx'" in msg
    for name in ("sgd", "momentum", "nesterov", "adagrad", "adadelta", "rmsprop", "adam", "adamw"):
        assert name in msg
    with pytest.raises(ConfigError, match=r"compile\[0\]\.backend.*tensorrt.*'tvm'"):
        parse_recipe({**BASE, "compile": [{"backend": "tvm"}]})
    with pytest.raises(ConfigError, match=r"data\.task.*classify.*'pose'"):
        parse_recipe(_with("data.task", "pose"))


def test_bad_type_and_range() -> None:
    with pytest.raises(ConfigError, match=r"train\.epochs.*integer.*'ten'"):
        parse_recipe(_with("train.epochs", "ten"))
    with pytest.raises(ConfigError, match=r"train\.optimizer\.lr.*greater than 0"):
        parse_recipe(_with("train.optimizer.lr", -1))
    with pytest.raises(ConfigError, match=r"data\.batch_size"):
        parse_recipe(_with("data.batch_size", 0))
    with pytest.raises(ConfigError, match=r"model.*exactly one of 'name'"):
        parse_recipe({**BASE, "model": {"name": "a", "source": "m:f"}})
    with pytest.raises(ConfigError, match=r"expected a mapping"):
        parse_recipe(["not", "a", "dict"])


def test_load_recipe_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_recipe(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {name: x\ntrain: [\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: not valid YAML"):
        load_recipe(bad)
    # yaml.safe_load: python tags are refused, not executed
    evil = tmp_path / "evil.yaml"
    evil.write_text("model: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError):
        load_recipe(evil)


@pytest.mark.parametrize("name", ["classifier.yaml", "segmenter.yaml", "detector.yaml"])
def test_shipped_recipes_validate(root: Path, name: str) -> None:
    r = load_recipe(root / "recipes" / name)
    assert r.data is not None and r.data.synth is not None
    # every recipe names a model the zoo has (the recipes are what trained the shipped defaults)
    from edgecv.zoo import list_models

    assert r.model.name in list_models()
    assert r.data.task == {"classifier.yaml": "classify", "segmenter.yaml": "segment", "detector.yaml": "detect"}[name]


def test_cli_rejects_bad_recipe_before_heavy_work(cli, tmp_path: Path) -> None:
    rec = tmp_path / "r.yaml"
    rec.write_text(
        "model: {name: mobilenet_v2_tiny}\ndata: {task: classify, synth: {size: 32}}\n"
        "train: {optimizer: {name: adamx}}\n"
    )
    t0 = time.perf_counter()
    proc = cli("train", str(rec), "-o", str(tmp_path / "run"))
    assert proc.returncode == 2
    assert "train.optimizer.name" in proc.stderr and "adamw" in proc.stderr
    assert not (tmp_path / "run").exists()  # failed before anything was written
    assert time.perf_counter() - t0 < 60
