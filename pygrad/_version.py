# The one place the version is written: pyproject.toml reads it without importing
# pygrad (setuptools' attr: evaluates this assignment statically), pygrad re-exports it.
__version__ = "0.1.0"
