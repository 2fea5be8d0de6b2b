"""The type stubs ship with the package, its typed examples run, and mypy rejects
what the runtime rejects.

`make lint` checks that the stubs agree with the runtime (mypy.stubtest) and that
typing_usage.py passes `mypy --strict`; these tests check the other direction: code
that is wrong must fail to type-check, each line with the error expected of it.
"""
import importlib.util
import pathlib
import re
import subprocess
import sys

import pytest

import pygrad

HERE = pathlib.Path(__file__).resolve().parent
PUBLIC_MODULES = ["__init__", "_core", "engine", "nn", "optim", "replay", "viz"]


def test_stubs_and_marker_are_installed():
    installed = pathlib.Path(pygrad.__file__).parent
    assert (installed / "py.typed").is_file(), "py.typed is not in the installed package"
    for module in PUBLIC_MODULES:
        assert (installed / f"{module}.pyi").is_file(), f"{module}.pyi is not installed"


def test_typed_examples_run():
    import typing_usage

    typing_usage.main()


# Each line ending in `# error: [code]` must draw that error from mypy, and no
# other line may draw any: wrong code is caught, right code is not.
NEGATIVE = '''
import pygrad
from pygrad import Value
from pygrad.nn import MLP, Neuron
from pygrad.optim import SGD
from pygrad.replay import Replay

v = Value(1.0)
ok: float = (v * 2 + 1).relu().data
Value("1.0")  # error: [arg-type]
Value(1j)  # error: [arg-type]
Value(None)  # error: [arg-type]
v + "a"  # error: [operator]
"a" * v  # error: [operator]
v.data = "x"  # error: [assignment]
v.grad = [1.0]  # error: [assignment]
v._prev = set()  # error: [misc]
n: int = v.data  # error: [assignment]
v.relu().softplus()  # error: [attr-defined]
v.backward(retain_graph=True)  # error: [call-arg]
v._backward = 42  # error: [assignment]
MLP(2, [16, 1], act="tanhh")  # error: [arg-type]
MLP(2, 16)  # error: [arg-type]
Neuron(3, activation="relu")  # error: [call-arg]
SGD([v])  # error: [call-arg]
SGD([1.0], lr=0.1)  # error: [list-item]
Replay(v, inputs=[1.0])  # error: [list-item]
Replay(v).feed(["1.0"])  # error: [list-item]
pygrad.set_node_limit("10")  # error: [arg-type]
total: Value = sum([Value(1.0), Value(2.0)])  # error: [assignment]
with pygrad.no_grad() as nothing:
    nothing.data  # error: [attr-defined]
'''


def expected_errors(source):
    expected = set()
    for number, line in enumerate(source.splitlines(), start=1):
        match = re.search(r"# error: \[([a-z-]+)\]$", line)
        if match:
            expected.add((number, match.group(1)))
    return expected


def test_mypy_rejects_wrong_uses(tmp_path):
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (make test-deps installs it)")
    snippet = tmp_path / "wrong_uses.py"
    snippet.write_text(NEGATIVE)
    # From tmp_path, so that mypy finds the installed package, not the source tree.
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--show-error-codes",
         "--no-pretty", "--cache-dir", str(tmp_path / "cache"), snippet.name],
        cwd=tmp_path, capture_output=True, text=True)
    got = set()
    for line in result.stdout.splitlines():
        match = re.match(r"wrong_uses\.py:(\d+): error: .*\[([a-z-]+)\]$", line)
        if match:
            got.add((int(match.group(1)), match.group(2)))
    assert result.returncode == 1, result.stdout + result.stderr
    assert got == expected_errors(NEGATIVE), result.stdout
