"""Jetson state parsers on captured command outputs (tests/fixtures/jetson/SOURCES.md says where each is from)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from edgecv.jetson import (
    clock_warning,
    jetson_state,
    parse_jetson_clocks,
    parse_nv_tegra_release,
    parse_nvpmodel,
    parse_tegrastats,
)

FIX = Path(__file__).resolve().parent / "fixtures" / "jetson"


def _read(name: str) -> str:
    return (FIX / name).read_text()


def test_nvpmodel_thor_and_nonroot_errors() -> None:
    assert parse_nvpmodel(_read("nvpmodel_thor_maxn.txt")) == {"mode": "MAXN", "id": 0}
    # without sudo, NVPM ERROR lines follow; mode and id still parse
    assert parse_nvpmodel(_read("nvpmodel_nano_5w_nonroot.txt")) == {"mode": "5W", "id": 1}
    assert parse_nvpmodel("nvpmodel: command not found") is None


def test_nv_tegra_release_l4t_and_jetpack() -> None:
    r = parse_nv_tegra_release(_read("nv_tegra_release_r36.4.0.txt"))
    assert r == {"l4t": "36.4.0", "jetpack": "6.1", "board": "generic"}
    r = parse_nv_tegra_release(_read("nv_tegra_release_r36.3.0.txt"))
    assert r is not None and (r["l4t"], r["jetpack"]) == ("36.3.0", "6.0")
    r = parse_nv_tegra_release("# R36 (release), REVISION: 4.3, GCID: 1, BOARD: generic, EABI: aarch64")
    assert r is not None and (r["l4t"], r["jetpack"]) == ("36.4.3", "6.2")
    assert parse_nv_tegra_release("Ubuntu 22.04") is None


def test_jetson_clocks_unlocked_orin() -> None:
    c = parse_jetson_clocks(_read("jetson_clocks_orin_unlocked.txt"))
    assert c is not None
    assert c["soc"] == "tegra234" and c["power_mode"] == "MAXN"
    assert c["cpus"]["cpu0"] == {"online": True, "governor": "schedutil", "min": 115200, "max": 2201600, "cur": 2112000}
    assert len(c["cpus"]) == 9
    assert c["clocks"]["GPU"] == {"min": 114750000, "max": 1300500000, "cur": 114750000}
    assert c["clocks"]["EMC"]["override"] == 0
    assert c["locked"] is False


def test_jetson_clocks_locked_orin() -> None:
    c = parse_jetson_clocks(_read("jetson_clocks_orin_locked.txt"))
    assert c is not None and c["locked"] is True
    assert c["clocks"]["GPU"]["min"] == c["clocks"]["GPU"]["max"] == 1300500000


def test_jetson_clocks_nano_power_mode_caps_cpu_but_gpu_unlocked() -> None:
    """In 5W mode the CPUs sit at one frequency, but the GPU still scales: not locked."""
    c = parse_jetson_clocks(_read("jetson_clocks_nano_5w.txt"))
    assert c is not None and c["power_mode"] == "5W" and c["soc"] == "tegra210"
    assert [k for k, v in c["cpus"].items() if v["online"]] == ["cpu0", "cpu1"]
    assert all(v["min"] == v["max"] for v in c["cpus"].values())
    assert c["locked"] is False


def test_tegrastats_orin_nano_and_old_nano() -> None:
    t = parse_tegrastats(_read("tegrastats_orin_nano.txt"))
    assert t is not None
    assert (t["ram_used_mb"], t["ram_total_mb"]) == (2272, 7620)
    assert t["cpu"][1] == {"load": 0, "mhz": 1036} and len(t["cpu"]) == 6
    assert t["gpu_load"] == 0
    assert t["temps_c"]["tj"] == pytest.approx(56.656)
    assert t["power_mw"] == {"VDD_IN": 4673, "VDD_CPU_GPU_CV": 527, "VDD_SOC": 1339}
    old = parse_tegrastats(_read("tegrastats_nano_jp4.txt"))
    assert old is not None
    assert old["cpu"][1] is None and old["cpu"][0] == {"load": 3, "mhz": 345}  # "off" cores
    assert old["temps_c"]["GPU"] == 50.0 and old["power_mw"] == {}


def _fake_tools(bin_dir: Path, clocks_fixture: str) -> None:
    bin_dir.mkdir()
    tools = {
        "nvpmodel": f"cat '{FIX / 'nvpmodel_thor_maxn.txt'}'",
        "jetson_clocks": f"cat '{FIX / clocks_fixture}'",
        "tegrastats": f"cat '{FIX / 'tegrastats_orin_nano.txt'}'; exec sleep 30",
    }
    for name, body in tools.items():
        p = bin_dir / name
        p.write_text(f"#!/bin/sh\n{body}\n")
        p.chmod(p.stat().st_mode | stat.S_IXUSR)


def test_jetson_state_runs_the_tools_and_warns_when_unlocked(tmp_path: Path, monkeypatch) -> None:
    _fake_tools(tmp_path / "bin", "jetson_clocks_orin_unlocked.txt")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    state = jetson_state(FIX / "nv_tegra_release_r36.4.0.txt")
    assert state is not None
    assert state["release"]["jetpack"] == "6.1"
    assert state["power_mode"] == {"mode": "MAXN", "id": 0}
    assert state["clocks_locked"] is False
    assert state["tegrastats"]["power_mw"]["VDD_IN"] == 4673
    msg = clock_warning(state)
    assert msg is not None and "not locked" in msg and "MAXN" in msg and "jetson_clocks" in msg


def test_jetson_state_locked_and_off_jetson(tmp_path: Path, monkeypatch) -> None:
    _fake_tools(tmp_path / "bin", "jetson_clocks_orin_locked.txt")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    state = jetson_state(FIX / "nv_tegra_release_r36.4.0.txt")
    assert state is not None and state["clocks_locked"] is True and clock_warning(state) is None
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert jetson_state(tmp_path / "no_release") is None  # not a Jetson: nothing, no warning
    assert clock_warning(None) is None


def test_doctor_jetson_table_and_bench_host(tmp_path: Path, monkeypatch) -> None:
    """doctor's rows and bench's host record come from the same state."""
    from edgecv.bench.core import _host_info
    from edgecv.cli.doctor import jetson_rows

    _fake_tools(tmp_path / "bin", "jetson_clocks_orin_unlocked.txt")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    monkeypatch.setattr("edgecv.jetson.NV_TEGRA_RELEASE", FIX / "nv_tegra_release_r36.4.0.txt")
    monkeypatch.setattr(jetson_state, "__defaults__", (FIX / "nv_tegra_release_r36.4.0.txt",))
    host = _host_info(None)
    assert host["jetson"]["power_mode"]["mode"] == "MAXN" and host["jetson"]["clocks_locked"] is False
    rows = {r[0]: r[1] for r in jetson_rows(host["jetson"])}
    assert rows["JetPack"] == "6.1" and rows["power mode (nvpmodel -q)"] == "MAXN (id 0)"
    assert rows["clocks (jetson_clocks --show)"].startswith("not locked, GPU 115 MHz (max 1300)")
    assert "VDD_IN 4673 mW" in rows["tegrastats"]


def test_cli_bench_records_jetson_state_and_warns(cli, bundle_dir: Path, tmp_path: Path) -> None:
    """On a (fake) Jetson with unlocked clocks: bench's JSON has host.jetson and stderr has the warning."""
    import json
    import os

    pytest.importorskip("onnxruntime")
    _fake_tools(tmp_path / "bin", "jetson_clocks_orin_unlocked.txt")
    env = {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    proc = cli(
        "bench",
        str(bundle_dir),
        "-b",
        "onnxruntime",
        "--iters",
        "3",
        "--warmup",
        "1",
        "--rounds",
        "1",
        "--no-stages",
        "--json",
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    host = json.loads(proc.stdout)["host"]
    assert host["jetson"]["power_mode"] == {"mode": "MAXN", "id": 0}
    assert host["jetson"]["clocks_locked"] is False and host["jetson"]["tegrastats"]["ram_total_mb"] == 7620
    assert "Jetson clocks are not locked (power mode MAXN)" in proc.stderr
    _fake_tools(tmp_path / "bin2", "jetson_clocks_orin_locked.txt")
    proc = cli(
        "bench",
        str(bundle_dir),
        "-b",
        "onnxruntime",
        "--iters",
        "3",
        "--warmup",
        "1",
        "--rounds",
        "1",
        "--no-stages",
        "--json",
        env={"PATH": f"{tmp_path / 'bin2'}:{os.environ['PATH']}"},
    )
    assert proc.returncode == 0 and "not locked" not in proc.stderr
    assert json.loads(proc.stdout)["host"]["jetson"]["clocks_locked"] is True
