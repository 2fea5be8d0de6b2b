"""Smoke test of an installed pygrad, with nothing but its own dependencies around it.

    python -I tests/sdist_smoke.py

`make sdist-check` runs it in a new virtual environment holding only the sdist's
install (not a pytest file: pytest is not there). -I keeps the source tree's
pygrad/ off sys.path; the check below makes sure.
"""
import importlib.metadata
import pathlib
import random
import sys

# after site-packages: support.py only
sys.path.append(str(pathlib.Path(__file__).resolve().parent))

import pygrad  # noqa: E402
from pygrad.nn import MLP  # noqa: E402

from support import readme_example  # noqa: E402


def check_installed():
    where = pathlib.Path(pygrad.__file__).resolve().parent
    assert where.parent.name == "site-packages", f"pygrad imported from {where}, not an install"
    extension = pathlib.Path(sys.modules["pygrad._pygrad_c"].__file__)
    assert extension.parent == where and extension.suffix == ".so", \
        f"the C core is {extension}, not an extension compiled into {where}"
    assert pygrad.__version__ == importlib.metadata.version("pygrad"), \
        (pygrad.__version__, importlib.metadata.version("pygrad"))
    typing_files = ["py.typed", "__init__.pyi", "engine.pyi", "nn.pyi"]
    assert all((where / name).is_file() for name in typing_files), \
        f"the install lacks its type information: {sorted(p.name for p in where.iterdir())}"
    return where


def check_readme_expression():
    nodes = readme_example(pygrad.Value)
    g, a, b = nodes["g"], nodes["a"], nodes["b"]
    g.backward()
    got = f"{g.data:.4f} {a.grad:.4f} {b.grad:.4f}"
    assert got == "24.7041 138.8338 645.5773", got
    return got


def check_one_training_step():
    random.seed(1337)
    model = MLP(2, [4, 1])
    xs = [[2.0, 3.0], [3.0, -1.0], [0.5, 1.0], [1.0, 1.0]]
    ys = [1.0, -1.0, -1.0, 1.0]

    def loss():
        return sum((model(x) - y) ** 2 for x, y in zip(xs, ys))

    before = loss()
    model.zero_grad()
    before.backward()
    assert any(p.grad != 0.0 for p in model.parameters()), "backward reached no parameter"
    for p in model.parameters():
        p.data -= 0.01 * p.grad
    after = loss()
    assert after.data < before.data, (before.data, after.data)
    return before.data, after.data


def main():
    where = check_installed()
    readme = check_readme_expression()
    before, after = check_one_training_step()
    print(f"sdist_smoke: pygrad {pygrad.__version__} from {where} "
          f"(Python {sys.version.split()[0]}): README expression {readme}; "
          f"MLP(2, [4, 1]) loss {before:.4f} -> {after:.4f} in one step")


if __name__ == "__main__":
    main()
