"""Jetson power and clock state: parsers for ``nvpmodel -q``, ``jetson_clocks --show``, ``/etc/nv_tegra_release``
and one ``tegrastats`` line, and :func:`jetson_state`, which runs what exists on this machine.

A benchmark on a Jetson means little without its power mode and whether ``jetson_clocks`` locked the clocks:
the same engine can run at half speed in a 15 W mode with dynamic frequency scaling. ``edgecv doctor`` prints
this state, ``edgecv bench`` records it in its JSON and warns when the clocks are not locked.

No third-party imports: this runs on the device (JetPack's Python 3.10) beside the TensorRT runner.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

NV_TEGRA_RELEASE = Path("/etc/nv_tegra_release")

# L4T release → JetPack (NVIDIA's JetPack archive; 36.4.0 = 6.1 and 36.4.3 = 6.2, 39.2 = 7.2 per jetson_stats#881)
_JETPACK = {
    "35.1": "5.0.2",
    "35.2": "5.1",
    "35.3": "5.1.1",
    "35.4": "5.1.2",
    "35.5": "5.1.3",
    "35.6": "5.1.4",
    "36.2": "6.0 DP",
    "36.3": "6.0",
    "36.4.0": "6.1",
    "36.4": "6.2",
    "38.2": "7.0",
    "39.2": "7.2",
}


def parse_nv_tegra_release(text: str) -> dict[str, Any] | None:
    """``# R36 (release), REVISION: 4.0, GCID: …, BOARD: generic, …`` → ``{"l4t": "36.4.0", "jetpack": …}``."""
    m = re.search(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    if not m:
        return None
    major, revision = m.group(1), m.group(2)
    parts = revision.split(".")
    l4t = ".".join([major, *parts])
    board = re.search(r"BOARD:\s*([^,\s]+)", text)
    jetpack = _JETPACK.get(l4t) or _JETPACK.get(f"{major}.{parts[0]}")
    return {"l4t": l4t, "jetpack": jetpack, "board": board.group(1) if board else None}


def parse_nvpmodel(text: str) -> dict[str, Any] | None:
    """``nvpmodel -q``: ``NV Power Mode: MAXN`` then the mode id on the next line (NVPM ERROR lines ignored)."""
    m = re.search(r"NV Power Mode:\s*(\S+)", text)
    if not m:
        return None
    rest = text[m.end() :].splitlines()
    mode_id = next((int(line.strip()) for line in rest if line.strip().isdigit()), None)
    return {"mode": m.group(1), "id": mode_id}


def parse_jetson_clocks(text: str) -> dict[str, Any] | None:
    """``jetson_clocks --show`` → CPU/GPU/EMC min/max/current frequencies and whether the clocks are locked.

    ``jetson_clocks`` locks a clock by raising its minimum to its maximum; the clocks count as locked when every
    online CPU and the GPU have ``MinFreq == MaxFreq`` (``EMC FreqOverride=1`` where the line has it).
    """
    if "MinFreq=" not in text and "NV Power Mode" not in text:
        return None
    cpus: dict[str, dict[str, Any]] = {}
    clocks: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        line = line.strip()
        m = re.match(
            r"(cpu\d+):\s*Online=(\d)\s+Governor=(\S+)\s+MinFreq=(\d+)\s+MaxFreq=(\d+)\s+CurrentFreq=(\d+)", line
        )
        if m:
            cpus[m.group(1)] = {
                "online": m.group(2) == "1",
                "governor": m.group(3),
                "min": int(m.group(4)),
                "max": int(m.group(5)),
                "cur": int(m.group(6)),
            }
            continue
        m = re.match(
            r"([A-Z][A-Z0-9_]*)\s+MinFreq=(\d+)\s+MaxFreq=(\d+)\s+CurrentFreq=(\d+)(?:\s+FreqOverride=(\d))?", line
        )
        if m:
            entry = {"min": int(m.group(2)), "max": int(m.group(3)), "cur": int(m.group(4))}
            if m.group(5) is not None:
                entry["override"] = int(m.group(5))
            clocks[m.group(1)] = entry
    soc = re.search(r"SOC family:\s*(\S+)", text)
    machine = re.search(r"Machine:\s*(.+)", text)
    power = re.search(r"NV Power Mode:\s*(\S+)", text)
    online = [c for c in cpus.values() if c["online"]]
    gpu = clocks.get("GPU")
    emc = clocks.get("EMC")
    locked = (
        bool(online)
        and gpu is not None
        and all(c["min"] == c["max"] for c in online)
        and gpu["min"] == gpu["max"]
        and (emc is None or emc.get("override", 1) == 1)
    )
    return {
        "soc": soc.group(1) if soc else None,
        "machine": machine.group(1).strip() if machine else None,
        "power_mode": power.group(1) if power else None,
        "cpus": cpus,
        "clocks": clocks,
        "locked": locked,
    }


def parse_tegrastats(line: str) -> dict[str, Any] | None:
    """One ``tegrastats`` line → RAM, per-CPU load/frequency, GPU load, temperatures and power rails (mW)."""
    ram = re.search(r"RAM (\d+)/(\d+)MB", line)
    if not ram:
        return None
    out: dict[str, Any] = {"ram_used_mb": int(ram.group(1)), "ram_total_mb": int(ram.group(2))}
    cpu = re.search(r"CPU \[([^\]]*)\]", line)
    if cpu:
        cores = []
        for item in cpu.group(1).split(","):
            m = re.match(r"(\d+)%@(\d+)", item.strip())
            cores.append({"load": int(m.group(1)), "mhz": int(m.group(2))} if m else None)
        out["cpu"] = cores
    gpu = re.search(r"GR3D_FREQ (\d+)%(?:@\[?(\d+))?", line)
    if gpu:
        out["gpu_load"] = int(gpu.group(1))
        if gpu.group(2):
            out["gpu_mhz"] = int(gpu.group(2))
    out["temps_c"] = {k: float(v) for k, v in re.findall(r"\b([A-Za-z][\w]*)@(-?[\d.]+)C\b", line)}
    out["power_mw"] = {k: int(cur) for k, cur, _ in re.findall(r"\b(V[A-Z0-9_]+) (\d+)mW/(\d+)mW", line)}
    return out


def _run(cmd: list[str], timeout: float = 5.0) -> str | None:
    exe = shutil.which(cmd[0])
    if exe is None:
        return None
    try:
        proc = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (proc.stdout or "") + (proc.stderr or "")


def _tegrastats_sample(timeout: float = 4.0) -> str | None:
    """The first line ``tegrastats`` prints (it runs until stopped; this one is stopped after one line)."""
    exe = shutil.which("tegrastats")
    if exe is None:
        return None
    try:
        proc = subprocess.Popen(
            [exe, "--interval", "500"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
    except OSError:
        return None
    try:
        import selectors

        sel = selectors.DefaultSelector()
        assert proc.stdout is not None
        sel.register(proc.stdout, selectors.EVENT_READ)
        if sel.select(timeout):
            return proc.stdout.readline().strip() or None
        return None
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()


def jetson_state(release_file: Path = NV_TEGRA_RELEASE) -> dict[str, Any] | None:
    """The Jetson's L4T release, power mode, clock state and one tegrastats sample; None off Jetson.

    Each part is None when its command is missing or its output does not parse (e.g. ``jetson_clocks --show``
    needs root on some releases); ``warnings`` says what could not be read.
    """
    try:
        release_text = release_file.read_text(errors="replace")
    except OSError:
        release_text = None
    if release_text is None and shutil.which("nvpmodel") is None:
        return None
    warnings: list[str] = []
    state: dict[str, Any] = {"release": parse_nv_tegra_release(release_text) if release_text else None}
    nvp = _run(["nvpmodel", "-q"])
    state["power_mode"] = parse_nvpmodel(nvp) if nvp else None
    clk = _run(["jetson_clocks", "--show"])
    state["clocks"] = parse_jetson_clocks(clk) if clk else None
    if state["clocks"] is None:
        warnings.append("jetson_clocks --show gave nothing readable (it needs root on some JetPack releases)")
    line = _tegrastats_sample()
    state["tegrastats"] = parse_tegrastats(line) if line else None
    state["clocks_locked"] = bool(state["clocks"] and state["clocks"]["locked"])
    state["warnings"] = warnings
    return state


def clock_warning(state: dict[str, Any] | None) -> str | None:
    """The warning bench prints when a Jetson's clocks are not locked (None when locked or not a Jetson)."""
    if not state or state.get("clocks_locked"):
        return None
    mode = (state.get("power_mode") or {}).get("mode") or "unknown"
    return (
        f"Jetson clocks are not locked (power mode {mode}): latencies include frequency scaling; run "
        "'sudo nvpmodel -m 0 && sudo jetson_clocks' first for repeatable numbers"
    )
