"""The installed package agrees with its metadata and with the files that ship with it:
one version (written in pygrad/_version.py only), the MIT license, a changelog entry."""
import importlib.metadata
import pathlib
import re

import pytest

import pygrad

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_version_is_the_installed_distributions():
    assert pygrad.__version__ == importlib.metadata.version("pygrad")


def test_installed_version_is_this_source_trees():
    # Tests run against the installed package: a stale install fails here, clearly.
    source = (ROOT / "pygrad" / "_version.py").read_text()
    assert re.search(r'^__version__ = "([^"]+)"$', source, re.M).group(1) == pygrad.__version__, \
        "the installed pygrad is not this tree's: run `make install`"


def test_pyproject_reads_the_version_from_pygrad():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in config["project"]
    assert config["project"]["dynamic"] == ["version"]
    version_from = config["tool"]["setuptools"]["dynamic"]["version"]
    assert version_from == {"attr": "pygrad._version.__version__"}


def test_changelog_has_this_version():
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog
    heading = rf"^## \[{re.escape(pygrad.__version__)}\] - \d{{4}}-\d\d-\d\d$"
    assert re.search(heading, changelog, re.M), \
        f"CHANGELOG.md has no section for {pygrad.__version__}"


def test_license_is_mit_and_ships_with_the_package():
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License\n")
    assert "the pygrad authors" in license_text
    metadata = importlib.metadata.metadata("pygrad")
    assert metadata["License-Expression"] == "MIT"
    shipped = [f for f in importlib.metadata.distribution("pygrad").files if f.name == "LICENSE"]
    assert len(shipped) == 1, "the installed distribution has no LICENSE file"
    assert shipped[0].read_text() == license_text
