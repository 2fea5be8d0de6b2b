"""The demo program and the benchmark run end to end (tiny sizes, no timing checks)."""
import importlib.util
import pathlib
import re
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


def test_digits_example_trains_through_replay_and_writes_a_confusion_matrix(tmp_path):
    for module in ("sklearn", "matplotlib", "tqdm"):
        pytest.importorskip(module, reason="the digits example needs scikit-learn, "
                                           "matplotlib and tqdm")
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "digits.py"), "--epochs", "20",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    accuracy = re.search(r"held-out accuracy: ([\d.]+)% \((\d+) of 450\)", result.stdout)
    assert accuracy, result.stdout
    assert float(accuracy.group(1)) > 85  # 20 epochs: ~95%; chance is 10%
    width, height = png_size(tmp_path / "digits_confusion.png")
    assert width > 200 and height > 200


def test_bench_smoke_prints_a_ratio_for_every_engine(capsys):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import bench
    finally:
        sys.path.pop(0)
    rows = bench.main(["--smoke"])  # raises if the engines' losses disagree (1e-9 relative)
    output = capsys.readouterr().out
    engines = {}
    for workload, engine, _, _ in rows:
        engines.setdefault(workload, []).append(engine)
    # the dense workloads have no micrograd row (too slow there): their ratios are against torch
    dense = [w for w in engines if w.startswith(("digits step", "batch 20 step"))]
    assert len(dense) == (2 if importlib.util.find_spec("sklearn") else 1)
    tanh = {w for w in engines if "act='tanh'" in w}  # micrograd 0.1.0 has no tanh
    without_micrograd = set(dense) | tanh
    with_micrograd = {w for w, engine, _, _ in rows if engine == "micrograd"}
    assert with_micrograd == set(engines) - without_micrograd
    assert [engine for w, engine, _, _ in rows if w in tanh] == list(bench.tanh_engines())
    references = ["hand-written C (bench/dense_step.c)"]
    if importlib.util.find_spec("threadpoolctl"):
        references.append("numpy float64 batched (1 thread)")
    if importlib.util.find_spec("torch"):
        references.append("torch float64 batched (1 thread)")
    demo = next(w for w in engines if w.startswith("demo step"))
    for workload in [demo] + dense:
        assert set(references + ["pygrad Replay + optim.SGD"]) <= set(engines[workload]), workload
    if len(dense) == 2:
        assert "pygrad.nn + optim.SGD" in engines[dense[0]]
    assert "| workload | engine | measured | vs micrograd | vs torch float64 |" in output
    assert "losses of steps 0 and 1 agreed to 1e-9 relative" in output
    assert output.count("GFLOP/s") >= 1 and output.count("\n- ") == 1 + len(dense)
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
