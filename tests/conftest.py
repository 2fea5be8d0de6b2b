import gc
import pathlib

import pytest

import pygrad

SOURCE_TREE = pathlib.Path(__file__).resolve().parent.parent / "pygrad"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: minutes, not seconds (make test runs them, "
                                       "make check does not)")


def pytest_collection_finish(session):
    # What the test files imported lives for the whole run: keep it out of the
    # collector's full passes, which support.settle() makes a few hundred of.
    gc.freeze()


def pytest_report_header(config):
    return f"pygrad from {pathlib.Path(pygrad.__file__).parent}"


@pytest.fixture(autouse=True)
def _installed_pygrad():
    # Tests run against `pip install .`, never against the uncompiled source tree.
    assert pathlib.Path(pygrad.__file__).resolve().parent != SOURCE_TREE
