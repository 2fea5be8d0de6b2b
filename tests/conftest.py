import pathlib

import pygrad
import pytest

SOURCE_TREE = pathlib.Path(__file__).resolve().parent.parent / "pygrad"


def pytest_report_header(config):
    return f"pygrad from {pathlib.Path(pygrad.__file__).parent}"


@pytest.fixture(autouse=True)
def _installed_pygrad():
    # Tests run against `pip install .`, never against the uncompiled source tree.
    assert pathlib.Path(pygrad.__file__).resolve().parent != SOURCE_TREE
