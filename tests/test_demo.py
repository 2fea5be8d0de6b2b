"""The demo program and the benchmark run end to end (tiny sizes, no timing checks)."""
import pathlib
import struct
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_moons_demo_trains_and_writes_pngs(tmp_path):
    pytest.importorskip("matplotlib", reason="the demo needs matplotlib")
    pytest.importorskip("tqdm", reason="the demo needs tqdm")
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "moons.py"), "--steps", "3",
         "--micrograd-steps", "1", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "pygrad: 3 steps in" in result.stdout
    assert "micrograd:" in result.stdout and "faster" in result.stdout
    for name in ("moons_decision_boundary.png", "moons_loss.png"):
        width, height = png_size(tmp_path / name)
        assert width > 200 and height > 200


def test_bench_smoke_prints_a_ratio_for_every_engine(capsys):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import bench
    finally:
        sys.path.pop(0)
    rows = bench.main(["--smoke"])
    output = capsys.readouterr().out
    workloads = {workload for workload, _, _, _ in rows}
    tanh = {w for w in workloads if "act='tanh'" in w}  # micrograd 0.1.0 has no tanh
    assert {w for w, engine, _, _ in rows if engine == "micrograd"} == workloads - tanh
    assert [engine for w, engine, _, _ in rows if w in tanh] == list(bench.tanh_engines())
    assert all(value is None or value >= 0 for _, _, value, _ in rows)
    assert all(value > 0 for _, _, value, kind in rows if kind == "time" and value is not None)
    # micrograd's recursive backward fails deep; pygrad's does not
    deep = [(engine, value) for workload, engine, value, _ in rows
            if workload.startswith("deep chain, 10,000")]
    assert deep == [("micrograd", None), ("pygrad.Value", deep[1][1])] and deep[1][1] > 0
    assert output.count("| a * b |") == 2
    assert "pygrad Replay + optim.SGD" in output
    assert "`python bench/bench.py --smoke` on" in output
    assert "ratio is against the workload's first" in output
